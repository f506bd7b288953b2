"""Prometheus ``/metrics``: counters and histograms from every process of the host, plus the state of
the ledger and the broker read at scrape time (at most once per ``METRICS_CACHE_S`` per process).

Counters and histograms (app/telemetry.py) are summed over the files every gunicorn worker and Celery
process writes when multiprocess mode is on, which the entry points switch on. Gauges that describe
the deployment — open alarms by family, priority and routing, alarms waiting for a person, live
actions by state, overdue steps, supervised accounts in trouble, the depth of each Celery queue — are
computed from the ledger and Redis, so they are right whatever runs where. A read covers live rows
only (through indexes that lead with the state): history is counted by counters, never re-counted per
scrape, so its cost stays flat however long the ledger has been running. Each process keeps what it
read for ``METRICS_CACHE_S``: however many scrapers ask at once, a process reads the ledger and Redis
once per interval. With ``METRICS_TOKEN`` set, a scrape must carry it as a bearer token. Request
metrics and intake rejections are recorded here, around every request.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import redis
import structlog
from flask import Blueprint, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from app import telemetry
from app.adapters import kombu_redis, prometheus
from app.ledger import queries
from app.ledger.enums import LIVE_ACTION_STATES
from app.ledger.models import utcnow
from app.web.auth import bearer_token, matches_any
from app.web.errors import ApiError
from app.web.services import services
from config.celery import QUEUES
from config.settings import Settings

bp = Blueprint("metrics", __name__)
log = structlog.get_logger(__name__)
BROKER_TIMEOUT_S = 0.5


class LedgerCollector(Collector):
    """Reads the ledger on each scrape."""

    def __init__(self, sessions: sessionmaker[Session], overdue_after: timedelta) -> None:
        self._sessions = sessions
        self._overdue_after = overdue_after

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        open_alarms = GaugeMetricFamily(
            "alarm_bridge_open_alarms", "Alarms not yet ended", labels=["family", "priority", "routed"]
        )
        unrouted = GaugeMetricFamily("alarm_bridge_unrouted_open_alarms", "Open alarms no site claims")
        needs_person = GaugeMetricFamily("alarm_bridge_alarms_needing_person", "Alarms waiting for a person")
        actions = GaugeMetricFamily(
            "alarm_bridge_actions",
            "Live actions by state (pending, queued, running); finished ones are counted by "
            "alarm_bridge_actions_finished_total",
            labels=["state"],
        )
        archived = CounterMetricFamily(
            "alarm_bridge_ledger_archived",
            "Rows `alarm-bridge ledger archive` exported and removed, by kind",
            labels=["kind"],
        )
        last_archive = GaugeMetricFamily(
            "alarm_bridge_ledger_last_archive_timestamp_seconds",
            "When `alarm-bridge ledger archive` last finished (Unix time; 0: never)",
        )
        overdue = GaugeMetricFamily(
            "alarm_bridge_overdue_actions",
            "Steps past their due time by more than the watchdog's grace, not yet running",
        )
        oldest = GaugeMetricFamily(
            "alarm_bridge_oldest_open_alarm_age_seconds", "Age of the oldest alarm not yet ended"
        )
        in_trouble = GaugeMetricFamily(
            "alarm_bridge_supervised_accounts_in_trouble",
            "Supervised accounts with an open outage (a trouble alarm not yet restored), by kind "
            "(link: silent past link_supervision; test: no automatic test within test_interval + grace)",
            labels=["kind"],
        )
        now = utcnow()
        with self._sessions() as session:
            rows = queries.open_alarm_counts(session)
            flagged = queries.alarms_needing_person(session)
            counts = queries.live_action_counts(session)
            late = queries.overdue_action_count(session, due_before=now - self._overdue_after)
            first_opened = queries.oldest_open_alarm_opened_at(session)
            runs = queries.archived_rows(session)
            last_run = queries.last_archive_finished_at(session)
            troubles = queries.supervision_troubles(session)
        total_unrouted = 0
        for family, priority, routed, count in rows:
            open_alarms.add_metric([family, priority, "true" if routed else "false"], count)
            total_unrouted += 0 if routed else count
        unrouted.add_metric([], total_unrouted)
        needs_person.add_metric([], flagged)
        for state in LIVE_ACTION_STATES:
            actions.add_metric([state], counts.get(state, 0))
        for kind, count in runs._asdict().items():
            archived.add_metric([kind], count)
        last_archive.add_metric([], last_run.timestamp() if last_run else 0.0)
        overdue.add_metric([], late)
        oldest.add_metric([], (now - first_opened).total_seconds() if first_opened else 0.0)
        for kind, count in troubles.items():
            in_trouble.add_metric([kind], count)
        yield from (
            open_alarms, unrouted, needs_person, actions, overdue, oldest, archived, last_archive, in_trouble,
        )  # fmt: skip


class QueueCollector(Collector):
    """Messages waiting in each Celery queue, read from Redis on each scrape."""

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("alarm_bridge_queue_depth", "Messages waiting per queue", labels=["queue"])
        up = GaugeMetricFamily("alarm_bridge_broker_up", "1 when the broker answered its latest read")
        if self._client is None:
            up.add_metric([], 0)
            yield from (depth, up)
            return
        try:
            waiting = kombu_redis.waiting_messages(self._client, QUEUES, self._prefix)
        except redis.RedisError as exc:
            log.warning("metrics.broker_unavailable", error=type(exc).__name__)
            up.add_metric([], 0)
            yield from (depth, up)
            return
        for queue, count in waiting.items():
            depth.add_metric([queue], count)
        up.add_metric([], 1)
        yield from (depth, up)


class CachedCollector(Collector):
    """What another collector read, reused for ``max_age_s``: scrapes that arrive together, or within
    the interval, cost one read between them (the first reads while the others wait for it)."""

    def __init__(
        self, inner: Collector, max_age_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._families: list[Metric] | None = None
        self._read_at = 0.0

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._families is None or self._clock() - self._read_at >= self._max_age_s:
                self._families = list(self._inner.collect())
                self._read_at = self._clock()
            families = self._families
        yield from families


def _broker_client(settings: Settings) -> redis.Redis | None:
    if settings.broker_url is None:
        return None
    return redis.Redis.from_url(
        settings.broker_url, socket_timeout=BROKER_TIMEOUT_S, socket_connect_timeout=BROKER_TIMEOUT_S
    )


@bp.get("/metrics")
def export_metrics() -> Response:
    """The Prometheus text exposition."""
    svc = services()
    if svc.settings.metrics_token and not matches_any(bearer_token() or "", (svc.settings.metrics_token,)):
        raise ApiError(401, "unauthenticated", "a metrics token is required (Authorization: Bearer)")
    registry = CollectorRegistry(auto_describe=False)
    directory = telemetry.multiprocess_dir()
    if directory is not None:
        prometheus.collect_files(registry, directory)
    else:
        registry.register(_ProcessLocal())
    for gauges in _deployment_gauges():
        registry.register(gauges)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class _ProcessLocal(Collector):
    """This process's own counters, when no multiprocess directory is in use (tests, one process)."""

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        yield from REGISTRY.collect()


