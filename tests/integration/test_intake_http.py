"""The intake endpoints over real loopback HTTP against PostgreSQL: auth (bearer and Standard
Webhooks), every error status, duplicates, the 50-way race, grouping, restore/cancel/fire, unrouted;
and what hostile or odd senders do (issue 16): batches with an odd event, replayed signed deliveries,
the sliding dedupe window, chunked bodies over the limit."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import func, select

from app.domain.actions import DueAction
from app.domain.outbox import RecordingOutbox
from app.ledger.models import Action, Alarm, TimelineEntry
from app.ledger.models import Event as EventRow
from app.web import create_app
from app.web.intake import views as intake_views
from config.settings import Settings
from sandbox.server import serve_in_thread
from tests.sites_fixture import (
    ALTA_TOKEN,
    ALTA_ZONE,
    EXAMPLE_SITES,
    MONTREAL_ACCOUNT,
    NEWTON_ACCOUNT,
    PANEL_TOKEN,
    PANEL_TOKEN_NEXT,
    SIGNING_KEY,
    SIGNING_KEY_OLD,
    SOURCE_ENV,
)

pytestmark = pytest.mark.integration
OPERATOR_KEY = "op-key-0123456789abcdef"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
PANEL = {"Authorization": f"Bearer {PANEL_TOKEN}"}
ALTA = {"Authorization": f"Bearer {ALTA_TOKEN}"}


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1 signature, written independently of the server's library."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_the_reference_signer_matches_the_standard_webhooks_known_answer() -> None:
    # The published test vector of the Standard Webhooks specification (standard-webhooks/libraries).
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


class Bridge:
    """The web app on a real port, with the ledger it writes to."""

    def __init__(self, settings: Settings) -> None:
        self.on_publish: Callable[[DueAction], None] | None = None  # called as each action is sent
        self.outbox = RecordingOutbox(on_publish=self._published)
        self.app = create_app(settings, outbox=self.outbox, ping_broker=lambda: None)
        self.server = serve_in_thread(self.app)
        self.base = self.server.base_url
        self.http = requests.Session()
        self.sessions = self.app.extensions["alarm_bridge"].sessions

    def post(
        self, path: str, body: Any = None, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> requests.Response:
        if body is not None:
            kw["data"] = json.dumps(body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        return self.http.post(self.base + path, headers=headers, timeout=30, **kw)

    def signed(
        self, path: str, body: dict[str, Any], *, key: bytes = SIGNING_KEY, skew_s: int = 0
    ) -> requests.Response:
        raw = json.dumps(body).encode()
        msg_id, ts = f"msg_{uuid.uuid4().hex}", int(time.time()) + skew_s
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(key, msg_id, ts, raw),
        }
        return self.http.post(self.base + path, data=raw, headers=headers, timeout=30)

    def _published(self, due: DueAction) -> None:
        if self.on_publish is not None:
            self.on_publish(due)

    def count(self, model: Any) -> int:
        with self.sessions() as session:
            return int(session.execute(select(func.count()).select_from(model)).scalar_one())

    def alarm(self, alarm_id: int) -> dict[str, Any]:
        response = self.http.get(f"{self.base}/v1/alarms/{alarm_id}", headers=OPERATOR, timeout=10)
        assert response.status_code == 200
        return response.json()

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.app.extensions["alarm_bridge"].engine.dispose()


@pytest.fixture
def make_bridge(make_settings: Callable[..., Settings], postgres_url: str) -> Iterator[Callable[..., Bridge]]:
    bridges: list[Bridge] = []

    def build(**overrides: Any) -> Bridge:
        values: dict[str, Any] = {
            "database_url": postgres_url,
            "sites_file": str(EXAMPLE_SITES),
            "environ": SOURCE_ENV,
            "operator_api_keys": (OPERATOR_KEY,),
            "secret_key": "s" * 32,
            "max_body_bytes": 65_536,
        }
        values.update(overrides)
        bridge = Bridge(make_settings(**values))
        bridges.append(bridge)
        return bridge

    yield build
    for bridge in bridges:
        bridge.close()


@pytest.fixture
def bridge(make_bridge: Callable[..., Bridge]) -> Bridge:
    return make_bridge()


def burglary(**overrides: Any) -> dict[str, Any]:
    body = {
        "account": MONTREAL_ACCOUNT,
        "code": "BA",
        "zone": "3",
        "message": "Front door",
        "occurred_at": datetime.now(UTC).isoformat(),
        "event_id": uuid.uuid4().hex,
    }
    body.update(overrides)
    return body


# -- the endpoints ------------------------------------------------------------------------------


def test_a_panel_event_is_accepted_with_202_and_its_ids(bridge: Bridge) -> None:
    response = bridge.post("/v1/events", burglary(), headers=PANEL)
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"alarm_id", "event_id", "duplicate"} and body["duplicate"] is False
    detail = bridge.alarm(body["alarm_id"])
    assert detail["site"] == "montreal-hq"
    assert [e["event_id"] for e in detail["events"]] == [body["event_id"]]
    assert [d.task_name for d in bridge.outbox.sent] == ["tracktik.create_alarm"]  # after commit, by name


def test_a_nul_character_postgresql_cannot_store_does_not_lose_the_alarm(bridge: Bridge) -> None:
    body = burglary(message="Front\u0000door", extra={"pad\u0000": ["\u0000"]})
    response = bridge.post("/v1/events", body, headers=PANEL)
    assert response.status_code == 202, response.text
    with bridge.sessions() as session:
        row = session.execute(select(EventRow).where(EventRow.id == response.json()["event_id"])).scalar_one()
    assert row.payload["message"] == "Front\ufffddoor"
    assert row.payload["extra"] == {"pad\ufffd": ["\ufffd"]}


def test_callonalarms_trigger_body_is_accepted_unchanged(bridge: Bridge) -> None:
    body = {"accountNumber": MONTREAL_ACCOUNT, "eventCode": "FA", "zone": "Kitchen", "message": "Smoke"}
    response = bridge.post("/v1/events", body, headers=PANEL)
    assert response.status_code == 202
    detail = bridge.alarm(response.json()["alarm_id"])
    assert (detail["code"], detail["family"], detail["zone"]) == ("FA", "fire", "Kitchen")


def test_an_alta_webhook_from_our_template_is_accepted(bridge: Bridge) -> None:
    body = {
        "source": "alta", "alarmZoneId": ALTA_ZONE, "alarmZoneName": "Loading dock", "deviceId": "cam-2",
        "deviceName": "Dock cam", "siteId": "N/A", "triggerPhase": "Alarm", "detection": "Person",
        "verification": "", "timeIso": "2026-11-23T12:00:00Z", "url": "N/A", "extra": "tolerated",
    }  # fmt: skip
    response = bridge.post("/v1/webhooks/alta", body, headers=ALTA)
    assert response.status_code == 202
    detail = bridge.alarm(response.json()["alarm_id"])
    assert detail["events"][0]["occurred_at"].startswith("2026-11-23T12:00:00")
    kinds = [a["kind"] for a in detail["actions"]]
    assert kinds == ["alta.find_ongoing_alert", "tracktik.create_alarm", "callonalarm.trigger"]


def test_the_alta_token_may_come_in_the_url(bridge: Bridge) -> None:
    response = bridge.post(
        f"/v1/webhooks/alta?token={ALTA_TOKEN}", {"alarmZoneId": ALTA_ZONE, "time": "1763899200"}
    )
    assert response.status_code == 202


def test_a_batch_answers_each_event_on_its_own(bridge: Bridge) -> None:
    good, dup = burglary(), burglary(code="FA", zone="9")
    events = [
        good,
        {"account": MONTREAL_ACCOUNT},
        dup,
        dup,
        "not an object",
        burglary(account=NEWTON_ACCOUNT),
    ]
    response = bridge.post("/v1/events:batch", {"events": events}, headers=PANEL)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 422, 202, 200, 422, 202]
    assert [r["index"] for r in results] == list(range(6))
    assert set(results[1]["fields"]) == {"code", "occurred_at"}
    assert results[3]["event_id"] == results[2]["event_id"] and results[3]["duplicate"] is True
    assert bridge.count(EventRow) == 3


def test_a_batch_over_500_events_is_refused_whole(bridge: Bridge) -> None:
    response = bridge.post("/v1/events:batch", {"events": [{"code": "BA"}] * 501}, headers=PANEL)
    assert response.status_code == 422 and "events" in response.json()["fields"]
    assert bridge.count(EventRow) == 0


# -- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [PANEL_TOKEN, PANEL_TOKEN_NEXT])
def test_either_token_of_a_rotation_is_accepted(bridge: Bridge, token: str) -> None:
    assert (
        bridge.post("/v1/events", burglary(), headers={"Authorization": f"Bearer {token}"}).status_code == 202
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-known-token-xxxxxx"}, {"Authorization": f"Basic {PANEL_TOKEN}"}],
    ids=["none", "wrong", "wrong-scheme"],
)
def test_a_missing_or_wrong_credential_is_401_and_stores_nothing(
    bridge: Bridge, headers: dict[str, str]
) -> None:
    for path in ("/v1/events", "/v1/events:batch", "/v1/webhooks/alta"):
        response = bridge.post(path, burglary(), headers=headers)
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthenticated"
    assert bridge.count(EventRow) == 0


def test_a_valid_credential_of_the_wrong_kind_is_403(bridge: Bridge) -> None:
    assert bridge.post("/v1/events", burglary(), headers=ALTA).status_code == 403
    assert bridge.post("/v1/webhooks/alta", {"alarmZoneId": ALTA_ZONE}, headers=PANEL).status_code == 403
    assert bridge.count(EventRow) == 0


def test_an_account_of_a_site_that_does_not_list_the_source_is_403(
    make_bridge: Callable[..., Bridge],
) -> None:
    env = {**SOURCE_ENV, "OTHER_PANELS_TOKEN": "other-panels-token-0123456"}
    sites = (
        EXAMPLE_SITES.read_text()
        + '\n[sources.other-panels]\nkind = "panel"\ntoken_env = "OTHER_PANELS_TOKEN"\n'
    )
    path = EXAMPLE_SITES.parent / f"test-sites-{uuid.uuid4().hex}.toml"
    # A site-less source is refused by the loader only when no site lists it for anything; add one.
    sites += '\n[sites.depot]\nname = "Depot"\nsources = ["other-panels"]\naccounts = ["dp-1"]\n'
    sites += 'timezone = "UTC"\nsite_type = "COMMERCIAL"\nplan = "commercial"\n'
    sites += 'location = { address_line1 = "1 Depot Rd" }\n'
    sites += 'tracktik = { alarm_organization = 1, alarm_type_codes = { default = "1" } }\n'
    sites += 'callonalarm = { account_number = "CA-9" }\n'
    path.write_text(sites)
    try:
        bridge = make_bridge(sites_file=str(path), environ=env)
    finally:
        path.unlink()
    foreign = bridge.post(
        "/v1/events", burglary(), headers={"Authorization": "Bearer other-panels-token-0123456"}
    )
    assert foreign.status_code == 403
    message = foreign.json()["message"]  # another tenant's site is never named
    assert message == f"source 'other-panels' may not post events for account {MONTREAL_ACCOUNT!r}"
    assert "montreal" not in message.lower()
    assert bridge.count(EventRow) == 0


def test_a_signed_event_is_accepted_with_the_current_or_the_rotated_secret(bridge: Bridge) -> None:
    assert bridge.signed("/v1/events", burglary()).status_code == 202
    assert bridge.signed("/v1/events", burglary(), key=SIGNING_KEY_OLD).status_code == 202


@pytest.mark.parametrize(("skew_s", "status"), [(-295, 202), (295, 202), (-305, 401), (305, 401)])
def test_a_signature_is_accepted_within_five_minutes_only(bridge: Bridge, skew_s: int, status: int) -> None:
    assert bridge.signed("/v1/events", burglary(), skew_s=skew_s).status_code == status


def test_a_tampered_body_or_signature_is_401(bridge: Bridge) -> None:
    raw = json.dumps(burglary()).encode()
    ts = int(time.time())
    good = sign(SIGNING_KEY, "msg_1", ts, raw)
    base = {"Content-Type": "application/json", "webhook-id": "msg_1", "webhook-timestamp": str(ts)}
    cases = [
        (raw.replace(b"BA", b"FA"), good),  # body changed after signing
        (raw, good[:-6] + "AAAAA="),  # signature changed
        (raw, "v2," + good[3:]),  # unknown scheme version
        (raw, "garbage"),  # malformed header
        (raw, sign(b"x" * 32, "msg_1", ts, raw)),  # a key nobody configured
    ]
    for body, signature in cases:
        response = bridge.http.post(
            f"{bridge.base}/v1/events",
            data=body,
            headers={**base, "webhook-signature": signature},
            timeout=10,
        )
        assert response.status_code == 401, signature
    several = f"v1,{base64.b64encode(b'0' * 32).decode()} {good}"  # one of several signatures matches
    response = bridge.http.post(
        f"{bridge.base}/v1/events", data=raw, headers={**base, "webhook-signature": several}, timeout=10
    )
    assert response.status_code == 202
    assert bridge.count(EventRow) == 1


# -- errors ---------------------------------------------------------------------------------------


def test_malformed_json_is_400(bridge: Bridge) -> None:
    response = bridge.http.post(
        f"{bridge.base}/v1/events",
        data="{nope",
        headers={**PANEL, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400 and response.json()["error"] == "malformed_json"


def test_a_json_array_body_is_400(bridge: Bridge) -> None:
    assert bridge.post("/v1/events", [burglary()], headers=PANEL).status_code == 400


def test_another_content_type_is_415(bridge: Bridge) -> None:
    response = bridge.http.post(
        f"{bridge.base}/v1/events",
        data=json.dumps(burglary()),
        headers={**PANEL, "Content-Type": "text/plain"},
        timeout=10,
    )
    assert response.status_code == 415


def test_a_body_over_the_limit_is_413(bridge: Bridge) -> None:
    response = bridge.post("/v1/events", burglary(message="x" * 70_000), headers=PANEL)
    assert response.status_code == 413
    assert bridge.count(EventRow) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"code": "B"}, "code"),
        ({"code": None}, "code"),
        ({"account": ""}, "account"),
        ({"account": "has space"}, "account"),
        ({"occurred_at": "2026-11-23T12:00:00"}, "occurred_at"),  # a time without a zone
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"zone": "z" * 65}, "zone"),
        ({"event_id": ""}, "event_id"),
        ({"message": {"nested": True}}, "message"),
    ],
)
def test_an_invalid_field_is_422_naming_it(bridge: Bridge, change: dict[str, Any], field: str) -> None:
    response = bridge.post("/v1/events", burglary(**change), headers=PANEL)
    assert response.status_code == 422
    assert field in response.json()["fields"]
    assert bridge.count(EventRow) == 0


def test_an_alta_webhook_without_its_zone_is_422(bridge: Bridge) -> None:
    response = bridge.post("/v1/webhooks/alta", {"alarmZoneId": "N/A", "deviceId": "cam"}, headers=ALTA)
    assert response.status_code == 422 and "alarmZoneId" in response.json()["fields"]


# -- duplicates and the race ----------------------------------------------------------------------


def test_a_repeat_answers_200_with_the_same_ids(bridge: Bridge) -> None:
    body = burglary()
    first = bridge.post("/v1/events", body, headers=PANEL)
    again = bridge.post("/v1/events", body, headers=PANEL)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == {**first.json(), "duplicate": True}
    assert len(bridge.outbox.sent) == 1  # nothing sent twice


def test_fifty_concurrent_posts_of_one_event_make_one_event_and_one_alarm(bridge: Bridge) -> None:
    body = burglary()
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: bridge.post("/v1/events", body, headers=PANEL), range(50)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 49 + [202]
    assert len({(a.json()["alarm_id"], a.json()["event_id"]) for a in answers}) == 1
    assert (bridge.count(EventRow), bridge.count(Alarm), bridge.count(Action)) == (1, 1, 2)
    assert len(bridge.outbox.sent) == 1


# -- grouping, restore, cancel, fire, unrouted ----------------------------------------------------


def test_repeats_group_into_the_open_alarm(bridge: Bridge) -> None:
    first = bridge.post("/v1/events", burglary(), headers=PANEL).json()
    second = bridge.post("/v1/events", burglary(), headers=PANEL).json()
    assert second["alarm_id"] == first["alarm_id"] and second["event_id"] != first["event_id"]
    assert bridge.alarm(first["alarm_id"])["event_count"] == 2
    assert bridge.count(Action) == 2  # no second plan


def test_restore_is_not_cancel_but_a_user_opening_is_and_fire_is_never_held(bridge: Bridge) -> None:
    burglar = bridge.post("/v1/events", burglary(), headers=PANEL).json()["alarm_id"]
    fire = bridge.post("/v1/events", burglary(code="FA", zone="12"), headers=PANEL).json()["alarm_id"]

    bridge.post("/v1/events", burglary(code="BR"), headers=PANEL)  # the door closed again
    detail = bridge.alarm(burglar)
    assert detail["restored_at"] is not None
    assert {a["kind"]: a["state"] for a in detail["actions"]}["callonalarm.trigger"] == "pending"

    bridge.post("/v1/events", burglary(code="OP", zone="1"), headers=PANEL)  # the owner disarms
    stood_down = bridge.alarm(burglar)  # nothing had left (no worker here): it all stops, it ends
    states = {a["kind"]: a["state"] for a in stood_down["actions"]}
    assert states == {"tracktik.create_alarm": "cancelled", "callonalarm.trigger": "cancelled"}
    assert (stood_down["state"], stood_down["outcome"]) == ("ended", "cancelled")
    assert {a["state"] for a in bridge.alarm(fire)["actions"]} == {"queued"}
    assert bridge.alarm(fire)["state"] == "open"


def test_an_unrouted_event_is_kept_and_listed_for_a_person(bridge: Bridge) -> None:
    response = bridge.post("/v1/events", burglary(account="panel-nobody-knows"), headers=PANEL)
    assert response.status_code == 202
    listed = bridge.http.get(f"{bridge.base}/v1/alarms?unrouted=true", headers=OPERATOR, timeout=10).json()[
        "alarms"
    ]
    assert [a["id"] for a in listed] == [response.json()["alarm_id"]]
    assert listed[0]["needs_person"] is True and listed[0]["routed"] is False
    assert bridge.outbox.sent == []
    metrics = bridge.http.get(f"{bridge.base}/metrics", timeout=10).text
    assert "alarm_bridge_unrouted_open_alarms 1.0" in metrics
    assert 'alarm_bridge_open_alarms{family="burglary",priority="property",routed="false"} 1.0' in metrics


def test_the_queue_lists_life_safety_first(bridge: Bridge) -> None:
    burglar = bridge.post("/v1/events", burglary(), headers=PANEL).json()["alarm_id"]
    fire = bridge.post("/v1/events", burglary(code="FA", zone="2"), headers=PANEL).json()["alarm_id"]
    listed = bridge.http.get(f"{bridge.base}/v1/alarms", headers=OPERATOR, timeout=10).json()["alarms"]
    assert [a["id"] for a in listed] == [fire, burglar]


def test_the_openapi_document_and_its_page_are_served(bridge: Bridge) -> None:
    spec = bridge.http.get(f"{bridge.base}/openapi.json", timeout=10).json()
    assert {"/v1/events", "/v1/events:batch", "/v1/webhooks/alta"} <= set(spec["paths"])
    alarm = "/v1/alarms/{alarm_id}"
    operator = {"/v1/alarms", alarm, f"{alarm}/verify", f"{alarm}/end", f"{alarm}/acknowledge"}
    assert operator | {"/v1/actions/{action_id}/retry"} <= set(spec["paths"])
    assert "occurred_at" in spec["components"]["schemas"]["PanelEvent"]["properties"]
    page = bridge.http.get(f"{bridge.base}/docs", timeout=10)
    assert page.status_code == 200 and "/v1/events:batch" in page.text


# -- hostile and odd input (issue 16) -------------------------------------------------------------


def signed_headers(raw: bytes, msg_id: str | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one delivery (real time: the signature must verify)."""
    msg_id, ts = msg_id or f"msg_{uuid.uuid4().hex}", int(time.time())
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(SIGNING_KEY, msg_id, ts, raw),
    }


