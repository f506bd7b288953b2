"""SIGTERM on a worker (a deploy, a scale-down): the step it is running finishes and is recorded, the
message it holds but has not started goes back to the broker, and the next worker picks it up.
Nothing is lost and nothing is sent twice."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

import vendors
from app.ledger.models import Action
from app.ledger.session import make_engine, make_sessionmaker
from app.web import create_app
from config.settings import read_settings
from sandbox.server import build_apps, combined_app, serve_in_thread
from tests.polling import wait_until
from tests.processes import Proc, deployment_env, procfile_argv, start, unique_prefix
from tests.sites_fixture import PANEL_TOKEN, SOURCE_ENV
from tests.stack import E2E_SITES

pytestmark = pytest.mark.integration


class Deployment:
    """The web app in this process; workers as real `celery worker` processes from the Procfile line."""

    def __init__(self, postgres_url: str, redis_url: str, tmp_path: Path) -> None:
        self.sandbox = serve_in_thread(combined_app(build_apps()))
        sites = tmp_path / "sites.toml"
        sites.write_text(E2E_SITES)
        self.env = deployment_env(
            database_url=postgres_url,
            redis_url=redis_url,
            key_prefix=unique_prefix("abterm"),
            sites=sites,
            var_dir=tmp_path / "var",
            sandbox=self.sandbox.base_url,
            drop=("DATABASE_", "REDIS_"),
            LOG_FORMAT="console",
            **SOURCE_ENV,
        )
        self.tmp_path = tmp_path
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            self.settings = read_settings(vendors.SETTINGS)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.app = create_app(self.settings)
        self.web = serve_in_thread(self.app)
        self.engine = make_engine(postgres_url)
        self.sessions = make_sessionmaker(self.engine)
        self.workers: list[Proc] = []
        self.http = requests.Session()

    def start_worker(self, name: str) -> Proc:
        argv = procfile_argv("worker")
        argv += ["--queues", "life_safety,default,bulk", "--concurrency", "1", "--hostname", f"{name}@%h"]
        proc = start(name, argv, self.env, self.tmp_path / f"{name}.log")
        self.workers.append(proc)
        return proc

    def states(self, alarm_id: int) -> dict[str, str]:
        with self.sessions() as session:
            rows = session.execute(select(Action.kind, Action.state).where(Action.alarm_id == alarm_id)).all()
        return {kind: state for kind, state in rows}

    def close(self) -> None:
        self.http.close()
        for proc in self.workers:
            proc.kill()
        self.web.stop()
        self.sandbox.stop()
        self.app.extensions["alarm_bridge"].engine.dispose()
        self.engine.dispose()


@pytest.fixture
def deployment(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    found = Deployment(postgres_url, redis_url, tmp_path)
    yield found
    found.close()


def test_sigterm_lets_the_running_step_finish_and_hands_back_the_next(deployment: Deployment) -> None:
    http = deployment.http
    sandbox = deployment.sandbox.base_url
    # TrackTik takes 3 s to answer the create: the worker is mid-request when SIGTERM arrives.
    fault = {"method": "POST", "path": "/rest/v1/alarms", "delay_s": 3}
    assert http.post(f"{sandbox}/tracktik/_sandbox/faults", json=fault, timeout=5).status_code == 201
    first = deployment.start_worker("first")
    event = {
        "account": "ab-95367",
        "code": "FA",
        "zone": "1",
        "event_id": uuid.uuid4().hex,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    answer = http.post(
        f"{deployment.web.base_url}/v1/events",
        json=event,
        headers={"Authorization": f"Bearer {PANEL_TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    alarm_id = answer.json()["alarm_id"]
    # The commercial plan's fire steps: TrackTik (slow), then the CAD, one at a time (concurrency 1).
    wait_until(lambda: deployment.states(alarm_id).get("tracktik.create_alarm") == "running", timeout_s=30)

    os.kill(first.pid, signal.SIGTERM)  # the worker itself, not its pool
    assert first.wait(timeout_s=30) == 0  # a warm shutdown: it waited for the step, then left

    states = deployment.states(alarm_id)
    assert states["tracktik.create_alarm"] == "succeeded"
    assert states["cad.upload_incident"] == "queued"  # handed back, not started, not lost
    deployment.start_worker("second")
    wait_until(lambda: deployment.states(alarm_id)["cad.upload_incident"] == "succeeded", timeout_s=60)
    created = http.get(f"{sandbox}/tracktik/_sandbox/alarms", timeout=5).json()
    assert len(created) == 1
    assert len(http.get(f"{sandbox}/cad/_sandbox/incidents", timeout=5).json()) == 1
