"""Metrics and logs of a real deployment: the Procfile's web (two gunicorn workers), worker and urgent
(Celery thread pools) and beat, on PostgreSQL and Redis, talking to the sandbox over loopback.

- ``/metrics`` on the web process adds up what every process recorded: after end-to-end alarms the
  signal → first upstream request histogram is populated for every upstream the alarms reached. It
  answers only a scrape carrying ``METRICS_TOKEN``.
- Secrets planted in every input (credentials in the environment, tokens in headers and in
  ``?token=``, a webhook signature, emergency contacts in the sites file) never reach the logs, all
  processes logging at DEBUG.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from sandbox.server import build_apps, combined_app, serve_in_thread
from tests.polling import wait_until
from tests.processes import (
    deployment_env,
    free_port,
    procfile_argv,
    start,
    stop_all,
    unique_prefix,
    wait_answers,
)
from tests.stack import E2E_SITES

pytestmark = pytest.mark.integration

# Every secret the deployment is given or handles; none may appear in any log line.
PANEL_TOKEN = "PLANTED-panel-token-5c2e09d1"
ALTA_TOKEN = "PLANTED-alta-token-8d1f4b77"
OPERATOR_KEY = "PLANTED-operator-key-7f3a61c2"
METRICS_TOKEN = "PLANTED-metrics-token-3e9b50d4"
SESSION_SECRET = "PLANTED-session-secret-91bd03aa-5e27c4f8"
SIGNING_KEY = b"PLANTED-signing-key-0123456789ab"
SIGNING_SECRET = "whsec_" + base64.b64encode(SIGNING_KEY).decode()
CONTACT_NAME = "Plantedname Contactperson"
CONTACT_PHONE = "+16175550199"
SANDBOX_CREDENTIALS = (  # the sandbox's vendor credentials (sandbox/<vendor>/default.toml)
    "sandbox-alta-password",
    "sandbox-tracktik-secret",
    "sandbox-tracktik-password",
    "coa_sandbox_key_0001",
    "sandbox-rapidsos-secret",
    "sandbox-cad-token",
)


@dataclass
class Deployment:
    web: str
    sandbox: str
    redis_url: str
    prefix: str
    logs: list[Path] = field(default_factory=list)
    http: requests.Session = field(default_factory=requests.Session)

    def post_event(self, body: dict[str, Any], **kwargs: Any) -> requests.Response:
        kwargs.setdefault("headers", {"Authorization": f"Bearer {PANEL_TOKEN}"})
        return self.http.post(f"{self.web}/v1/events", json=body, timeout=10, **kwargs)

    def alarm(self, alarm_id: int) -> dict[str, Any]:
        response = self.http.get(
            f"{self.web}/v1/alarms/{alarm_id}",
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def settled(self, alarm_id: int, kinds: set[str]) -> dict[str, Any] | None:
        alarm = self.alarm(alarm_id)
        done = {a["kind"] for a in alarm["actions"] if a["state"] == "succeeded"}
        return alarm if kinds <= done else None

    def metrics(self) -> str:
        response = self.http.get(
            f"{self.web}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        )
        assert response.status_code == 200
        return response.text

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs)


@pytest.fixture
def deployment(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    sandbox = serve_in_thread(combined_app(build_apps()))
    sites = tmp_path / "sites.toml"
    text = E2E_SITES.replace('name = "Dana Lee"', f'name = "{CONTACT_NAME}"')
    text = text.replace("+16175550142", CONTACT_PHONE)
    signed = 'token_env = "ACME_PANELS_TOKEN"\nsigning_secrets_env = "ACME_PANELS_WHSEC"'
    sites.write_text(text.replace('token_env = "ACME_PANELS_TOKEN"', signed))
    prefix = unique_prefix("abobs")
    env = deployment_env(
        database_url=postgres_url,
        redis_url=redis_url,
        key_prefix=prefix,
        sites=sites,
        var_dir=tmp_path / "var",
        prometheus=tmp_path / "prometheus",
        sandbox=sandbox.base_url,
        OPERATOR_API_KEYS=OPERATOR_KEY,
        METRICS_TOKEN=METRICS_TOKEN,
        SECRET_KEY=SESSION_SECRET,
        ACME_PANELS_TOKEN=PANEL_TOKEN,
        ACME_PANELS_WHSEC=SIGNING_SECRET,
        ALTA_MAIN_TOKEN=ALTA_TOKEN,
        HOST="127.0.0.1",
        WEB_CONCURRENCY="2",
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="json",
        ALTA_LOOKUP_TIMEOUT_S="3",
        ALTA_VIDEO_WAIT_S="0",
        DISPATCH_INTERVAL_S="0.2",
    )
    web_port = free_port()
    procs = []
    for name in ("web", "worker", "urgent", "beat"):
        port = web_port if name == "web" else free_port()
        procs.append(
            start(name, procfile_argv(name, port), {**env, "PORT": str(port)}, tmp_path / f"{name}.log")
        )
    found = Deployment(
        f"http://127.0.0.1:{web_port}", sandbox.base_url, redis_url, prefix, [p.log for p in procs]
    )

    try:
        try:
            wait_answers(found.http, f"{found.web}/readyz", timeout_s=60)
        except AssertionError:
            pytest.fail("the web process did not become ready:\n" + procs[0].tail())
        yield found
    finally:
        found.http.close()
        stop_all(procs, grace_s=30)
        sandbox.stop()


def _event(account: str, code: str, zone: str = "3") -> dict[str, str]:
    return {
        "account": account,
        "code": code,
        "zone": zone,
        "event_id": uuid.uuid4().hex,
        "occurred_at": datetime.now(UTC).isoformat(),
    }


def _samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` for one sample name of the exposition."""
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return {labels or "": float(value) for labels, value in pattern.findall(text)}


