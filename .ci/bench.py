"""`make bench`: alarm-bridge's ingest, signal-to-dispatch latency and queue isolation, in one run.

Phases (every one bounded in time, on a fresh database and a private Redis key prefix):

1. Ingest. A bare Flask app that only answers 202 (the ceiling) and alarm-bridge's `POST /v1/events`
   (bearer auth, validation, one PostgreSQL transaction, `send_task` to Redis), both served by
   gunicorn with config/gunicorn.conf.py: at saturation (wrk, closed loop) and at a fixed offered
   rate (open loop), repeated round-robin; medians. The Celery workers are not running during this
   phase (the messages wait in Redis): the figure is the web path's, not the machine's share left
   over by workers (`--ingest-with-workers` runs them too).
2. Signal -> first upstream request at 50 and 200 alarms/s: the whole stack (web, worker, urgent,
   beat, Redis, PostgreSQL, the sandbox in its own process). For each burglary alarm, from
   `events.received_at` (the ledger) to the TrackTik create the sandbox journaled for it (matched by
   the `alarm-bridge ref <idempotency key>` note). Both clocks are this machine's wall clock. The
   `alarm_bridge_signal_to_first_request_seconds` histogram of /metrics is the cross-check.
3. Storm: 2,000 trouble events queued on `bulk`, then fire alarms at 20/s; their signal -> first
   request (RapidSOS, the first step of plan "life") against the same alarms on an idle system.

Prints the table with the versions and the configuration, writes docs/benchmark.json and
docs/benchmark.md. `--quick` runs 5 s phases (a smoke run, not a result).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_load as load
import bench_report as report
import bench_stack as stk

REPO = stk.REPO
ALL = ("sandbox", "web", "worker", "urgent", "bulk", "beat")
TERMINAL = ("succeeded", "failed", "cancelled")
GOAL_INGEST_RATIO = 0.5  # the long-run goal
GOAL_INGEST_RATIO_NOW = 0.25  # issue 14's target
GOAL_INGEST_P99_MS = 25.0
GOAL_E2E_P50_MS = 15.0
GOAL_E2E_P99_MS = 50.0
GOAL_STORM_FACTOR = 2.0
GOAL_DOOR_FACTOR = 2.0  # a fire event's 2xx p99 while 2,000 troubles are posted, against idle (issue 14)
GOAL_LATENCY_FIRE_P99_MS = 100.0  # slow vendors: fire -> RapidSOS request (issue 13)
GOAL_LATENCY_BURGLARY_P99_MS = 250.0  # slow vendors: burglary -> TrackTik request
IDLE_SATURATED_MS = 1000.0  # an idle p99 above this means the idle system could not keep up


LEGEND = """Legend (latencies in ms):
- Ingest: `req/s` counts 2xx answers per second. Open-loop latencies run from each request's due
  time (no coordinated omission); a request never answered 2xx counts as ∞ and as `failed`.
  `server CPU ms/req`: CPU of the web process, its PostgreSQL backends and Redis per 2xx answer.
- Signal -> first request: from `events.received_at` to the first request the sandbox journaled for
  the alarm, over the `alarms` in the ledger; `unanswered`: events the sender got no 2xx for within
  its bound (the ledger may have committed them later); ∞: no request within the drain bound.
  `metric p99`: the /metrics histogram bucket (alarm_bridge_signal_to_first_request_seconds) that
  holds the p99, a cross-check. `ingest p99`: the HTTP answers to those events. `max queue`: the
  deepest the alarm's Celery queue got.
