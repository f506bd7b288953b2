"""The watchdog against the real stack: a worker pool that stops mid-plan gets the alarm raised to a
person, a healthy one does not, and every check pings the heartbeat URL."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask

from app.domain import task_names
from config.settings import Settings
from sandbox.server import serve_in_thread
from tests.polling import wait_until
from tests.stack import Stack
from vendors.alta.settings import AltaSettings

pytestmark = pytest.mark.integration


class Monitor:
    """A dead-man's-switch service on loopback: counts the pings it receives."""

    def __init__(self) -> None:
        self.pings = 0
        self._lock = threading.Lock()
        app = Flask("monitor")

        @app.get("/ping/<check>")
        def ping(check: str) -> tuple[str, int]:
            with self._lock:
                self.pings += 1
            return "OK", 200

        self.server = serve_in_thread(app)
        self.url = f"{self.server.base_url}/ping/alarm-bridge-secret-check-id"


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    found = Monitor()
    yield found
    found.server.stop()


@pytest.fixture
def stack(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
    monitor: Monitor,
) -> Iterator[Stack]:
    settings = make_settings(
        AltaSettings(lookup_timeout_s=30, video_wait_s=1),
        database_url=postgres_url,
        redis_url=redis_url,
        broker_key_prefix=f"abwd:{uuid.uuid4().hex[:10]}:",
        watchdog_grace_s=1.0,
        watchdog_heartbeat_url=monitor.url,
    )
    with Stack(settings, tmp_path).running() as running:
        yield running


def _burglary() -> dict[str, str]:
    return {
        "account": "ab-95367",
        "code": "BA",
        "zone": "3",
        "event_id": uuid.uuid4().hex,
        "occurred_at": datetime.now(UTC).isoformat(),
    }


def _raised_total(stack: Stack) -> float:
    text = stack.http.get(f"{stack.web.base_url}/metrics", timeout=10).text
    found = re.search(r'^alarm_bridge_watchdog_raised_total\{reason="overdue"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_worker_stopped_mid_plan_gets_the_alarm_raised_to_a_person(stack: Stack, monitor: Monitor) -> None:
    check = stack.task(task_names.SYSTEM_WATCHDOG)

    alarm_id = stack.post_event(_burglary())["alarm_id"]
    stack.wait_for(alarm_id, "tracktik.create_alarm")  # the plan is under way: the call waits 3 s
    assert check() == 0  # a healthy worker: nothing is overdue
    assert stack.alarm(alarm_id)["state"] == "open"
    before = _raised_total(stack)

    stack.stop_worker()  # the pool dies with the delayed call still to come

    wait_until(lambda: check() > 0 or None, timeout_s=30, interval_s=0.5)
    alarm = stack.alarm(alarm_id)
    assert alarm["state"] == "needs_person"
    assert re.search(r"watchdog: \S+ is \d+s overdue", alarm["needs_person_reason"])
    assert any(
        line["kind"] == "alarm.needs_person" and line["what"].startswith("watchdog:")
        for line in alarm["timeline"]
    ), alarm["timeline"]
    assert _raised_total(stack) == before + 1
    assert monitor.pings >= 2  # one per check, the healthy one included


def test_the_watchdog_leaves_a_healthy_alarm_alone(stack: Stack, monitor: Monitor) -> None:
    check = stack.task(task_names.SYSTEM_WATCHDOG)

    alarm_id = stack.post_event(_burglary())["alarm_id"]
    alarm = stack.wait_for(alarm_id, "callonalarm.trigger", timeout_s=30)

    assert check() == 0
    assert alarm["state"] == "open"
    assert monitor.pings == 1