class Clock:
    """The receive time intake stamps on events (``views.utcnow``), moved by the test."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """At second 296 of a 300 s bucket: where fixed buckets split a body from its replay 6 s later."""
    now = time.time()
    clock = Clock(datetime.fromtimestamp(now - now % 300 + 296, UTC))
    monkeypatch.setattr(intake_views, "utcnow", clock)
    return clock


def committed_when_sent(bridge: Bridge) -> dict[int, int]:
    """For each action handed to the outbox: how many events were committed at that moment."""
    seen: dict[int, int] = {}
    bridge.on_publish = lambda due: seen.setdefault(due.id, bridge.count(EventRow))
    return seen


def actions_by_alarm(bridge: Bridge) -> dict[int, set[int]]:
    with bridge.sessions() as session:
        rows = session.execute(select(Action.alarm_id, Action.id)).all()
    found: dict[int, set[int]] = {}
    for alarm_id, action_id in rows:
        found.setdefault(alarm_id, set()).add(action_id)
    return found


def test_a_batch_with_an_impossible_time_answers_every_event_and_sends_each_after_its_commit(
    bridge: Bridge,
) -> None:
    sent = committed_when_sent(bridge)
    test = burglary(code="RX", zone="0", occurred_at="0001-01-01T00:00:00+14:00")
    del test["event_id"]  # recognised on a retry by its content, within the dedupe window
    events = [burglary(code="FA", zone="1"), test, burglary(code="FA", zone="2")]
    response = bridge.post("/v1/events:batch", {"events": events}, headers=PANEL)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 202, 202]
    first, second = results[0]["alarm_id"], results[2]["alarm_id"]
    by_alarm = actions_by_alarm(bridge)
    # Each fire alarm's steps left right after its own commit: the first before the others existed.
    assert {sent[a] for a in by_alarm[first]} == {1}
    assert {sent[a] for a in by_alarm[second]} == {3}
    assert {d.id for d in bridge.outbox.sent} == by_alarm[first] | by_alarm[second]
    with bridge.sessions() as session:
        row = session.get_one(EventRow, results[1]["event_id"])
    assert row.occurred_at is None and row.payload["occurred_at"] == "0001-01-01T00:00:00+14:00"

    again = bridge.post("/v1/events:batch", {"events": events}, headers=PANEL).json()["results"]
    assert [r["status"] for r in again] == [200, 200, 200]
    assert [(r["event_id"], r["duplicate"]) for r in again] == [(r["event_id"], True) for r in results]
    assert bridge.count(EventRow) == 3 and len(bridge.outbox.sent) == len(sent)


def test_a_batch_with_nan_and_a_lone_surrogate_records_every_event(bridge: Bridge) -> None:
    sent = committed_when_sent(bridge)
    events = [
        burglary(code="FA", zone="1"),
        burglary(
            zone="4", gateway={"rssi": float("nan"), "gain": float("inf")}
        ),  # PostgreSQL's json refuses NaN
        burglary(zone="5", message="Back door \udc00", **{"note\ud800": ["\udfff"]}),
        burglary(code="FA", zone="2"),
    ]
    raw = json.dumps({"events": events})
    assert "NaN" in raw and "\\udc00" in raw  # the odd values really are on the wire
    response = bridge.post("/v1/events:batch", {"events": events}, headers=PANEL)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 202, 202, 202]
    by_alarm = actions_by_alarm(bridge)
    assert {sent[a] for a in by_alarm[results[0]["alarm_id"]]} == {1}
    assert {sent[a] for a in by_alarm[results[3]["alarm_id"]]} == {4}
    with bridge.sessions() as session:
        odd = session.get_one(EventRow, results[1]["event_id"])
        surrogate = session.get_one(EventRow, results[2]["event_id"])
    assert odd.payload["gateway"] == {"rssi": "NaN", "gain": "Infinity"}  # kept as the sender wrote them
    assert surrogate.payload["message"] == "Back door \ufffd"
    assert surrogate.payload["note\ufffd"] == ["\ufffd"]
    again = bridge.post("/v1/events:batch", {"events": events}, headers=PANEL).json()["results"]
    assert [r["status"] for r in again] == [200] * 4


def test_an_event_the_ledger_refuses_is_its_own_422_and_an_error_of_ours_its_own_500(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import DataError

    real = intake_views.intake.record_event

    def record_event(session: Any, event: Any, **kw: Any) -> Any:
        if event.zone == "refused":
            raise DataError("INSERT ...", {}, ValueError("value out of range"))
        if event.zone == "bug":
            raise KeyError("a bug of ours")
        return real(session, event, **kw)

    monkeypatch.setattr(intake_views.intake, "record_event", record_event)
    events = [burglary(zone="1"), burglary(zone="refused"), burglary(zone="bug"), burglary(zone="2")]
    results = bridge.post("/v1/events:batch", {"events": events}, headers=PANEL).json()["results"]
    assert [r["status"] for r in results] == [202, 422, 500, 202]
    assert results[1]["error"] == "unstorable_value"
    assert results[2]["error"] == "internal_error" and "request id" in results[2]["message"]
    assert bridge.count(EventRow) == 2
    single = bridge.post("/v1/events", burglary(zone="refused"), headers=PANEL)
    assert single.status_code == 422 and single.json()["error"] == "unstorable_value"


def test_a_replayed_signed_delivery_is_a_duplicate_6_seconds_and_9_minutes_later(
    bridge: Bridge, clock: Clock
) -> None:
    # CallOnAlarm's body: no event id, no time, so only the delivery itself can be recognised.
    raw = json.dumps({"accountNumber": MONTREAL_ACCOUNT, "eventCode": "BA", "zone": "3"}).encode()
    captured = signed_headers(raw)
    first = bridge.http.post(f"{bridge.base}/v1/events", data=raw, headers=captured, timeout=10)
    assert first.status_code == 202, first.text
    for seconds in (6, 9 * 60 - 6):  # across the bucket boundary; past the dedupe window
        clock.advance(seconds)
        replay = bridge.http.post(f"{bridge.base}/v1/events", data=raw, headers=captured, timeout=10)
        assert replay.status_code == 200, replay.text
        assert replay.json() == {**first.json(), "duplicate": True}
    assert (bridge.count(EventRow), bridge.count(Alarm)) == (1, 1)
    assert len(bridge.outbox.sent) == 1  # one TrackTik dispatch

    # A new delivery of the same words after the window is a new event: ids, not bodies, last.
    fresh = bridge.http.post(f"{bridge.base}/v1/events", data=raw, headers=signed_headers(raw), timeout=10)
    assert fresh.status_code == 202 and fresh.json()["event_id"] != first.json()["event_id"]


def test_a_replayed_signed_batch_is_duplicates_9_minutes_later(bridge: Bridge, clock: Clock) -> None:
    events = [{"accountNumber": MONTREAL_ACCOUNT, "eventCode": code, "zone": "3"} for code in ("BA", "FA")]
    raw = json.dumps({"events": events}).encode()
    captured = signed_headers(raw)
    first = bridge.http.post(f"{bridge.base}/v1/events:batch", data=raw, headers=captured, timeout=10)
    assert [r["status"] for r in first.json()["results"]] == [202, 202]
    clock.advance(9 * 60)
    replay = bridge.http.post(f"{bridge.base}/v1/events:batch", data=raw, headers=captured, timeout=10)
    assert [r["status"] for r in replay.json()["results"]] == [200, 200]
    assert bridge.count(EventRow) == 2


def test_content_dedupe_slides_across_the_bucket_boundary(bridge: Bridge, clock: Clock) -> None:
    body = {"accountNumber": MONTREAL_ACCOUNT, "eventCode": "BA", "zone": "3", "message": "Front door"}
    first = bridge.post("/v1/events", body, headers=PANEL)
    assert first.status_code == 202
    clock.advance(6)  # second 302: the next fixed bucket, the same sliding window
    again = bridge.post("/v1/events", body, headers=PANEL)
    assert again.status_code == 200 and again.json()["event_id"] == first.json()["event_id"]
    clock.advance(300 - 6 + 1)  # 301 s after the recorded one: outside its window
    later = bridge.post("/v1/events", body, headers=PANEL)
    assert later.status_code == 202 and later.json()["event_id"] != first.json()["event_id"]


def test_fifty_concurrent_posts_of_a_body_without_id_or_time_make_one_event(bridge: Bridge) -> None:
    body = {"accountNumber": MONTREAL_ACCOUNT, "eventCode": "BA", "zone": "7"}
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: bridge.post("/v1/events", body, headers=PANEL), range(50)))
    assert sorted(a.status_code for a in answers) == [200] * 49 + [202]
    assert (bridge.count(EventRow), bridge.count(Alarm)) == (1, 1)


def post_chunked(bridge: Bridge, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST with ``Transfer-Encoding: chunked`` (no Content-Length) over real loopback HTTP."""
    url = urlsplit(bridge.base)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        chunks = (body[i : i + 65_536] for i in range(0, len(body), 65_536))
        connection.request(
            "POST", path, body=chunks, headers={**headers, "Content-Type": "application/json"},
            encode_chunked=True,
        )  # fmt: skip
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events:batch", "/v1/webhooks/alta"])
def test_a_chunked_body_over_the_limit_is_413(make_bridge: Callable[..., Bridge], path: str) -> None:
    limit = 1_048_576
    bridge = make_bridge(max_body_bytes=limit)
    headers, valid = {
        "/v1/events": (PANEL, burglary()),
        "/v1/events:batch": (PANEL, {"events": [burglary()]}),
        "/v1/webhooks/alta": (ALTA, {"alarmZoneId": ALTA_ZONE, "timeIso": "2026-11-23T12:00:00Z"}),
    }[path]
    event = json.dumps(valid).encode()
    # A valid event, padding to the limit, then garbage: cut at the limit it would parse.
    body = event + b" " * (limit - len(event)) + b"garbage!" * 20_000
    assert len(body) > 1_200_000
    status, answer = post_chunked(bridge, path, body, headers)
    assert (status, answer["error"]) == (413, "request_entity_too_large")
    assert bridge.count(EventRow) == 0


