"""The Prometheus metrics every alarm-bridge process records, in one place.

Counters and histograms live in the process that observes them (a gunicorn worker, a Celery child).
With ``PROMETHEUS_MULTIPROC_DIR`` set, as the entry points do (``use_multiprocess_metrics``), each
process writes its samples to files in that directory and ``/metrics`` adds them up, so the figures
are right however many gunicorn workers and Celery processes run on the host. Gauges that describe
the whole deployment (open alarms, actions by state, queue depth) are not counted here at all: they
are read from the ledger and the broker at scrape time (app/web/metrics.py).

Labels are bounded sets (vendors, families, queue names, status codes); never an id.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from app.adapters import prometheus

# Seconds. Fine at the low end, where the latency goals sit (15 ms, 50 ms), and up to the minutes a
# delayed step may wait.
LATENCY_BUCKETS = (
    0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
)  # fmt: skip
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

EVENTS_RECEIVED = Counter(
    "alarm_bridge_events_received",
    "Signals received, by source and outcome (accepted, duplicate, rejected) and rejection reason",
    ["source", "outcome", "reason"],
)
ALARMS_OPENED = Counter("alarm_bridge_alarms_opened", "Alarms opened", ["family", "priority"])
SIGNAL_TO_FIRST_REQUEST = Histogram(
    "alarm_bridge_signal_to_first_request_seconds",
    "From the signal's arrival to the first request an alarm makes to each upstream",
    ["target"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_CALLS = Histogram(
    "alarm_bridge_upstream_request_seconds",
    "Upstream calls by vendor, method and status (a code, or 'error' when no answer came)",
    ["upstream", "method", "status"],
    buckets=CALL_BUCKETS,
)
ACTIONS_FINISHED = Counter(
    "alarm_bridge_actions_finished", "Actions that reached an end state", ["kind", "state"]
)
RETRIES = Counter(
    "alarm_bridge_action_retries",
    "Attempts that will be tried again, by reason (unavailable, outcome_unknown, time_limit, internal)",
    ["kind", "reason"],
)
DEAD_LETTERS = Counter(
    "alarm_bridge_dead_letters", "Actions that failed for good (the dead-letter view)", ["kind"]
)
RATE_LIMIT_WAITS = Counter(
    "alarm_bridge_rate_limit_waits",
    "Waits imposed by an upstream's rate limit (429) or the shared CallOnAlarm budget",
    ["upstream", "cause"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "alarm_bridge_rate_limit_wait_seconds", "Seconds of those waits", ["upstream", "cause"]
)
BULK_YIELD_SECONDS = Counter(
    "alarm_bridge_bulk_yield_seconds",
    "Seconds bulk steps (troubles) waited for life-safety steps (BULK_YIELD_RATE, BULK_YIELD_S)",
)
LEDGER_WRITES = Histogram(
    "alarm_bridge_ledger_write_seconds",
    "Ledger transactions, from begin to commit, by operation",
    ["operation"],
    buckets=WRITE_BUCKETS,
)
HTTP_REQUESTS = Histogram(
    "alarm_bridge_http_request_seconds",
    "Requests the web process answered, by route and status",
    ["route", "method", "status"],
    buckets=CALL_BUCKETS,
)
WATCHDOG_RAISED = Counter(
    "alarm_bridge_watchdog_raised", "Alarms the watchdog raised to a person, by reason", ["reason"]
)
WATCHDOG_LAST_RUN = Gauge(
    "alarm_bridge_watchdog_last_run_timestamp_seconds",
    "When the watchdog last finished a check (Unix time)",
    multiprocess_mode="max",
)
INTAKE_GATE_WAITING = Gauge(
    "alarm_bridge_intake_gate_waiting",
    "Events waiting for a write slot in the web processes (life-safety events never wait)",
    multiprocess_mode="livesum",
)
SUPERVISION_TROUBLES = Counter(
    "alarm_bridge_supervision_troubles",
    "Trouble alarms opened because a supervised account missed a deadline, by kind (link, test)",
    ["kind"],
)
SUPERVISION_RESTORED = Counter(
    "alarm_bridge_supervision_restored",
    "Supervision troubles the account's next message restored, by kind (link, test)",
    ["kind"],
)
DC09_FRAMES = Counter(
    "alarm_bridge_dc09_frames",
    "SIA DC-09 frames the receiver answered, by answer (ack, nak, duh; none: the sender left first) "
    "and frame type (SIA-DCS, ADM-CID, NULL, unreadable; unsupported: any other ID token)",
    ["response", "frame"],
)
DC09_CONNECTIONS_REFUSED = Counter(
    "alarm_bridge_dc09_connections_refused",
    "TCP connections the receiver closed at once: SIA_RECEIVER_MAX_CONNECTIONS were already open",
)
DC09_CONNECTIONS_EVICTED = Counter(
    "alarm_bridge_dc09_connections_evicted",
    "Idle TCP connections the receiver closed at SIA_RECEIVER_MAX_CONNECTIONS to make room for an "
    "address holding fewer (one address cannot hold every slot)",
)
DC09_REFUSALS = Counter(
    "alarm_bridge_dc09_refusals",
    "DC-09 frames refused (answered NAK, but an unreadable datagram, which is not answered), by reason "
    "(unknown_account, bad_crc, decrypt_failed, timestamp, ...)",
    ["reason"],
)
DC09_DECRYPT_FAILURES = Counter(
    "alarm_bridge_dc09_decrypt_failures",
    "Encrypted DC-09 frames that did not decrypt with their account's key, or decrypted to another "
    "account's data, by dc09 source",
    ["source"],
)

_directory: str | None = None  # set by use_multiprocess_metrics


def count_recorded(source_key: str, *, duplicate: bool, opened: tuple[str, str] | None) -> None:
    """One event recorded, or recognised as a duplicate, at any door (HTTP or DC-09), and the alarm
    (family, priority) it opened: the same series whichever door it came through."""
    EVENTS_RECEIVED.labels(source_key, "duplicate" if duplicate else "accepted", "").inc()
    if opened is not None:
        ALARMS_OPENED.labels(*opened).inc()


def use_multiprocess_metrics(directory: str, *, fresh: bool = False) -> None:
    """Make this process (and its children) record metrics in ``directory``.

    Call it from an entry point before any sample is recorded. ``fresh`` empties the directory first:
    only a supervisor that starts every process of the host may do that (``alarm-bridge dev``);
    emptying it under running processes would lose their counts.
    """
    path = Path(directory)
    if fresh and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    global _directory
    _directory = str(path.resolve())
    # Every metric this module declares (a list by hand forgets the newest one, which then counts
    # in this process's memory only and never reaches /metrics).
    prometheus.switch_to_files(
        _directory, [m for m in globals().values() if isinstance(m, MetricWrapperBase)]
    )


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside
    """Serve this host's samples on ``port`` (a worker host with no web process to scrape)."""
    registry = CollectorRegistry()
    prometheus.collect_files(registry, _directory)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:  # another worker process of this host serves them already
        structlog.get_logger(__name__).warning("metrics.port_in_use", port=port, error=str(exc))


def multiprocess_dir() -> str | None:
    """The directory samples are shared through, when this process uses one."""
    return _directory
