-- wrk script for `make bench` saturation runs: every request is a new SIA event (unique event_id and
-- zone, so no duplicate and no grouping) and done() prints one JSON line the benchmark reads.
-- Arguments after `--`: the body kind ("burglary") and the run id.

local thread_count = 0
local threads = {}

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local run_id = "run"
local counter = 0

function init(args)
  run_id = args[2] or run_id
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local account = string.format("bp-%02d", counter % 16)
  local body = string.format(
    '{"account": "%s", "code": "BA", "zone": "w%s-%d", "message": "Front door",'
      .. ' "occurred_at": "%s", "event_id": "%s-w%s-%d"}',
    account, tid, counter, os.date("!%Y-%m-%dT%H:%M:%SZ"), run_id, tid, counter)
  return wrk.format("POST", nil, nil, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d,'
      .. ' "status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p95": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