def test_metrics_add_up_every_process_and_time_the_first_request_to_each_upstream(
    deployment: Deployment,
) -> None:
    fires = [deployment.post_event(_event("ny-1", "FA", zone)) for zone in ("1", "2", "3")]  # 3 alarms
    burglary = deployment.post_event(_event("ab-95367", "BA"))
    alta = deployment.http.post(
        f"{deployment.web}/v1/webhooks/alta",
        json={"alarmZoneId": "az-5d1c", "alarmZoneName": "Lobby", "description": "motion in the lobby"},
        headers={"Authorization": f"Bearer {ALTA_TOKEN}"},
        timeout=10,
    )
    duplicate = deployment.post_event(json.loads(fires[0].request.body or b"{}"))
    refused = deployment.post_event(_event("ny-1", "FA"), headers={"Authorization": "Bearer wrong"})
    invalid = deployment.post_event({"account": "ny-1", "code": "FA"})
    assert [r.status_code for r in [*fires, burglary, alta]] == [202] * 5
    assert (duplicate.status_code, refused.status_code, invalid.status_code) == (200, 401, 422)

    assert deployment.http.get(f"{deployment.web}/metrics", timeout=10).status_code == 401  # no token
    kinds = {"rapidsos.create_alert", "tracktik.create_alarm", "cad.upload_incident"}
    for response in fires:
        wait_until(lambda r=response: deployment.settled(r.json()["alarm_id"], kinds), timeout_s=60)
    burglary_kinds = {"tracktik.create_alarm", "callonalarm.trigger"}
    wait_until(lambda: deployment.settled(burglary.json()["alarm_id"], burglary_kinds), timeout_s=60)
    alta_kinds = {"alta.find_ongoing_alert", *burglary_kinds}
    wait_until(lambda: deployment.settled(alta.json()["alarm_id"], alta_kinds), timeout_s=60)

    text = deployment.metrics()
    first = _samples(text, "alarm_bridge_signal_to_first_request_seconds_count")
    assert first == {
        '{target="alta"}': 1.0,  # looked up once, however often the alert was not listed yet
        '{target="cad"}': 3.0,
        '{target="callonalarm"}': 2.0,
        '{target="rapidsos"}': 3.0,
        '{target="tracktik"}': 5.0,
    }
    delayed_call = _samples(text, "alarm_bridge_signal_to_first_request_seconds_bucket")
    assert delayed_call['{le="2.5",target="callonalarm"}'] == 0.0  # the plan holds the call for 3 s
    received = _samples(text, "alarm_bridge_events_received_total")
    assert received['{outcome="accepted",reason="",source="acme-panels"}'] == 4.0
    assert received['{outcome="accepted",reason="",source="alta-main"}'] == 1.0
    assert received['{outcome="duplicate",reason="",source="acme-panels"}'] == 1.0
    assert received['{outcome="rejected",reason="unauthenticated",source="unauthenticated"}'] == 1.0
    assert received['{outcome="rejected",reason="invalid_request",source="acme-panels"}'] == 1.0
    opened = _samples(text, "alarm_bridge_alarms_opened_total")
    assert opened['{family="fire",priority="life_safety"}'] == 3.0
    assert opened['{family="burglary",priority="property"}'] == 2.0
    calls = _samples(text, "alarm_bridge_upstream_request_seconds_count")
    assert sum(v for k, v in calls.items() if 'upstream="rapidsos"' in k) == 4  # a token, three alerts
    assert _samples(text, "alarm_bridge_ledger_write_seconds_count")['{operation="intake"}'] == 6.0
    finished = _samples(text, "alarm_bridge_actions_finished_total")
    assert finished['{kind="cad.upload_incident",state="succeeded"}'] == 3.0
    assert _samples(text, "alarm_bridge_broker_up") == {"": 1.0}
    assert set(_samples(text, "alarm_bridge_queue_depth")) == {
        '{queue="life_safety"}',
        '{queue="default"}',
        '{queue="bulk"}',
        '{queue="dispatch"}',
    }
    # The gauge counts live steps only (a scrape never re-counts history); finished ones are counters.
    assert set(_samples(text, "alarm_bridge_actions")) == {
        '{state="pending"}',
        '{state="queued"}',
        '{state="running"}',
    }
    assert _samples(text, "alarm_bridge_ledger_archived_total")['{kind="alarms"}'] == 0.0