- CPU: `rest` = every other process on the machine (PostgreSQL's own processes, other work).
- INCONCLUSIVE: the idle baseline could not keep up with the rate itself (p99 over 1 s)."""


class Plan:
    """Durations and rates of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        quick = args.quick
        self.quick = quick
        self.ingest_s = 5.0 if quick else 15.0
        self.ingest_rate = args.ingest_rate
        self.ingest_connections = 32
        self.ingest_repeats = args.repeat if args.repeat else (1 if quick else 3)
        self.ingest_with_workers = args.ingest_with_workers
        self.e2e_rates = (50.0, 200.0)
        self.e2e_s = 5.0 if quick else 60.0
        self.e2e_drain_s = 30.0 if quick else 150.0
        self.storm_troubles = 400 if quick else 2000
        self.life_rate = args.life_rate
        self.life_s = 5.0 if quick else 30.0
        self.storm_drain_s = 60.0 if quick else 240.0
        self.warmup_alarms = 10 if quick else 20
        self.door_fire_rate = 20.0
        self.door_idle_s = 3.0 if quick else 10.0
        self.door_batch = 50
        self.latency_s = 5.0 if quick else 60.0
        self.latency_burglary_rate = 50.0
        self.latency_fire_rate = 10.0


# -- bodies ----------------------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def panel_event(account: str, code: str, tag: str, index: int, message: str) -> dict[str, str]:
    """A realistic SIA event; its zone and event id are its own, so it opens an alarm of its own."""
    return {
        "account": account,
        "code": code,
        "zone": f"{tag}-{index}",
        "message": message,
        "occurred_at": now_iso(),
        "event_id": f"{tag}-{index}",
    }


def bodies(tag: str, code: str = "BA", prefix: str = "bp", message: str = "Front door") -> load.BodyFactory:
    def make(index: int) -> bytes:
        return json.dumps(panel_event(f"{prefix}-{index % 16:02d}", code, tag, index, message)).encode()

    return make


def intake_target(stack: stk.Stack) -> load.Target:
    return load.Target(
        "127.0.0.1", stack.web_port, "/v1/events", {"Authorization": f"Bearer {stk.PANEL_TOKEN}"}
    )


# -- CPU -------------------------------------------------------------------------------------------


class CpuWindow:
    """CPU used by each of our processes, PostgreSQL's backends for our database, Redis, the load
    generator and the rest of the machine, between start() and stop(), as % of one core."""

    def __init__(self, stack: stk.Stack, services: stk.Services, redis_pid: int | None) -> None:
        self.stack, self.services, self.redis_pid = stack, services, redis_pid

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.ours0 = self.stack.cpu()
        ledger_users = ("web", "receiver")
        self.pg_pids = (
            self.services.backend_pids() if any(p in self.stack.procs for p in ledger_users) else []
        )
        self.pg0 = stk.pids_cpu_s(self.pg_pids)
        # Backends a pool opens and closes within the window (more requests in flight than pooled
        # connections) are caught at the end (still open) or by the postmaster's reaped-children CPU.
        self.postmaster = stk.parent_pid(self.pg_pids[0]) if self.pg_pids else None
        self.reaped0 = stk.reaped_children_cpu_s(self.postmaster) if self.postmaster else 0.0
        self.redis0 = stk.pids_cpu_s([self.redis_pid]) if self.redis_pid else {}
        self.gen0 = _own_cpu()
        self.machine0 = stk.machine_cpu()

    def stop(self) -> dict[str, float]:
        wall = self.wall = max(1e-6, time.monotonic() - self.t0)
        ours1 = self.stack.cpu()
        pg1 = stk.pids_cpu_s(self.pg_pids)
        opened = [p for p in self.services.backend_pids() if p not in self.pg0] if self.pg_pids else []
        opened_cpu = sum(stk.pids_cpu_s(opened).values())
        reaped = stk.reaped_children_cpu_s(self.postmaster) - self.reaped0 if self.postmaster else 0.0
        redis1 = stk.pids_cpu_s([self.redis_pid]) if self.redis_pid else {}
        gen = _own_cpu() - self.gen0
        busy = stk.machine_cpu()[0] - self.machine0[0]
        result = {name: 100 * (ours1[name] - self.ours0.get(name, 0.0)) / wall for name in ours1}
        result["generator"] = 100 * gen / wall
        kept = sum(pg1[p] - self.pg0[p] for p in pg1 if p in self.pg0)
        result["pg backends"] = 100 * (kept + opened_cpu + reaped) / wall
        if redis1:
            result["redis"] = 100 * sum(redis1[p] - self.redis0.get(p, redis1[p]) for p in redis1) / wall
        counted = sum(result.values())
        result["rest"] = max(0.0, 100 * busy / wall - counted)  # other processes: other users, PG's own
        result["machine"] = 100 * busy / wall
        return {k: round(v, 1) for k, v in result.items()}


def _own_cpu() -> float:
    me = os.times()
    return me.user + me.system + me.children_user + me.children_system


# -- phase 1: ingest -------------------------------------------------------------------------------


def ingest_phase(plan: Plan, services: stk.Services, run_dir: Path, redis_pid: int | None) -> dict[str, Any]:
    wrk = load.ensure_wrk()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        "ceiling": {"saturation": [], "fixed": []},
        "alarm_bridge": {"saturation": [], "fixed": []},
    }
    cpu: dict[str, dict[str, float]] = {}
    extra: dict[str, Any] = {
        "wrk": wrk or "not available: Python closed loop",
        "workers": "running" if plan.ingest_with_workers else "stopped",
        "handoff": [],
    }
    for rep in range(plan.ingest_repeats):
        for name in ("ceiling", "alarm_bridge"):
            tag = f"{services.run_id}-ing{rep}{name[0]}"
            if name == "ceiling":
                processes: tuple[str, ...] = ("web",)
                web_app: str | None = "bench_bare_app:app"
            else:
                processes = ALL if plan.ingest_with_workers else ("web",)
                web_app = None
            stack = stk.Stack(
                services,
                run_dir / f"ingest-{rep}-{name}",
                f"{services.prefix_root}{tag}:",
                processes,
                web_app,
            )
            print(f"bench: ingest {rep + 1}/{plan.ingest_repeats}: {name}", flush=True)
            with stk.running(stack):
                target = intake_target(stack)
                load.open_loop(target, 100, 2.0, bodies(f"{tag}-warm"))  # warm the workers and pools
                window = CpuWindow(stack, services, redis_pid)
                # Saturation first: a closed loop leaves nothing behind, while an open loop that
                # overloads the server leaves a backlog in its listen queue that the server keeps
                # working through after the run.
                window.start()
                if wrk:
                    sat = load.wrk(
                        wrk, target, plan.ingest_connections, 2, plan.ingest_s, "burglary", f"{tag}-sat"
                    )
                else:
                    sat = load.closed_loop(
                        target, plan.ingest_connections, plan.ingest_s, bodies(f"{tag}-sat")
                    )
                sat_cpu = cpu[f"ingest {name} saturation (run {rep + 1})"] = window.stop()
                sat_wall = window.wall
                time.sleep(1.0)
                window.start()
                fixed = load.open_loop(target, plan.ingest_rate, plan.ingest_s, bodies(f"{tag}-fix"))
                fixed_cpu = cpu[f"ingest {name} {plan.ingest_rate:g}/s (run {rep + 1})"] = window.stop()
                fixed_wall = window.wall
                if name == "alarm_bridge":
                    extra["handoff"].append(_handoff(services, stack, fixed.ok + sat.ok, plan))
            for mode, result, used, wall in (
                ("fixed", fixed, fixed_cpu, fixed_wall),
                ("saturation", sat, sat_cpu, sat_wall),
            ):
                summary = result.summary()
                # Contention on a shared machine stretches latencies more than CPU time: the CPU one
                # request costs the server (web + its PostgreSQL backends + Redis) is the steadier figure.
                server = sum(used.get(n, 0.0) for n in ("web", "pg backends", "redis")) / 100 * wall
                summary["server_cpu_ms_per_request"] = round(1000 * server / max(1, result.ok), 2)
                summary["label"] = (
                    f"{plan.ingest_rate:g}/s offered, {plan.ingest_s:g} s" if mode == "fixed" else result.tool
                )
                summary["failed"] = (
                    result.sent - result.ok if mode == "fixed" else sum(result.errors.values())
                )
                runs[name][mode].append(summary)
    return {**summarise_ingest(runs), "runs": runs, "cpu": cpu, **extra}


