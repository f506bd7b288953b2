"""The whole stack in one test process: the five simulators, the web app over real HTTP, a real
Celery worker on the real Redis, the dispatcher ticking (what beat triggers), and a ledger of its own.

Used by the end-to-end and fault tests. Time-dependent behaviour of the vendors runs on the sandbox
clock (``advance``); the bridge's own delays are real but short in the test plans.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
from celery import Celery, Task

import vendors
from app.domain import task_names
from app.web import create_app
from config.celery import QUEUES
from config.settings import Settings
from sandbox.alta import deployment
from sandbox.clock import Clock
from sandbox.config import load_config
from sandbox.server import build_apps, combined_app, serve_in_thread
from tests.conftest import worker_app, worker_thread
from tests.polling import wait_until
from tests.sites_fixture import (
    ALTA_TOKEN,
    PANEL_TOKEN,
    SOURCE_ENV,
    TRACKTIK_FIRE,
    location,
    new_york,
    site_toml,
)
from workers.runtime import Runtime, runtime_holder

OPERATOR = {"Authorization": "Bearer test-operator-key"}
# The Alta zone webhooks of the sandbox carry this token (sandbox/alta/default.toml).
SANDBOX_ALTA_TOKEN = "sandbox-alta-webhook-token"

E2E_SITES = (
    """
[sources.acme-panels]
kind = "panel"
token_env = "ACME_PANELS_TOKEN"

[sources.alta-main]
kind = "alta"
token_env = "ALTA_MAIN_TOKEN"

[plans.commercial]
burglary = [
    "alta.collect_video",
    "tracktik.create_alarm",
    { do = "callonalarm.trigger", after = "3s", cancellable = true },
]
fire = ["tracktik.create_alarm", "cad.upload_incident"]
default = ["tracktik.create_alarm"]