_GAUGES_LOCK = threading.Lock()


def _deployment_gauges() -> tuple[CachedCollector, CachedCollector]:
    """This app's ledger and queue collectors, built once and shared by every scrape it answers."""
    with _GAUGES_LOCK:
        found: tuple[CachedCollector, CachedCollector] | None = current_app.extensions.get(
            "alarm_bridge.metrics_gauges"
        )
        if found is None:
            settings = services().settings
            ledger = LedgerCollector(services().sessions, timedelta(seconds=settings.watchdog_grace_s))
            queues = QueueCollector(_broker_client(settings), settings.broker_key_prefix)
            found = (
                CachedCollector(ledger, settings.metrics_cache_s),
                CachedCollector(queues, settings.metrics_cache_s),
            )
            current_app.extensions["alarm_bridge.metrics_gauges"] = found
        return found


@bp.before_app_request
def _start_request() -> None:
    """Time the request, and put its id and the alarm or action it is about on every log line."""
    g.request_started = time.perf_counter()
    structlog.contextvars.clear_contextvars()
    ids = {k: v for k, v in (request.view_args or {}).items() if k in ("alarm_id", "action_id")}
    structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:16], **ids)


@bp.after_app_request
def _observe(response: Response) -> Response:
    """Time every request; count every refused intake call against its source and reason."""
    started = g.pop("request_started", None)
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    status = response.status_code
    if started is not None:
        telemetry.HTTP_REQUESTS.labels(route, request.method, str(status)).observe(
            time.perf_counter() - started
        )
    if request.blueprint == "intake" and status >= 400:
        body = response.get_json(silent=True) if response.is_json else None
        reason = body.get("error") if isinstance(body, dict) else None
        source = g.get("intake_source") or "unauthenticated"
        telemetry.EVENTS_RECEIVED.labels(source, "rejected", reason or str(status)).inc()
        # Which URL a misconfigured sender calls is what an integrator needs; `?token=` is masked.
        log.info(
            "intake.rejected",
            status=status,
            reason=reason,
            source=source,
            url=request.full_path,
            user_agent=request.user_agent.string[:200],
        )
    return response
