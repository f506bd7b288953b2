"""Prometheus ``/metrics``: the ledger's state, read at scrape time.

Gauges computed from the ledger are correct however many gunicorn workers and Celery processes run,
because the ledger is shared and nothing is counted in process memory: open alarms by family,
priority and routing (unrouted alarms are a gauge of their own), alarms waiting for a person, and
actions by state.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.ledger.models import ACTIVE_ALARM_STATES, Action, Alarm
from app.web.services import services

bp = Blueprint("metrics", __name__)


class LedgerCollector(Collector):
    """Reads the ledger on each scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        open_alarms = GaugeMetricFamily(
            "alarm_bridge_open_alarms", "Alarms not yet ended", labels=["family", "priority", "routed"]
        )
        unrouted = GaugeMetricFamily("alarm_bridge_unrouted_open_alarms", "Open alarms no site claims")
        needs_person = GaugeMetricFamily("alarm_bridge_alarms_needing_person", "Alarms waiting for a person")
        actions = GaugeMetricFamily("alarm_bridge_actions", "Actions by state", labels=["state"])
        with self._sessions() as session:
            rows = session.execute(
                select(Alarm.family, Alarm.priority, Alarm.site_key.is_not(None), func.count())
                .where(Alarm.state.in_(ACTIVE_ALARM_STATES))
                .group_by(Alarm.family, Alarm.priority, Alarm.site_key.is_not(None))
            ).all()
            flagged = session.execute(select(func.count()).where(Alarm.needs_person)).scalar_one()
            by_state = session.execute(select(Action.state, func.count()).group_by(Action.state)).all()
        total_unrouted = 0
        for family, priority, routed, count in rows:
            open_alarms.add_metric([family, priority, "true" if routed else "false"], count)
            total_unrouted += 0 if routed else count
        unrouted.add_metric([], total_unrouted)
        needs_person.add_metric([], flagged)
        for state, count in by_state:
            actions.add_metric([state], count)
        yield from (open_alarms, unrouted, needs_person, actions)


@bp.get("/metrics")
def export_metrics() -> Response:
    """The Prometheus text exposition."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(services().sessions))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