[plans.life]
fire = ["rapidsos.create_alert", "tracktik.create_alarm", "cad.upload_incident"]
default = ["tracktik.create_alarm"]
"""
    + site_toml(
        "montreal-hq",
        name="Montreal HQ",
        sources=["acme-panels", "alta-main"],
        accounts=["ab-95367"],
        alta_zones=["az-5d1c"],
        timezone="America/Montreal",
        instructions="Loading dock; ask the security desk for the key.",
        cancel_window="90s",
        plan="commercial",
        callonalarm={"account_number": "1001"},
        tracktik={
            "alarm_organization": 687,
            "alarm_connection_custom_id": "alarm-bridge",
            "alarm_type_codes": {
                "burglary": "11111",
                "fire": "FIRE",
                "trouble": "TECHNICAL",
                "default": "INTRUSION",
            },
        },
        location=location(
            "Acme HQ", "4200 Blvd Saint-Laurent", "Montreal", "QC", "CA", "H2W 2R2", (45.5183, -73.5822)
        ),
    )
    + site_toml(
        "nyc-office",
        name="NYC office",
        sources=["acme-panels"],
        accounts=["ny-1"],
        instructions="Fire panel in the lobby.",
        plan="life",
        tracktik=TRACKTIK_FIRE,
        callonalarm={"account_number": "1005"},
        rapidsos={
            "callflow": "AcmeMonitoringAlarmFlow",
            "site_phone": "+12125550100",
            "emergency_contacts": [{"name": "Dana Lee", "phone": "+16175550142"}],
        },
        location=new_york("Acme NYC"),
    )
    + site_toml(
        "miami-shop",
        name="Miami shop",
        sources=["acme-panels"],
        accounts=["fl-1"],
        plan="life",
        tracktik=TRACKTIK_FIRE,
        callonalarm={"account_number": "1005"},
        rapidsos={"callflow": "AcmeMonitoringAlarmFlow"},
        location=location(
            "Acme Miami", "100 Biscayne Blvd", "Miami", "FL", "US", "33132", (25.7753, -80.1888)
        ),
    )
)


class Stack:
    """A running bridge with its upstreams; ``close()`` stops everything."""

    def __init__(
        self,
        settings: Settings,
        tmp_path: Path,
        sandbox_config: dict[str, Any] | None = None,
        sites_toml: str = E2E_SITES,
    ) -> None:
        self.clock = Clock()
        self.sandbox_apps = build_apps(sandbox_config or load_config(), clock=self.clock)
        self.sandbox = serve_in_thread(combined_app(self.sandbox_apps))
        sb = self.sandbox.base_url
        sites = tmp_path / "e2e-sites.toml"
        sites.write_text(sites_toml)
        environ = {**SOURCE_ENV, "ALTA_MAIN_TOKEN": f"{ALTA_TOKEN},{SANDBOX_ALTA_TOKEN}"}
        # Every vendor at its key in this sandbox, the rest of its settings as the test gave them.
        at_sandbox = [
            replace(settings.vendor(vendor.settings), base_url=f"{sb}/{vendor.key}")
            for vendor in vendors.VENDORS
            if vendor.settings
        ]
        self.settings = replace(
            settings, sites_file=str(sites), environ=environ, operator_api_keys=("test-operator-key",)
        ).with_vendor(*at_sandbox)
        self.web_app = create_app(self.settings)
        self.web = serve_in_thread(self.web_app)
        deployment(self.sandbox_apps["alta"]).set_target(None, None, self.web.base_url)
        self.http = requests.Session()
        self._stop = threading.Event()
        self._worker_cm: Any = None
        self._dispatcher: threading.Thread | None = None
        self._app: Celery | None = None

    @contextmanager
    def running(self) -> Iterator[Stack]:
        """Start the worker and the dispatcher; stop them and the servers on exit."""
        for module in vendors.TASK_MODULES:  # every vendor's tasks (worker_app registers the system's)
            importlib.import_module(module)

        with worker_app(self.settings) as app:
            self._app = app
            self._dispatcher = threading.Thread(target=self._tick, name="dispatcher", daemon=True)
            self._worker_cm = worker_thread(app, QUEUES, shutdown_timeout=30)
            try:
                self._worker_cm.__enter__()
                self._dispatcher.start()
                yield self
            finally:
                self.stop_worker()
                self._stop.set()
                if self._dispatcher.is_alive():
                    self._dispatcher.join(timeout=10)
                self.close()
                self._app = None

    @property
    def app(self) -> Celery:
        """The running worker's Celery app (its tasks run with the stack's runtime)."""
        assert self._app is not None, "the stack is not running"
        return self._app

    @property
    def runtime(self) -> Runtime:
        """The worker runtime the stack's tasks run with."""
        return runtime_holder(self.app).get()

    def task(self, name: str) -> Task[..., Any]:
        """The task ``name`` of the running worker's app, to run in the test's thread as beat would
        have it sent (the same runtime as the worker's)."""
        return self.app.tasks[name]

    def stop_worker(self) -> None:
        """Stop the Celery worker (the dispatcher keeps ticking), as a crashed worker pool would."""
        if self._worker_cm is not None:
            cm, self._worker_cm = self._worker_cm, None
            cm.__exit__(None, None, None)

    def _tick(self) -> None:
        send_due_actions = self.task(task_names.DISPATCHER_SEND_DUE_ACTIONS)
        while not self._stop.wait(0.2):
            send_due_actions()

    def close(self) -> None:
        self.http.close()
        self.web.stop()
        self.sandbox.stop()
        self.web_app.extensions["alarm_bridge"].engine.dispose()

    # -- driving it ---------------------------------------------------------------------------------

    def post_event(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(
            f"{self.web.base_url}/v1/events",
            json=body,
            headers={"Authorization": f"Bearer {PANEL_TOKEN}"},
            timeout=10,
        )
        assert response.status_code in (200, 202), response.text
        return dict(response.json())

    def command(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.post(f"{self.web.base_url}{path}", json=body or {}, headers=OPERATOR, timeout=10)
        assert response.status_code in (200, 202), response.text
        return dict(response.json())

    def alarm(self, alarm_id: int) -> dict[str, Any]:
        response = self.http.get(f"{self.web.base_url}/v1/alarms/{alarm_id}", headers=OPERATOR, timeout=10)
        assert response.status_code == 200
        return dict(response.json())

    def actions(self, alarm_id: int) -> dict[str, str]:
        return {a["kind"]: a["state"] for a in self.alarm(alarm_id)["actions"]}

    def wait_for(
        self, alarm_id: int, kind: str, state: str = "succeeded", timeout_s: float = 60
    ) -> dict[str, Any]:
        """Wait until the alarm's action of ``kind`` reaches ``state``; returns the alarm as read then
        (one snapshot: the step's state and the refs it wrote are seen together)."""
        seen: list[dict[str, Any]] = []

        def probe() -> bool:
            seen[:] = [self.alarm(alarm_id)]
            return any(a["kind"] == kind and a["state"] == state for a in seen[0]["actions"])

        wait_until(probe, timeout_s=timeout_s, interval_s=0.1)
        return seen[0]

    def sandbox_get(self, path: str) -> Any:
        response = self.http.get(f"{self.sandbox.base_url}{path}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