def test_a_signed_chunked_body_over_the_limit_is_413(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge(max_body_bytes=65_536)
    event = json.dumps(burglary()).encode()
    body = event + b" " * (65_536 - len(event)) + b"garbage!" * 100
    status, _ = post_chunked(bridge, "/v1/events", body, signed_headers(body))
    assert status == 413 and bridge.count(EventRow) == 0


def test_a_chunked_body_of_exactly_the_limit_is_read_whole(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge(max_body_bytes=65_536)
    event = json.dumps(burglary()).encode()
    status, answer = post_chunked(bridge, "/v1/events", event + b" " * (65_536 - len(event)), PANEL)
    assert status == 202, answer
    assert answer["duplicate"] is False


def test_an_operator_command_sent_chunked_is_read_not_taken_as_empty(
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge(max_body_bytes=65_536)
    alarm_id = bridge.post("/v1/events", burglary(), headers=PANEL).json()["alarm_id"]
    body = json.dumps({"outcome": "false_alarm"}).encode()
    status, too_big = post_chunked(bridge, f"/v1/alarms/{alarm_id}/end", body + b" " * 70_000, OPERATOR)
    assert (status, too_big["error"]) == (413, "request_entity_too_large")
    status, ended = post_chunked(bridge, f"/v1/alarms/{alarm_id}/end", body, OPERATOR)
    assert status == 200 and (ended["state"], ended["outcome"]) == ("ended", "false_alarm")


def test_an_impossible_sender_time_is_dropped_with_a_note_on_the_alarm(bridge: Bridge) -> None:
    response = bridge.post("/v1/events", burglary(occurred_at="9999-12-31T23:59:59-14:00"), headers=PANEL)
    assert response.status_code == 202, response.text
    with bridge.sessions() as session:
        notes = session.execute(
            select(TimelineEntry.kind, TimelineEntry.message).where(
                TimelineEntry.alarm_id == response.json()["alarm_id"]
            )
        ).all()
    dropped = [message for kind, message in notes if kind == "event.sender_time_dropped"]
    assert len(dropped) == 1 and "9999-12-31T23:59:59-14:00" in dropped[0]