def summarise_ingest(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The median run of each target and load, and the ratios to the ceiling."""
    medians = {
        name: {mode: _median_run(r, mode) for mode, r in modes.items()} for name, modes in runs.items()
    }
    ratio = medians["alarm_bridge"]["saturation"]["throughput_rps"] / max(
        1.0, medians["ceiling"]["saturation"]["throughput_rps"]
    )
    # The same ratio from CPU cost per request (less sensitive to other work on the machine).
    cost_ratio = medians["ceiling"]["saturation"]["server_cpu_ms_per_request"] / max(
        0.001, medians["alarm_bridge"]["saturation"]["server_cpu_ms_per_request"]
    )
    return {
        **medians,
        "ratio_to_ceiling": round(ratio, 3),
        "cpu_cost_ratio_to_ceiling": round(cost_ratio, 3),
    }


def _handoff(services: stk.Services, stack: stk.Stack, accepted: int, plan: Plan) -> dict[str, Any]:
    """Proof that the full path ran: ledger rows and broker messages for the accepted events."""
    seeded = services.seeded
    counts = services.query(
        "SELECT (SELECT count(*) FROM events WHERE id > %s), (SELECT count(*) FROM alarms WHERE id > %s), "
        "(SELECT count(*) FROM actions WHERE kind = 'tracktik.create_alarm' AND id > %s)",
        (seeded["events"], seeded["alarms"], seeded["actions"]),
    )[0]
    return {
        "accepted_measured": accepted,
        "events_rows": counts[0],
        "alarms_rows": counts[1],
        "actions_rows": counts[2],
        "messages_waiting_in_default_queue": services.queue_depth(stack.prefix, "default"),
        "workers_running": plan.ingest_with_workers,
    }


def _median_run(runs: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The median run (saturation: by throughput; a fixed rate: by p99, the rate being the same), and
    the spread of all runs."""

    def p99(run: dict[str, Any]) -> float:
        value = run["latency_ms"].get("p99")
        return math.inf if value is None else float(value)

    if mode == "fixed":
        ordered = sorted(runs, key=lambda r: (p99(r), -r["throughput_rps"]))
    else:
        ordered = sorted(runs, key=lambda r: r["throughput_rps"])
    chosen = {
        k: v for k, v in ordered[(len(ordered) - 1) // 2].items() if k not in ("spread", "p99_ms_of_runs")
    }
    if len(runs) > 1:
        chosen["spread"] = "/".join(f"{r['throughput_rps']:.0f}" for r in runs) + " req/s"
        if mode == "fixed":
            chosen["spread"] = "p99 " + "/".join(report.ms(p99(r)) for r in runs) + " ms"
        chosen["p99_ms_of_runs"] = [r["latency_ms"].get("p99") for r in runs]
    return chosen


# -- the door: a fire event's answer while a storm of troubles is posted ------------------------------


def batch_bodies(tag: str, size: int) -> load.BodyFactory:
    """Batches of ``size`` troubles (SIA BT) over the property site's accounts."""

    def make(index: int) -> bytes:
        first = index * size
        events = [
            panel_event(f"bp-{i % 16:02d}", "BT", tag, i, "Trouble") for i in range(first, first + size)
        ]
        return json.dumps({"events": events}).encode()

    return make


def door_phase(plan: Plan, services: stk.Services, run_dir: Path, redis_pid: int | None) -> dict[str, Any]:
    """Fire events posted at a fixed rate, idle and while ``plan.storm_troubles`` troubles are posted
    as fast as 32 single-event and 4 batch connections go (half each): each fire's 2xx latency.

    Web only, as for ingest (the messages wait in Redis): this is the door, not the workers. It runs
    with the deployed configuration and again with the gate off (WEB_INTAKE_CONCURRENCY=0), so the
    gate's effect is measured in the same run.
    """
    out: dict[str, Any] = {"fire_rate": plan.door_fire_rate, "troubles": plan.storm_troubles, "runs": {}}
    cpu: dict[str, dict[str, float]] = {}
    singles = plan.storm_troubles // 2
    batches = (plan.storm_troubles - singles) // plan.door_batch
    for label, extra in (("gate on", {}), ("gate off", {"WEB_INTAKE_CONCURRENCY": "0"})):
        tag = f"{services.run_id}-door{label[-2:].strip()}"
        stack = stk.Stack(
            services,
            run_dir / f"door-{label.replace(' ', '-')}",
            f"{services.prefix_root}{tag}:",
            ("web",),
            extra_env=extra,
        )
        print(f"bench: door ({label})", flush=True)
        with stk.running(stack):
            target = intake_target(stack)
            batch_target = load.Target(target.host, target.port, "/v1/events:batch", target.headers)
            load.open_loop(target, 100, 2.0, bodies(f"{tag}-warm"))
            fire = bodies(f"{tag}-fi", "FA", "bl", "Smoke detector")
            window = CpuWindow(stack, services, redis_pid)
            window.start()
            idle = load.open_loop(target, plan.door_fire_rate, plan.door_idle_s, fire)
            cpu[f"door idle ({label})"] = window.stop()
            streams = [
                load.Stream(target, 32, singles, bodies(f"{tag}-ts", "BT", "bp", "Trouble")),
                load.Stream(batch_target, 4, batches, batch_bodies(f"{tag}-tb", plan.door_batch)),
            ]
            window.start()
            busy, storm = load.probe_during(
                target, plan.door_fire_rate, bodies(f"{tag}-fs", "FA", "bl", "Smoke detector"), streams
            )
            cpu[f"door storm ({label})"] = window.stop()
            counts = services.query(
                "SELECT count(*) FILTER (WHERE code = 'BT'), count(*) FILTER (WHERE code = 'FA') FROM events "
                "WHERE id > %s",
                (services.seeded["events"],),
            )[0]
        out["runs"][label] = {
            "idle": idle.summary(),
            "storm": busy.summary(),
            "streams": storm,
            "troubles_recorded": counts[0],
            "fires_recorded": counts[1],
        }
    return {**out, "cpu": cpu}


# -- DC-09: frames a panel sends to the receiver, beside HTTP intake ------------------------------------


def dc09_frames(tag: int) -> load.BodyFactory:
    """Plain SIA-DCS burglary frames (BA) over the 16 accounts of site bench-dc09, each zone its own."""
    from app.receiver.frames import build_frame

    def make(index: int) -> bytes:
        zone = f"{(tag * 7919 + index) % 10000:04d}"
        return build_frame(f"D00{index % 16:X}", "BA", zone, sequence=index % 10000)

    return make


def dc09_phase(plan: Plan, services: stk.Services, run_dir: Path, redis_pid: int | None) -> dict[str, Any]:
    """The Procfile's `receiver` alone (the messages wait in Redis, as for ingest): 32 TCP connections
    each sending a frame and waiting for its ACK (sent after the commit), for ``plan.ingest_s``."""
    tag = f"{services.run_id}-dc09"
    stack = stk.Stack(services, run_dir / "dc09", f"{services.prefix_root}{tag}:", ("receiver",))
    print("bench: DC-09 receiver", flush=True)
    with stk.running(stack):
        load.dc09_closed_loop("127.0.0.1", stack.receiver_port, 4, 2.0, dc09_frames(1))  # warm up
        window = CpuWindow(stack, services, redis_pid)
        window.start()
        result = load.dc09_closed_loop(
            "127.0.0.1", stack.receiver_port, plan.ingest_connections, plan.ingest_s, dc09_frames(2)
        )
        used = window.stop()
        counts = services.query(
            "SELECT (SELECT count(*) FROM events WHERE id > %s), (SELECT count(*) FROM alarms WHERE id > %s)",
            (services.seeded["events"], services.seeded["alarms"]),
        )[0]
    summary = result.summary()
    server = sum(used.get(n, 0.0) for n in ("receiver", "pg backends", "redis")) / 100 * window.wall
    summary["server_cpu_ms_per_frame"] = round(1000 * server / max(1, result.ok), 2)
    return {
        "frames": summary,
        "events_rows": counts[0],
        "alarms_rows": counts[1],
        "cpu": {"dc09 receiver saturation": used},
    }


# -- phases 2 and 3: signal -> first upstream request ------------------------------------------------------


class QueueSampler:
    """Depth of some broker queues twice a second, in a thread, while a phase runs."""

    def __init__(self, services: stk.Services, prefix: str, queues: tuple[str, ...]) -> None:
        self.services, self.prefix, self.queues = services, prefix, queues
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            depths = {q: self.services.queue_depth(self.prefix, q) for q in self.queues}
            self.samples.append((round(time.monotonic() - t0, 2), depths))
            self._stop.wait(0.5)

    def __enter__(self) -> QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def max_depth(self, queue: str) -> int:
        return max((d[queue] for _, d in self.samples), default=0)


def warm_up(stack: stk.Stack, plan: Plan, tag: str, kinds: list[tuple[str, str]]) -> int:
    """A few alarms of each kind through the whole stack (tokens, pools, imports); returns the last
    alarm id, the measured alarms come after it."""
    target = intake_target(stack)
    for code, prefix in kinds:
        load.open_loop(target, 10, plan.warmup_alarms / 10, bodies(f"{tag}-warm-{code}", code, prefix))
    wait_drained(stack.services, 0, 60)
    return int(stack.services.query("SELECT coalesce(max(id), 0) FROM alarms")[0][0])


def wait_drained(services: stk.Services, after_alarm: int, timeout_s: float) -> bool:
    def drained() -> bool:
        rows = services.query(
            "SELECT count(*) FROM actions WHERE alarm_id > %s "
            "AND state NOT IN ('succeeded', 'failed', 'cancelled')",
            (after_alarm,),
        )
        return rows[0][0] == 0

    try:
        stk.wait_until(drained, timeout_s, interval_s=0.5, what="the workers to finish")
    except TimeoutError:
        return False
    return True


def first_requests(
    stack: stk.Stack, after_alarm: int, code: str, kind: str
) -> tuple[list[float], dict[str, Any]]:
    """Per measured alarm opened by ``code``: seconds from the event's arrival to the first request the
    sandbox journaled for it (``kind``'s create); ``inf`` when none came."""
    rows = stack.services.query(
        """
        SELECT a.id, min(e.received_at), act.idempotency_key, act.state, act.attempts
        FROM alarms a
        JOIN events e ON e.alarm_id = a.id
        JOIN actions act ON act.alarm_id = a.id AND act.kind = %s
        WHERE a.id > %s AND a.code = %s
        GROUP BY a.id, act.idempotency_key, act.state, act.attempts
        """,
        (kind, after_alarm, code),
    )
    first: dict[str, datetime] = {}
    creates: dict[str, int] = {}
    if kind == "tracktik.create_alarm":
        for entry in stack.journal("tracktik", "/rest/v1/alarms"):
            notes = (entry.get("body") or {}).get("notes") or [{}]
            comment = str(notes[0].get("comment", ""))
            if comment.startswith("alarm-bridge ref "):
                key = comment.removeprefix("alarm-bridge ref ")
                at = datetime.fromisoformat(entry["at"])
                first[key] = min(first.get(key, at), at)
                creates[key] = creates.get(key, 0) + 1
        key_of = {row[0]: row[2] for row in rows}
    else:  # rapidsos.create_alert: source_id "alarm-bridge-<alarm id>"
        for entry in stack.journal("rapidsos", "/v1/alerts"):
            try:
                source_id = entry["body"]["variables"]["event"]["source_id"]
            except (KeyError, TypeError):
                continue
            at = datetime.fromisoformat(entry["at"])
            first[source_id] = min(first.get(source_id, at), at)
            creates[source_id] = creates.get(source_id, 0) + 1
        key_of = {row[0]: f"alarm-bridge-{row[0]}" for row in rows}
    latencies = []
    by_alarm: dict[int, float] = {}
    states: dict[str, int] = {}
    for alarm_id, received_at, _key, state, _attempts in rows:
        states[state] = states.get(state, 0) + 1
        at = first.get(key_of[alarm_id])
        by_alarm[alarm_id] = (at - received_at).total_seconds() if at else math.inf
        latencies.append(by_alarm[alarm_id])
    more_than_once = sum(1 for alarm_id in key_of if creates.get(key_of[alarm_id], 0) > 1)
    return latencies, {
        "action_states": states,
        "created_more_than_once": more_than_once,
        "by_alarm": by_alarm,
    }


HIST = re.compile(
    r'^alarm_bridge_signal_to_first_request_seconds_bucket\{le="([^"]+)",target="(\w+)"\} (\S+)$', re.M
)


def histogram(text: str, target: str) -> dict[float, float]:
    return {float(le): float(v) for le, t, v in HIST.findall(text) if t == target}


def metric_quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[int, str]:
    """The count and the bucket holding quantile ``q`` of what was observed between two scrapes."""
    buckets = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not buckets:
        return 0, "—"
    count = buckets[-1][1]
    for le, cumulative in buckets:
        if count and cumulative >= q * count:
            return int(count), ("> 300 s" if math.isinf(le) else f"≤ {le * 1000:g} ms")
    return int(count), "—"


def latency_summary(latencies: list[float]) -> dict[str, Any]:
    figures = load.percentiles(latencies)
    return {k: round(v * 1000, 2) for k, v in figures.items()}  # inf: never reached (JSON null)


def signal_run(
    plan: Plan,
    services: stk.Services,
    run_dir: Path,
    redis_pid: int | None,
    name: str,
    rate: float,
    duration_s: float,
    *,
    code: str,
    prefix: str,
    first_kind: str,
    metric_target: str,
    queue: str,
    troubles: int = 0,
) -> tuple[dict[str, Any], dict[str, float]]:
    tag = f"{services.run_id}-{name}"
    stack = stk.Stack(services, run_dir / name, f"{services.prefix_root}{name}:", ALL)
    print(f"bench: {name}: {rate:g} alarms/s for {duration_s:g} s", flush=True)
    with stk.running(stack):
        kinds = [(code, prefix)] + ([("BT", "bp")] if troubles else [])
        last_warm = warm_up(stack, plan, tag, kinds)
        before = histogram(stack.metrics(), metric_target)
        storm: dict[str, Any] = {}
        with QueueSampler(services, stack.prefix, ("default", "bulk", "life_safety")) as sampler:
            if troubles:
                # "2,000 troubles queued, then fire alarms" (issue 13): the `bulk` worker is held still
                # while they are posted, so all of them wait in the bulk queue when the fire alarms
                # start (as when a power cut's signals land faster than the workers take them); it goes
                # on as the fire alarms start, and drains them beside the urgent worker.
                with stk.paused(stack.procs["bulk"]):
                    storm = _queue_troubles(stack, tag, troubles)
            window = CpuWindow(stack, services, redis_pid)
            whole = CpuWindow(stack, services, redis_pid)  # the load and the drain after it
            whole.start()
            commits0 = _commits(services)
            window.start()
            result = load.open_loop(
                intake_target(stack), rate, duration_s, bodies(f"{tag}-m", code, prefix, "Measured")
            )
            cpu = window.stop()
            if troubles:
                storm["bulk_depth_at_end_of_alarms"] = services.queue_depth(stack.prefix, "bulk")
            drain_start = time.monotonic()
            drained = wait_drained(services, last_warm, plan.storm_drain_s if troubles else plan.e2e_drain_s)
            drain_s = time.monotonic() - drain_start
            whole_cpu = whole.stop()
            time.sleep(1.5)  # PostgreSQL publishes a backend's counters within a second of its commits
            commits = _commits(services) - commits0
        latencies, detail = first_requests(stack, last_warm, code, first_kind)
        detail.pop("by_alarm")
        after = histogram(stack.metrics(), metric_target)
        count, metric_p99 = metric_quantile(before, after, 0.99)
        _, metric_p50 = metric_quantile(before, after, 0.50)
        if troubles:
            bulk = [(t, d["bulk"]) for t, d in sampler.samples]
            emptied = next((t for t, depth in bulk if t > storm["queued_in_s"] and depth == 0), None)
            storm["bulk_queue_emptied_after_s"] = emptied
            storm["bulk_max_depth"] = sampler.max_depth("bulk")
    figures = {
        "offered_rate": rate,
        "duration_s": duration_s,
        "alarms": len(latencies),
        "reached": sum(1 for v in latencies if not math.isinf(v)),
        "latency_ms": latency_summary(latencies),
        "first_request": first_kind,
        "metric_count": count,
        "metric_p50": metric_p50,
        "metric_p99": metric_p99,
        "ingest": result.summary(),
        "ingest_latency_ms": result.summary()["latency_ms"],
        "max_queue_depth": sampler.max_depth(queue),
        "queue": queue,
        "drained": drained,
        "drain_s": round(drain_s, 1),
        **detail,
        **({"storm": storm} if storm else {}),
    }
    done = sum(n for state, n in detail["action_states"].items() if state in TERMINAL)
    if not troubles and done:
        figures["cost_per_alarm"] = _cost(whole_cpu, whole.wall, len(latencies), done, commits)
    return figures, cpu


# -- phase 4: vendor latency ------------------------------------------------------------------------

# What real vendors take to answer a create (issue 13): the sandbox's `delay_s` fault on each.
VENDOR_DELAYS = (
    ("tracktik", "POST", "/rest/v1/alarms", 0.5),
    ("cad", "PUT", "/api/v1/external/incident", 0.5),
    ("rapidsos", "POST", "/v1/alerts", 2.0),
)


def latency_run(
    plan: Plan, services: stk.Services, run_dir: Path, redis_pid: int | None, *, slow: bool
) -> tuple[dict[str, Any], dict[str, float]]:
    """Burglary and fire alarms offered together, with the vendors slow (``slow``) or at loopback
    speed: signal -> first TrackTik request per burglary, first RapidSOS request per fire."""
    name = "latency-slow" if slow else "latency-loopback"
    tag = f"{services.run_id}-{name}"
    stack = stk.Stack(services, run_dir / name, f"{services.prefix_root}{name}:", ALL)
    rates = {"BA": plan.latency_burglary_rate, "FA": plan.latency_fire_rate}
    print(f"bench: {name}: {rates['BA']:g} burglary + {rates['FA']:g} fire alarms/s for {plan.latency_s:g} s",
          flush=True)  # fmt: skip
    with stk.running(stack):
        last_warm = warm_up(stack, plan, tag, [("BA", "bp"), ("FA", "bl")])
        if slow:
            for vendor, method, path, delay in VENDOR_DELAYS:
                answer = stk.HTTP.post(
                    f"{stack.sandbox_url}/{vendor}/_sandbox/faults",
                    json={"method": method, "path": path, "delay_s": delay, "count": 10_000_000},
                    timeout=10,
                )
                answer.raise_for_status()
        window = CpuWindow(stack, services, redis_pid)
        window.start()
        results: dict[str, load.LoadResult] = {}

        def offer(code: str, prefix: str) -> None:
            results[code] = load.open_loop(
                intake_target(stack), rates[code], plan.latency_s, bodies(f"{tag}-m{code}", code, prefix)
            )

        loads = [threading.Thread(target=offer, args=args) for args in (("BA", "bp"), ("FA", "bl"))]
        for thread in loads:
            thread.start()
        for thread in loads:
            thread.join()
        cpu = window.stop()
        drain_start = time.monotonic()
        drained = wait_drained(services, last_warm, plan.e2e_drain_s)
        drain_s = time.monotonic() - drain_start
        burglary, burglary_detail = first_requests(stack, last_warm, "BA", "tracktik.create_alarm")
        fire, fire_detail = first_requests(stack, last_warm, "FA", "rapidsos.create_alert")
        _, guard_detail = first_requests(stack, last_warm, "FA", "tracktik.create_alarm")
    to_911, to_guard = fire_detail.pop("by_alarm"), guard_detail.pop("by_alarm")
    burglary_detail.pop("by_alarm")
    figures = {
        "vendors": "slow: " + ", ".join(f"{v} {d:g} s" for v, _, _, d in VENDOR_DELAYS)
        if slow
        else "loopback",
        "duration_s": plan.latency_s,
        "rates": rates,
        "burglary_to_tracktik": _reach(burglary),
        "fire_to_rapidsos": _reach(fire),
        # The 911 request leaves first: RapidSOS's first request no later than the guard's, per alarm.
        "fire_rapidsos_first": sum(1 for a, t in to_911.items() if t <= to_guard.get(a, math.inf)),
        "fire_alarms": len(fire),
        "drained": drained,
        "drain_s": round(drain_s, 1),
        "ingest_ok": {code: result.ok for code, result in results.items()},
        "created_more_than_once": burglary_detail["created_more_than_once"]
        + fire_detail["created_more_than_once"],
    }
    return figures, cpu


def _reach(latencies: list[float]) -> dict[str, Any]:
    return {
        "alarms": len(latencies),
        "unreached": sum(1 for v in latencies if math.isinf(v)),
        "latency_ms": latency_summary(latencies),
    }


BRIDGE = ("web", "worker", "urgent", "bulk", "beat", "pg backends", "redis")


def _cost(cpu: dict[str, float], wall_s: float, received: int, done: int, commits: int) -> dict[str, Any]:
    """CPU time the deployment spent per alarm over the load and the drain: the web's per alarm
    received, the rest per alarm whose step finished. The rate that CPU allows on this machine's
    cores is the ceiling whatever the latency."""
    by = {n: 1000 * cpu.get(n, 0.0) / 100 * wall_s / (received if n == "web" else done) for n in BRIDGE}
    bridge_ms = sum(by.values())
    sandbox_ms = 1000 * cpu.get("sandbox", 0.0) / 100 * wall_s / done
    cores = os.cpu_count() or 1
    return {
        "bridge_cpu_ms": round(bridge_ms, 2),
        "by_process_ms": {n: round(v, 2) for n, v in by.items()},
        "sandbox_cpu_ms": round(sandbox_ms, 2),
        "cpu_bound_alarms_per_s_here": round(cores * 1000 / max(0.01, bridge_ms + sandbox_ms), 1),
        "ledger_commits_per_alarm": round(commits / done, 2),
        "alarms_received": received,
        "alarms_done": done,
    }


def _commits(services: stk.Services) -> int:
    with services.admin() as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (stk.DB_NAME,)
        ).fetchone()
    return int(row[0]) if row else 0


def _queue_troubles(stack: stk.Stack, tag: str, count: int) -> dict[str, Any]:
    """Post ``count`` trouble events (SIA BT, queue bulk) through the batch endpoint, 500 a request."""
    started = time.monotonic()
    accepted = 0
    headers = {"Authorization": f"Bearer {stk.PANEL_TOKEN}"}
    with requests.Session() as http:
        for first in range(0, count, 500):
            events = [
                panel_event(f"bp-{i % 16:02d}", "BT", f"{tag}-storm", i, "Trouble")
                for i in range(first, min(count, first + 500))
            ]
            response = http.post(
                f"{stack.web_url}/v1/events:batch", json={"events": events}, headers=headers, timeout=120
            )
            response.raise_for_status()
            accepted += sum(1 for r in response.json()["results"] if r["status"] == 202)
    return {
        "troubles_accepted": accepted,
        "queued_in_s": round(time.monotonic() - started, 2),
        "bulk_depth_when_alarms_start": stack.services.queue_depth(stack.prefix, "bulk"),
    }


# -- facts -----------------------------------------------------------------------------------------


def versions(services: stk.Services, wrk: str | None) -> dict[str, Any]:
    facts = services.server_facts()
    packages = (
        "flask",
        "werkzeug",
        "gunicorn",
        "celery",
        "kombu",
        "redis",
        "sqlalchemy",
        "psycopg",
        "marshmallow",
    )
    cpu_model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.machine(),
    )
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout or out.stderr).split("\n", 1)[0].strip()
    return {
        "python": platform.python_version(),
        **{name: importlib.metadata.version(name) for name in packages},
        "postgresql": facts["postgresql"]["server_version"],
        "redis": facts["redis"]["redis_version"],
        "wrk": wrk_version or "not installed",
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "load_average_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def configuration(services: stk.Services, plan: Plan) -> dict[str, Any]:
    facts = services.server_facts()
    # Read as the web processes read it (their SECRET_KEY included: the file refuses to load without one).
    saved = os.environ.get("SECRET_KEY")
    os.environ["SECRET_KEY"] = stk.BENCH_SECRET_KEY
    try:
        gunicorn = runpy.run_path(str(REPO / "config" / "gunicorn.conf.py"))
    finally:
        if saved is None:
            os.environ.pop("SECRET_KEY", None)
        else:
            os.environ["SECRET_KEY"] = saved
    from config.celery import celery_config
    from config.settings import read_settings

    settings = read_settings()
    celery = celery_config(settings)
    pg = facts["postgresql"]
    return {
        "gunicorn": (
            f"{gunicorn['workers']} workers, worker class {gunicorn['worker_class'].rsplit('.', 1)[-1]} "
            f"({gunicorn['worker_connections']} connections; threads {gunicorn['threads']} for gthread), "
            f"keepalive and read timeout {gunicorn['keepalive']} s, "
            f"timeout {gunicorn['timeout']} s, preload_app {gunicorn['preload_app']}"
        ),
        "celery": (
            "worker (default), urgent (life_safety,dispatch) and bulk (bulk): thread pools, "
            "WORKER_CONCURRENCY, URGENT_CONCURRENCY and BULK_CONCURRENCY "
            f"({settings.worker_concurrency}, {settings.urgent_concurrency} and "
            f"{settings.bulk_concurrency}), "
            f"troubles yield to life-safety at {settings.bulk_yield_rate}/s for {settings.bulk_yield_s:g} s, "
            f"pool {settings.worker_pool}, prefetch {celery['worker_prefetch_multiplier']}, "
            f"acks_late {celery['task_acks_late']}"
        ),
        "dispatcher": f"beat every {settings.dispatch_interval_s:g} s",
        "postgresql": (
            f"fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}, "
            f"wal_sync_method={pg['wal_sync_method']}, full_page_writes={pg['full_page_writes']}, "
            f"shared_buffers={pg['shared_buffers']}"
        ),
        "ledger": (
            f"seeded: every phase starts from a month of history ({services.seeded['events']:,} events, "
            f"{services.seeded['alarms']:,} alarms, {services.seeded['actions']:,} actions; "
            ".ci/bench_seed.sql), VACUUM ANALYZE"
            if services.ledger == "seeded"
            else "empty: a new, never-analysed database (BENCH_LEDGER=empty)"
        ),
        "redis": f"appendonly={'yes' if facts['redis']['redis_aof_enabled'] else 'no'} "
        "(the broker only; the ledger is the source of truth)",
        "logging": f"LOG_LEVEL={os.environ.get('LOG_LEVEL', 'INFO')}, json, to files",
        "ingest workers": "running" if plan.ingest_with_workers else "stopped (messages wait in Redis)",
        "sandbox": (
            "own process ("
            + (
                "werkzeug, threaded, a connection per call"
                if services.sandbox_server == "werkzeug"
                else "gunicorn gthread, connections kept alive"
            )
            + "); journal unbounded; TrackTik, RapidSOS rate limits off"
        ),
        "load generator": "Python asyncio open loop (fixed rates), wrk (saturation), on this machine",
    }


# -- main ------------------------------------------------------------------------------------------


def goal(text: str, measured: str, passed: bool, verdict: str | None = None) -> dict[str, Any]:
    return {
        "goal": text,
        "measured": measured,
        "passed": passed,
        "verdict": verdict or ("PASS" if passed else "FAIL"),
    }


def goals(result: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    out = []
    ingest = result.get("ingest")
    if ingest:
        ratio = ingest["ratio_to_ceiling"]
        fixed = ingest["alarm_bridge"]["fixed"]
        p99 = fixed["latency_ms"].get("p99")
        for target in (GOAL_INGEST_RATIO_NOW, GOAL_INGEST_RATIO):
            out.append(
                goal(
                    f"ingest >= {target:.0%} of the bare ceiling (saturation)",
                    f"{ratio:.1%}",
                    ratio >= target,
                )
            )
        out.append(
            goal(
                f"ingest p99 <= {GOAL_INGEST_P99_MS:g} ms at {plan.ingest_rate:g} events/s offered",
                f"{report.ms(p99)} ms ({fixed['throughput_rps']:.0f} req/s answered 2xx)",
                p99 is not None and p99 <= GOAL_INGEST_P99_MS,
            )
        )
    door = result.get("door")
    if door:
        gated = door["runs"]["gate on"]
        idle, busy = gated["idle"]["latency_ms"].get("p99"), gated["storm"]["latency_ms"].get("p99")
        factor = busy / idle if idle and busy is not None else math.inf
        out.append(
            goal(
                f"fire 2xx p99 while {door['troubles']} troubles are posted <= {GOAL_DOOR_FACTOR:g}x idle",
                f"{report.ms(busy)} ms vs {report.ms(idle)} ms idle ({factor:.2f}x)",
                factor <= GOAL_DOOR_FACTOR,
            )
        )
    e2e = result.get("signal", {}).get("200/s")
    if e2e:
        p50, p99 = e2e["latency_ms"].get("p50"), e2e["latency_ms"].get("p99")
        reached = f"{e2e['reached']}/{e2e['alarms']} reached"
        out.append(
            goal(
                f"signal -> first request p50 <= {GOAL_E2E_P50_MS:g} ms at 200 alarms/s",
                f"{report.ms(p50)} ms ({reached})",
                p50 is not None and p50 <= GOAL_E2E_P50_MS,
            )
        )
        out.append(
            goal(
                f"signal -> first request p99 <= {GOAL_E2E_P99_MS:g} ms at 200 alarms/s",
                f"{report.ms(p99)} ms",
                p99 is not None and p99 <= GOAL_E2E_P99_MS,
            )
        )
    slow = result.get("latency", {}).get("slow vendors")
    if slow:
        for label, key, target in (
            ("fire -> RapidSOS request", "fire_to_rapidsos", GOAL_LATENCY_FIRE_P99_MS),
            ("burglary -> TrackTik request", "burglary_to_tracktik", GOAL_LATENCY_BURGLARY_P99_MS),
        ):
            figures = slow[key]
            p99 = figures["latency_ms"].get("p99")
            out.append(
                goal(
                    f"slow vendors: {label} p99 <= {target:g} ms, none unreached",
                    f"{report.ms(p99)} ms ({figures['unreached']} of {figures['alarms']} unreached)",
                    p99 is not None and p99 <= target and figures["unreached"] == 0,
                )
            )
    storm = result.get("storm")
    if storm and "idle" in storm and "storm" in storm:
        idle, busy = storm["idle"]["latency_ms"].get("p99"), storm["storm"]["latency_ms"].get("p99")
        factor = busy / idle if idle and busy is not None else math.inf
        # When the idle baseline is itself saturated (its queue grew all along), both figures measure
        # the urgent worker's backlog, not the storm's effect: the comparison says nothing. Nor does it
        # when the troubles were no longer queued as the fire alarms started.
        saturated = idle is None or idle > IDLE_SATURATED_MS
        queued = storm["storm"].get("storm", {}).get("bulk_depth_when_alarms_start", 0)
        overlapped = queued >= plan.storm_troubles // 2
        why = " — the idle baseline is saturated" if saturated else ""
        why += "" if overlapped else f" — only {queued} troubles were queued as the fire alarms started"
        out.append(
            goal(
                f"life-safety p99 during the storm <= {GOAL_STORM_FACTOR:g}x idle",
                f"{report.ms(busy)} ms vs {report.ms(idle)} ms idle ({factor:.2f}x){why}",
                factor <= GOAL_STORM_FACTOR and not saturated and overlapped,
                "INCONCLUSIVE" if saturated or not overlapped else None,
            )
        )
    return out


def render(result: dict[str, Any]) -> str:
    quick = " (--quick: a smoke run, not a result)" if result["quick"] else ""
    parts = [f"alarm-bridge benchmark, {result['finished_at']}{quick}", f"command: {result['command']}", ""]
    ingest = result.get("ingest")
    if ingest:
        runs = len(ingest["runs"]["ceiling"]["fixed"])
        parts += [
            f"## Ingest (median of {runs} round-robin run(s); alarm-bridge / ceiling at saturation: "
            f"{ingest['ratio_to_ceiling']:.3f}; workers {ingest['workers']})",
            "",
            report.ingest_table(ingest),
            "",
            f"By CPU cost per request at saturation, alarm-bridge's ingest is "
            f"{ingest['cpu_cost_ratio_to_ceiling']:.3f} of the ceiling's "
            f"({ingest['alarm_bridge']['saturation']['server_cpu_ms_per_request']:.2f} ms against "
            f"{ingest['ceiling']['saturation']['server_cpu_ms_per_request']:.2f} ms).",
            "",
        ]
    dc09 = result.get("dc09")
    if dc09:
        frames = dc09["frames"]
        lat = frames["latency_ms"]
        http = (ingest or {}).get("alarm_bridge", {}).get("saturation")
        beside = (
            f"; HTTP `POST /v1/events` in this run: {http['throughput_rps']:.0f} req/s at "
            f"{http['server_cpu_ms_per_request']:.2f} ms of server CPU each"
            if http
            else ""
        )
        parts += [
            "## DC-09 receiver (the `receiver` process alone; 32 TCP connections, each waiting for its ACK)",
            "",
            f"{frames['throughput_rps']:.0f} frames/s ACKed after commit ({frames['ok']} of "
            f"{frames['sent']}; answers {frames['statuses']}), p50 {report.ms(lat.get('p50'))} ms, "
            f"p99 {report.ms(lat.get('p99'))} ms; {frames['server_cpu_ms_per_frame']:.2f} ms of server "
            "CPU (receiver, PostgreSQL backends, "
            f"Redis) per frame; {dc09['events_rows']} events and {dc09['alarms_rows']} alarms in the "
            f"ledger{beside}.",
            "",
        ]
    door = result.get("door")
    if door:
        parts += [
            f"## The door: fire events at {door['fire_rate']:g}/s, idle and while {door['troubles']} "
            "troubles are posted (32 single-event and 4 batch connections; web only)",
            "",
            report.door_table(door),
            "",
        ]
    signal_result = result.get("signal")
    if signal_result:
        rows = [(f"{k} for {v['duration_s']:g} s", v) for k, v in signal_result.items()]
        parts += [
            "## Signal -> first upstream request (TrackTik create of a burglary alarm)",
            "",
            report.latency_table(rows),
            "",
            "CPU spent per alarm by the whole deployment (load and drain; PostgreSQL backends of the bench "
            "database and Redis included; commits approximate):",
            "",
            report.cost_table(rows),
            "",
        ]
    latency = result.get("latency")
    if latency:
        parts += [
            "## Vendor latency: burglary and fire alarms offered together",
            "",
            "| vendors | alarms/s | burglary -> TrackTik p50 / p95 / p99 / max ms (unreached) | "
            "fire -> RapidSOS p50 / p95 / p99 / max ms (unreached) | 911 first | drained after |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for figures in latency.values():
            cells = []
            for key in ("burglary_to_tracktik", "fire_to_rapidsos"):
                ms = figures[key]["latency_ms"]
                cells.append(
                    " / ".join(report.ms(ms.get(p)) for p in ("p50", "p95", "p99", "max"))
                    + f" ({figures[key]['unreached']})"
                )
            parts.append(
                f"| {figures['vendors']} | {figures['rates']['BA']:g} + {figures['rates']['FA']:g} for "
                f"{figures['duration_s']:g} s | {cells[0]} | {cells[1]} | "
                f"{figures['fire_rapidsos_first']}/{figures['fire_alarms']} | {figures['drain_s']} s |"
            )
        parts.append("")
    storm = result.get("storm")
    if storm:
        rows = [(f"{name}: fire {figures['offered_rate']:g}/s", figures) for name, figures in storm.items()]
        parts += [
            '## Storm: life-safety signal -> first request (RapidSOS create, plan "life")',
            "",
            report.latency_table(rows),
            "",
            "CPU per fire alarm on the idle system (three steps: RapidSOS, TrackTik, CAD):",
            "",
            report.cost_table(rows),
            "",
        ]
        s = storm.get("storm", {}).get("storm")
        if s:
            parts += [
                f"storm: {s['troubles_accepted']} troubles accepted in {s['queued_in_s']} s; bulk queue "
                f"{s['bulk_depth_when_alarms_start']} deep when the fire alarms started, "
                f"{s['bulk_depth_at_end_of_alarms']} when they ended, empty after "
                f"{s['bulk_queue_emptied_after_s']} s",
                "",
            ]
    parts += ["## Goals", "", report.goals_table(result["goals"]), ""]
    parts += ["## CPU during each load window (% of one core)", "", report.cpu_table(result["cpu"]), ""]
    rest = [figures.get("rest", 0.0) for figures in result["cpu"].values()]
    if rest:
        parts += [
            f"Other processes (not this benchmark's) used {statistics.mean(rest):.0f} % of one "
            f"core on average during the load windows (at most {max(rest):.0f} %); load average "
            f"{result['versions']['load_average_at_start']} at the start, {result['load_average_at_end']} "
            "at the end.",
            "",
        ]
    parts += [LEGEND, ""]
    parts += ["## Versions", "", report.facts_table(result["versions"]), ""]
    parts += ["## Configuration", "", report.facts_table(result["configuration"]), ""]
    return "\n".join(parts)


def _to_json(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so the same cleanup runs."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a process started in the background by a shell inherits SIGINT as ignored.
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def rerender(args: argparse.Namespace) -> int:
    """Write the tables again from a saved result (medians and goals recomputed by this code)."""
    result = json.loads(Path(args.from_json).read_text())
    plan = Plan(args)
    if "ingest" in result:
        plan.ingest_rate = result["ingest"]["alarm_bridge"]["fixed"]["offered_rate"]
        result["ingest"].update(summarise_ingest(result["ingest"]["runs"]))
    _inf_back(result)
    result["goals"] = goals(result, plan)
    write(result, args)
    return 0


def _inf_back(value: Any) -> None:
    """Saved JSON holds null for an infinite latency; put ∞ back where a latency is expected."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("latency_ms") and isinstance(item, dict):
                value[key] = {k: math.inf if v is None else v for k, v in item.items()}
            else:
                _inf_back(item)
    elif isinstance(value, list):
        for item in value:
            _inf_back(item)


def write(result: dict[str, Any], args: argparse.Namespace) -> None:
    text = render(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_to_json(result), indent=2, ensure_ascii=False) + "\n")
    Path(args.markdown).write_text(
        "# Benchmark: last result\n\n"
        "Written by `.ci/bench.py` (`make bench`); README.md's Performance section explains each figure.\n\n"
        + text
        + "\n"
    )
    print("\n" + text, flush=True)
    print(f"bench: wrote {out} and {args.markdown}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.from_json:
        return rerender(args)
    plan = Plan(args)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    run_id = uuid.uuid4().hex[:8]
    run_dir = Path(tempfile.mkdtemp(prefix=f"alarm-bridge-bench-{run_id}-"))
    services = stk.Services(run_id)
    print(f"bench: run {run_id}, logs in {run_dir}", flush=True)
    started = time.monotonic()
    result: dict[str, Any] = {
        "command": "make bench" + (" BENCH_ARGS='" + " ".join(sys.argv[1:]) + "'" if sys.argv[1:] else ""),
        "quick": plan.quick,
        "run_id": run_id,
        "cpu": {},
    }
    phases = set(args.phases.split(","))
    try:
        services.prepare_template(run_dir / "migrate.log")
        facts = services.server_facts()
        redis_pid = facts["redis"].get("redis_pid")
        result["versions"] = versions(
            services, load.ensure_wrk() if "ingest" in phases else shutil.which("wrk")
        )
        result["configuration"] = configuration(services, plan)
        if "ingest" in phases:
            ingest = ingest_phase(plan, services, run_dir, redis_pid)
            result["cpu"].update(ingest.pop("cpu"))
            result["ingest"] = ingest
        if "dc09" in phases:
            dc09 = dc09_phase(plan, services, run_dir, redis_pid)
            result["cpu"].update(dc09.pop("cpu"))
            result["dc09"] = dc09
        if "door" in phases:
            door = door_phase(plan, services, run_dir, redis_pid)
            result["cpu"].update(door.pop("cpu"))
            result["door"] = door
        if "signal" in phases:
            result["signal"] = {}
            for rate in plan.e2e_rates:
                key = f"{rate:g}/s"
                figures, cpu = signal_run(
                    plan,
                    services,
                    run_dir,
                    redis_pid,
                    f"signal-{rate:g}",
                    rate,
                    plan.e2e_s,
                    code="BA",
                    prefix="bp",
                    first_kind="tracktik.create_alarm",
                    metric_target="tracktik",
                    queue="default",
                )
                result["signal"][key] = figures
                result["cpu"][f"signal {key}"] = cpu
        if "latency" in phases:
            result["latency"] = {}
            for slow in (True, False):
                figures, cpu = latency_run(plan, services, run_dir, redis_pid, slow=slow)
                key = "slow vendors" if slow else "loopback"
                result["latency"][key] = figures
                result["cpu"][f"latency {key}"] = cpu
        if "storm" in phases:
            result["storm"] = {}
            for name, troubles in (("idle", 0), ("storm", plan.storm_troubles)):
                figures, cpu = signal_run(
                    plan,
                    services,
                    run_dir,
                    redis_pid,
                    f"life-{name}",
                    plan.life_rate,
                    plan.life_s,
                    code="FA",
                    prefix="bl",
                    first_kind="rapidsos.create_alert",
                    metric_target="rapidsos",
                    queue="life_safety",
                    troubles=troubles,
                )
                result["storm"][name] = figures
                result["cpu"][f"life-safety {name}"] = cpu
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr, flush=True)
        return 130
    finally:
        services.delete_keys(services.prefix_root)
        if args.keep:
            print(f"bench: kept database {stk.DB_NAME} and {run_dir}", flush=True)
        else:
            with contextlib.suppress(Exception):
                services.drop_databases()
            shutil.rmtree(run_dir, ignore_errors=True)
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["load_average_at_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    result["goals"] = goals(result, plan)
    write(result, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="alarm-bridge benchmark (make bench)")
    parser.add_argument("--quick", action="store_true", help="5 s phases: a smoke run, not a result")
    parser.add_argument(
        "--out", default="docs/benchmark.json", help="JSON result (default docs/benchmark.json)"
    )
    parser.add_argument(
        "--markdown", default="docs/benchmark.md", help="Markdown table (default docs/benchmark.md)"
    )
    parser.add_argument(
        "--phases",
        default="ingest,dc09,door,signal,latency,storm",
        help="comma-separated subset of ingest,dc09,door,signal,latency,storm",
    )
    parser.add_argument("--repeat", type=int, default=0, help="ingest repetitions (default 3, --quick 1)")
    parser.add_argument(
        "--ingest-rate", type=float, default=500.0, help="fixed offered ingest rate (default 500/s)"
    )
    parser.add_argument(
        "--ingest-with-workers", action="store_true", help="run the workers during ingest too"
    )
    parser.add_argument(
        "--life-rate", type=float, default=20.0, help="fire alarms/s of the storm (default 20)"
    )
    parser.add_argument("--from-json", help="only write the tables again from a saved result (no run)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database and the logs")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    with interruptible():
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
