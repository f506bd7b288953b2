"""Troubles yield to life-safety (issue 13, workers/bulk_gate.py), through a real Celery worker on
the real Redis: a step delivered from the life-safety queue raises the yield, and the bulk queue's
steps that follow start one slot apart; before it they never wait, and no other queue ever does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from app.ledger.models import Action, ActionState
from app.ledger.session import make_engine, make_sessionmaker
from app.web import create_app
from config.settings import Settings
from tests.conftest import running_worker
from tests.polling import wait_until
from workers.runtime import runtime_holder

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer test-operator-key"}
RATE = 1  # a slot a second: wide enough that the spacing stands out of any step's own time


@pytest.fixture
def settings(broker_settings: Settings) -> Settings:
    return replace(broker_settings, bulk_yield_rate=RATE, bulk_yield_s=60.0)


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    app = create_app(settings)
    yield app.test_client()
    app.extensions["alarm_bridge"].engine.dispose()


def yielded_s() -> float:
    return REGISTRY.get_sample_value("alarm_bridge_bulk_yield_seconds_total") or 0.0


def selftests(client: FlaskClient, settings: Settings, queue: str, count: int) -> list[datetime]:
    """Send ``count`` self-tests to ``queue``; once all succeeded, when each completed, in order."""
    ids = []
    for _ in range(count):
        accepted = client.post("/v1/system/selftest", headers=AUTH, json={"queue": queue})
        assert accepted.status_code == 202
        ids.append(accepted.json["action_id"])
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)

    def completed() -> list[datetime] | None:
        with sessions() as session:
            rows = session.execute(select(Action.state, Action.completed_at).where(Action.id.in_(ids))).all()
        done = [at for state, at in rows if state == ActionState.SUCCEEDED and at is not None]
        return sorted(done) if len(done) == count else None

    try:
        return wait_until(completed, timeout_s=60, interval_s=0.1)
    finally:
        engine.dispose()


def test_bulk_steps_yield_only_after_a_life_safety_step(client: FlaskClient, settings: Settings) -> None:
    with running_worker(settings, ["life_safety", "default", "bulk"]) as app:
        gate = runtime_holder(app).get().bulk_gate
        before = yielded_s()
        selftests(client, settings, "bulk", 3)
        selftests(client, settings, "default", 3)
        assert yielded_s() == before  # nothing life-safety lately: no step waited
        assert not gate.yielding()

        selftests(client, settings, "life_safety", 1)
        assert gate.yielding()  # the life-safety step raised the yield for the deployment

        selftests(client, settings, "default", 3)
        assert yielded_s() == before  # property steps never yield
        paced = selftests(client, settings, "bulk", 3)
        # One slot a second: the third started at least two slots after the first (less the first's
        # own time between its slot and its completion).
        assert (paced[-1] - paced[0]).total_seconds() >= 2 / RATE - 0.5
        assert yielded_s() - before >= 2 / RATE - 0.5


def test_the_yield_is_shared_by_every_worker_of_the_deployment(
    client: FlaskClient, settings: Settings
) -> None:
    # `urgent` and `bulk` are separate processes: the flag one raises is the one the other reads.
    with running_worker(settings, ["life_safety"]) as urgent:
        selftests(client, settings, "life_safety", 1)
        urgent_gate = runtime_holder(urgent).get().bulk_gate
    with running_worker(settings, ["bulk"]) as bulk:
        assert runtime_holder(bulk).get().bulk_gate is not urgent_gate
        assert runtime_holder(bulk).get().bulk_gate.yielding()