def test_no_secret_planted_in_any_input_reaches_the_logs(deployment: Deployment) -> None:
    body = json.dumps(_event("ny-1", "FA"))
    msg_id, stamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    digest = hmac.new(SIGNING_KEY, f"{msg_id}.{stamp}.{body}".encode(), hashlib.sha256).digest()
    signature = "v1," + base64.b64encode(digest).decode()
    signed = deployment.http.post(
        f"{deployment.web}/v1/events",
        data=body,
        headers={
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature,
        },
        timeout=10,
    )
    alta = deployment.http.post(
        f"{deployment.web}/v1/webhooks/alta?token={ALTA_TOKEN}",
        json={
            "alarmZoneId": "az-5d1c",
            "alarmZoneName": "Lobby",
            "triggerPhase": "TRIGGERED",
            "occurred": int(time.time() * 1000),
            "description": "motion in the lobby",
        },
        timeout=10,
    )
    wrong_token = deployment.post_event(
        _event("ny-1", "FA"), headers={"Authorization": f"Bearer {PANEL_TOKEN}x"}
    )
    wrong_query = deployment.http.post(
        f"{deployment.web}/v1/events?token={ALTA_TOKEN}", json=_event("ny-1", "FA"), timeout=10
    )
    operator = deployment.http.get(
        f"{deployment.web}/v1/alarms", headers={"Authorization": f"Bearer {OPERATOR_KEY}"}, timeout=10
    )
    assert signed.status_code == 202, signed.text
    assert alta.status_code == 202, alta.text
    assert (wrong_token.status_code, wrong_query.status_code, operator.status_code) == (401, 403, 200)
    wrong_scrape = deployment.http.get(
        f"{deployment.web}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}x"}, timeout=10
    )
    assert wrong_scrape.status_code == 401
    deployment.metrics()
    alarm_id = signed.json()["alarm_id"]
    kinds = {"rapidsos.create_alert", "tracktik.create_alarm", "cad.upload_incident"}
    wait_until(lambda: deployment.settled(alarm_id, kinds), timeout_s=60)
    alta_id = alta.json()["alarm_id"]
    wait_until(lambda: deployment.alarm(alta_id)["actions"] and True, timeout_s=30)

    # What the upstreams handed out: the shared tokens and the Alta cookie the clients cached.
    cache = redis.Redis.from_url(deployment.redis_url)
    issued: list[str] = []
    for key in cache.scan_iter(f"{deployment.prefix}*"):
        if cache.type(key) != b"string" or not re.search(rb"token|cookie", key):
            continue
        raw = (cache.get(key) or b"").decode()
        try:
            record = json.loads(raw)
        except ValueError:
            record = raw
        if isinstance(record, dict):
            issued += [v for k, v in record.items() if "token" in k and isinstance(v, str)]
        elif isinstance(record, str) and len(record) >= 12:
            issued.append(record)
    cache.close()
    assert len(issued) >= 3  # the Alta cookie, the RapidSOS token, TrackTik's access and refresh tokens
    planted = [
        PANEL_TOKEN,
        ALTA_TOKEN,
        OPERATOR_KEY,
        METRICS_TOKEN,
        SESSION_SECRET,
        SIGNING_SECRET,
        SIGNING_SECRET.removeprefix("whsec_"),
        signature.split(",", 1)[1],
        CONTACT_NAME,
        CONTACT_PHONE,
        *SANDBOX_CREDENTIALS,
        *issued,
    ]
    logs = deployment.log_text()
    assert len(logs.splitlines()) > 100  # DEBUG logging from every process was captured
    assert f'"alarm_id": {alarm_id}' in logs  # the lines about the alarm carry its id
    leaked = {secret for secret in planted if secret in logs}
    assert not leaked, [line for line in logs.splitlines() if any(s in line for s in leaked)][:5]
