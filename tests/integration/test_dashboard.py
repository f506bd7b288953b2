"""The operator dashboard over the Flask test client, on both ledgers: signing in, the queue and its
lists, an alarm's page, escaping of what senders wrote, and the CSRF rule the operator API applies
to a dashboard session."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import marshmallow as ma
import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from app.domain.outbox import RecordingOutbox
from app.ledger.models import Action, ActionState, Alarm
from app.web import create_app
from app.web.operator.schemas import EndRequestSchema
from config.settings import Settings
from tests.sites_fixture import (
    ALTA_TOKEN,
    ALTA_ZONE,
    EXAMPLE_SITES,
    MONTREAL_ACCOUNT,
    PANEL_TOKEN,
    SOURCE_ENV,
)

pytestmark = pytest.mark.integration
KEY = "test-operator-key"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
ROW_IDS = re.compile(r'data-alarm-id="(\d+)"')
MILLISECOND_CLOCK = re.compile(r">\d\d:\d\d:\d\d\.\d{3}<")


class Console:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings, outbox=RecordingOutbox(), ping_broker=lambda: None)
        self.client: FlaskClient = self.app.test_client()
        self.sessions = self.app.extensions["alarm_bridge"].sessions

    def sign_in(self, key: str = KEY) -> str:
        """Sign in through the form; the CSRF token the pages hand their script."""
        response = self.client.post("/dashboard/login", data={"key": key})
        assert response.status_code == 302, response.text
        return csrf_of(self.client.get("/dashboard/"))

    def panel(self, code: str, **kw: Any) -> int:
        body = {"account": MONTREAL_ACCOUNT, "code": code, "zone": "3"}
        body.update(occurred_at=datetime.now(UTC).isoformat(), **kw)
        response = self.client.post(
            "/v1/events", json=body, headers={"Authorization": f"Bearer {PANEL_TOKEN}"}
        )
        assert response.status_code == 202, response.text
        return int(response.json["alarm_id"])

    def alta(self, **kw: Any) -> int:
        response = self.client.post(
            "/v1/webhooks/alta",
            json={"alarmZoneId": ALTA_ZONE, **kw},
            headers={"Authorization": f"Bearer {ALTA_TOKEN}"},
        )
        assert response.status_code == 202, response.text
        return int(response.json["alarm_id"])

    def add_alarm(self, priority: str, opened_at: datetime, **kw: Any) -> int:
        with self.sessions.begin() as session:
            alarm = Alarm(
                site_key=kw.pop("site_key", "montreal-hq"),
                account="ab-95367",
                zone="1",
                family="burglary",
                priority=priority,
                description=f"a {priority} alarm",
                opened_at=opened_at,
                last_event_at=opened_at,
                **kw,
            )
            session.add(alarm)
            session.flush()
            return alarm.id

    def change_alarm(self, alarm_id: int, **values: Any) -> None:
        with self.sessions.begin() as session:
            alarm = session.get_one(Alarm, alarm_id)
            for name, value in values.items():
                setattr(alarm, name, value)

    def fail_first_action(self, alarm_id: int, error: str) -> int:
        with self.sessions.begin() as session:
            action = session.execute(
                select(Action).where(Action.alarm_id == alarm_id).order_by(Action.id).limit(1)
            ).scalar_one()
            action.state = ActionState.FAILED
            action.attempts = action.max_attempts
            action.last_error = error
            action.external_id = "ext-4411"
            return action.id


def csrf_of(page: TestResponse) -> str:
    found = CSRF_META.search(page.text)
    assert found and found.group(1), "the page carries no CSRF token"
    return found.group(1)


@pytest.fixture
def make_console(
    make_settings: Callable[..., Settings], database_url: str
) -> Iterator[Callable[..., Console]]:
    consoles: list[Console] = []

    def build(**overrides: Any) -> Console:
        values: dict[str, Any] = {
            "database_url": database_url,
            "sites_file": str(EXAMPLE_SITES),
            "environ": SOURCE_ENV,
            "operator_api_keys": (KEY,),
        }
        consoles.append(Console(make_settings(**{**values, **overrides})))
        return consoles[-1]

    yield build
    for console in consoles:
        console.app.extensions["alarm_bridge"].engine.dispose()


@pytest.fixture
def console(make_console: Callable[..., Console]) -> Console:
    return make_console()


# -- signing in ------------------------------------------------------------------------------------


def test_the_root_and_every_page_send_a_signed_out_browser_to_the_sign_in_form(console: Console) -> None:
    assert console.client.get("/").headers["Location"] == "/dashboard/"
    for path in (
        "/dashboard/",
        "/dashboard/needs-person",
        "/dashboard/unrouted",
        "/dashboard/failed",
        "/dashboard/alarms/1",
    ):
        response = console.client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/dashboard/login?next=")
    for fragment in ("/dashboard/queue/rows", "/dashboard/alarms/1/live"):
        assert console.client.get(fragment).status_code == 401  # the script reloads into the form


def test_a_wrong_key_is_refused_with_401_and_signs_nobody_in(console: Console) -> None:
    response = console.client.post("/dashboard/login", data={"key": "not-the-key"})
    assert response.status_code == 401
    assert "not valid" in response.text
    assert console.client.get("/dashboard/").status_code == 302
    assert console.client.post("/dashboard/login", data={}).status_code == 401


def test_the_right_key_signs_in_and_returns_to_the_page_asked_for(console: Console) -> None:
    alarm_id = console.panel("BA")
    asked = console.client.get(f"/dashboard/alarms/{alarm_id}").headers["Location"]
    response = console.client.post(asked, data={"key": KEY})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/dashboard/alarms/{alarm_id}"
    assert console.client.get(f"/dashboard/alarms/{alarm_id}").status_code == 200
    assert console.client.get("/dashboard/login").headers["Location"] == "/dashboard/"
    cookie = console.client.get_cookie("session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Strict"


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/v1/alarms", "/\\evil.example"]
)
def test_sign_in_never_redirects_out_of_the_dashboard(console: Console, target: str) -> None:
    response = console.client.post("/dashboard/login", data={"key": KEY, "next": target})
    assert response.headers["Location"] == "/dashboard/"


@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/\r\nSet-Cookie: taken=1",
        "/dashboard/\nx",
        "/dashboard/\tx",
        "/dashboard/\x00",
        "/dashboard/\x85",
    ],
)
def test_a_control_character_in_next_is_refused_and_signs_nobody_in(console: Console, target: str) -> None:
    for response in (
        console.client.post("/dashboard/login", data={"key": KEY, "next": target}),
        console.client.get("/dashboard/login", query_string={"next": target}),
    ):
        assert response.status_code == 400
        assert "Set-Cookie" not in response.headers
        assert "not valid" in response.text
    assert console.client.get_cookie("session") is None
    assert console.client.get("/dashboard/").status_code == 302


def test_signing_out_needs_the_csrf_token(console: Console) -> None:
    token = console.sign_in()
    console.client.post("/dashboard/logout", data={})
    assert console.client.get("/dashboard/").status_code == 200  # a forged sign-out does nothing
    console.client.post("/dashboard/logout", data={"csrf": token})
    assert console.client.get("/dashboard/").status_code == 302


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(console: Console) -> None:
    alarm_id = console.panel("BA")
    token = console.sign_in()
    cookie = console.client.get_cookie("session")
    assert cookie is not None
    copy = console.app.test_client()  # the same cookie, elsewhere (stolen, or another tab)
    copy.set_cookie("session", cookie.value)
    assert copy.get("/dashboard/").status_code == 200

    console.client.post("/dashboard/logout", data={"csrf": token})

    assert copy.get("/dashboard/").status_code == 302
    assert copy.get("/dashboard/queue/rows").status_code == 401
    refused = copy.post(f"/v1/alarms/{alarm_id}/acknowledge", json={}, headers={"X-CSRF-Token": token})
    assert refused.status_code == 401
    assert copy.get("/v1/alarms", headers={"X-CSRF-Token": token}).status_code == 401


@pytest.fixture
def shared_redis(redis_url: str) -> Iterator[dict[str, str]]:
    """Settings of one deployment's Redis (under a prefix of its own): its web processes share it."""
    prefix = f"abdash:{uuid.uuid4().hex[:10]}:"
    yield {"redis_url": redis_url, "broker_key_prefix": prefix}
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_removing_the_key_that_signed_in_signs_its_sessions_out(
    make_console: Callable[..., Console], shared_redis: dict[str, str]
) -> None:
    shared = shared_redis  # each console is another web process of the same deployment
    first = make_console(operator_api_keys=(KEY, "other-operator-key"), **shared)
    first.sign_in()
    cookie = first.client.get_cookie("session")
    assert cookie is not None
    for keys, status in (((KEY,), 200), (("other-operator-key",), 302)):
        later = make_console(operator_api_keys=keys, **shared)
        later.client.set_cookie("session", cookie.value)
        assert later.client.get("/dashboard/").status_code == status


def test_pages_refuse_framing_and_inline_script(console: Console) -> None:
    console.sign_in()
    response = console.client.get("/dashboard/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    with console.client.get("/dashboard/static/dashboard.js") as script:  # a file: closed here
        assert script.status_code == 200


# -- the operator API with a dashboard session ------------------------------------------------------


def test_the_api_takes_a_dashboard_session_only_with_its_csrf_header(console: Console) -> None:
    alarm_id = console.panel("BA")
    token = console.sign_in()
    path = f"/v1/alarms/{alarm_id}/acknowledge"
    assert console.client.post(path, json={}).status_code == 401  # the cookie alone
    assert console.client.post(path, json={}, headers={"X-CSRF-Token": "forged"}).status_code == 401
    assert console.client.get("/v1/alarms").status_code == 401
    response = console.client.post(path, json={}, headers={"X-CSRF-Token": token})
    assert response.status_code == 200 and response.json["acknowledged_at"] is not None
    assert console.client.get("/v1/alarms", headers={"X-CSRF-Token": token}).status_code == 200


def test_a_csrf_header_without_a_session_is_refused_and_the_bearer_key_still_works(console: Console) -> None:
    alarm_id = console.panel("BA")
    token = console.sign_in()
    stranger = console.app.test_client()  # no cookie
    path = f"/v1/alarms/{alarm_id}/verify"
    assert stranger.post(path, json={"verdict": "valid"}, headers={"X-CSRF-Token": token}).status_code == 401
    response = stranger.post(path, json={"verdict": "valid"}, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200 and response.json["verification"] == "valid"
    wrong = stranger.post(path, json={"verdict": "valid"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


# -- the queue and its lists -----------------------------------------------------------------------


def test_the_queue_puts_life_safety_first_then_priority_then_oldest_first(console: Console) -> None:
    now = datetime.now(UTC)
    informational = console.add_alarm("informational", now - timedelta(minutes=50))
    old_property = console.add_alarm("property", now - timedelta(minutes=40))
    technical = console.add_alarm("technical", now - timedelta(minutes=30))
    new_property = console.add_alarm("property", now - timedelta(minutes=20))
    life_safety = console.add_alarm("life_safety", now - timedelta(minutes=1))
    ended = console.add_alarm("life_safety", now - timedelta(minutes=60), state="ended", outcome="test")
    console.sign_in()
    page = console.client.get("/dashboard/")
    order = [int(i) for i in ROW_IDS.findall(page.text)]
    assert order == [life_safety, old_property, new_property, technical, informational]
    assert ended not in order
    assert ">40 min<" in page.text
    fragment = console.client.get("/dashboard/queue/rows?list=queue")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert [int(i) for i in ROW_IDS.findall(fragment.text)] == order


def test_the_lists_show_alarms_for_a_person_unrouted_ones_and_failed_steps(console: Console) -> None:
    routed = console.panel("BA")
    unrouted = console.panel("BA", account="nobody-knows-me")
    failed_action = console.fail_first_action(routed, "TrackTik said 422: alarm type unknown")
    console.sign_in()

    def listed(name: str) -> list[int]:
        return [
            int(i) for i in ROW_IDS.findall(console.client.get(f"/dashboard/queue/rows?list={name}").text)
        ]

    assert listed("needs_person") == [unrouted]
    assert listed("unrouted") == [unrouted]
    assert sorted(listed("queue")) == sorted([routed, unrouted])
    failed = console.client.get("/dashboard/failed").text
    assert "TrackTik said 422: alarm type unknown" in failed
    assert f'data-url="/v1/actions/{failed_action}/retry"' in failed
    assert console.client.get("/dashboard/queue/rows?list=nope").status_code == 404
    page = console.client.get("/dashboard/needs-person").text
    assert "unrouted: no site claims" in page


def _burglary_with_a_guard_dispatched(console: Console, tracktik_alarm_id: int) -> int:
    """A burglary whose TrackTik dispatch was created (its step succeeded, its ref recorded)."""
    burglary = console.panel("BA")
    with console.sessions.begin() as session:
        step = session.execute(
            select(Action).where(Action.alarm_id == burglary, Action.kind == "tracktik.create_alarm")
        ).scalar_one()
        step.state = ActionState.SUCCEEDED
        session.get_one(Alarm, burglary).refs = {"tracktik_alarm_id": tracktik_alarm_id}
    return burglary


def test_a_panel_cancel_with_a_guard_on_the_road_is_on_the_needs_a_person_list(console: Console) -> None:
    burglary = _burglary_with_a_guard_dispatched(console, 4242)
    console.panel("BC", zone="12")
    console.sign_in()

    rows = console.client.get("/dashboard/queue/rows?list=needs_person").text
    assert [int(i) for i in ROW_IDS.findall(rows)] == [burglary]
    assert "cancelled at the panel — TrackTik dispatch 4242 is active: cancel it there" in rows
    assert (
        "cancelled at the panel — TrackTik dispatch 4242 is active"
        in console.client.get(f"/dashboard/alarms/{burglary}").text
    )


# -- one alarm -------------------------------------------------------------------------------------


def test_an_alarm_page_shows_steps_upstream_ids_video_and_a_timeline_to_the_millisecond(
    console: Console,
) -> None:
    alarm_id = console.alta(description="Person at the loading dock")
    action_id = console.fail_first_action(alarm_id, "CallOnAlarm answered 503")
    console.change_alarm(
        alarm_id,
        refs={
            "alta_alert_guid": "guid-7f3a",
            "tracktik_dispatch_task_id": 9912,
            "callonalarm_alert_id": "coa-55",
            "rapidsos_alert_id": "rsos-81",
            "video_links": ["https://alta.example/cloud?t=abc"],
            "alta_merged": False,
        },
    )
    console.sign_in()
    page = console.client.get(f"/dashboard/alarms/{alarm_id}")
    assert page.status_code == 200
    text = page.text
    for expected in ("guid-7f3a", "9912", "coa-55", "rsos-81", "Person at the loading dock", "ext-4411"):
        assert expected in text
    assert 'href="https://alta.example/cloud?t=abc" target="_blank" rel="noopener noreferrer"' in text
    assert "CallOnAlarm answered 503" in text
    assert f'data-url="/v1/actions/{action_id}/retry"' in text
    assert MILLISECOND_CLOCK.search(text)
    assert f'data-url="/v1/alarms/{alarm_id}/verify"' in text
    live = console.client.get(f"/dashboard/alarms/{alarm_id}/live")
    assert live.status_code == 200 and 'id="status"' in live.text and 'id="actions"' in live.text


def test_what_senders_wrote_is_escaped_and_odd_links_are_not_clickable(console: Console) -> None:
    attack = "<script>alert('x')</script>"
    alarm_id = console.panel("BA", message=attack, zone="<b>3</b>")
    alta_id = console.alta(alarmZoneName="<img src=x onerror=alert(1)>", description=attack)
    console.change_alarm(alta_id, refs={"video_links": ["javascript:alert(1)"], "note": "<i>hi</i>"})
    console.sign_in()
    for path in (f"/dashboard/alarms/{alarm_id}", f"/dashboard/alarms/{alta_id}", "/dashboard/"):
        text = console.client.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text and "<b>3</b>" not in text, path
    alta_page = console.client.get(f"/dashboard/alarms/{alta_id}").text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in alta_page
    assert 'href="javascript:' not in alta_page
    assert "javascript:alert(1)" in alta_page  # shown as text for a person to judge
    assert "&lt;i&gt;hi&lt;/i&gt;" in alta_page


def test_a_missing_alarm_is_404(console: Console) -> None:
    console.sign_in()
    assert console.client.get("/dashboard/alarms/999999").status_code == 404
    assert console.client.get("/dashboard/alarms/999999/live").status_code == 404
    # Beyond the ledger's integer range: still a 404, never a database error.
    assert console.client.get(f"/dashboard/alarms/{2**63}").status_code == 404
    assert console.client.get(f"/dashboard/alarms/{2**63}/live").status_code == 404


def test_the_end_outcomes_offered_are_the_ones_the_api_accepts(console: Console) -> None:
    alarm_id = console.panel("BA")
    console.sign_in()
    offered = re.findall(
        r'<option value="([^"]*)">', console.client.get(f"/dashboard/alarms/{alarm_id}").text
    )
    [one_of] = [
        v for v in EndRequestSchema().fields["outcome"].validators if isinstance(v, ma.validate.OneOf)
    ]
    assert offered == ["", *one_of.choices]


def test_an_ended_alarm_page_offers_no_commands(console: Console) -> None:
    alarm_id = console.panel("BA")
    token = console.sign_in()
    console.client.post(
        f"/v1/alarms/{alarm_id}/end", json={"outcome": "test"}, headers={"X-CSRF-Token": token}
    )
    text = console.client.get(f"/dashboard/alarms/{alarm_id}").text
    assert 'data-state="ended"' in text and "outcome: test" in text
    assert text.count("disabled>") >= 4


def test_an_ended_alarm_with_a_guard_to_recall_stays_listed_and_takes_only_acknowledge(
    console: Console,
) -> None:
    burglary = _burglary_with_a_guard_dispatched(console, 4243)
    token = console.sign_in()
    ended = console.client.post(
        f"/v1/alarms/{burglary}/end", json={"outcome": "false_alarm"}, headers={"X-CSRF-Token": token}
    )
    assert ended.status_code == 200

    def listed(name: str) -> list[int]:
        rows = console.client.get(f"/dashboard/queue/rows?list={name}").text
        return [int(i) for i in ROW_IDS.findall(rows)]

    assert listed("needs_person") == [burglary] and listed("queue") == [burglary]
    rows = console.client.get("/dashboard/queue/rows?list=needs_person").text
    assert "ended (false_alarm) — TrackTik dispatch 4243 is active: cancel it there" in rows
    assert "needs a person" in rows and "false alarm" in rows
    page = console.client.get(f"/dashboard/alarms/{burglary}").text
    assert 'data-state="ended" data-needs-person="true"' in page
    [acknowledge] = re.findall(r'<button[^>]*data-command="acknowledge"[^>]*>', page)
    assert "disabled" not in acknowledge
    assert page.count("disabled>") == 4  # verify twice, the outcome and End

    acknowledged = console.client.post(
        f"/v1/alarms/{burglary}/acknowledge", json={}, headers={"X-CSRF-Token": token}
    )
    assert acknowledged.status_code == 200 and acknowledged.json["outcome"] == "false_alarm"
    assert listed("needs_person") == [] and listed("queue") == []
    page = console.client.get(f"/dashboard/alarms/{burglary}").text
    assert 'data-needs-person="false"' in page and page.count("disabled>") == 5


def test_settings_without_operator_keys_let_nobody_sign_in(make_console: Callable[..., Console]) -> None:
    console = make_console(operator_api_keys=())
    assert console.client.post("/dashboard/login", data={"key": ""}).status_code == 401
    assert console.client.post("/dashboard/login", data={"key": KEY}).status_code == 401


# -- supervision -----------------------------------------------------------------------------------


def test_the_supervision_tab_shows_each_supervised_accounts_last_contact_and_its_troubles(
    console: Console,
) -> None:
    from app.domain import supervision
    from tests.sites_fixture import NEWTON_ACCOUNT

    services = console.app.extensions["alarm_bridge"]
    tested_at = datetime.now(UTC)
    response = console.client.post(
        "/v1/events",
        json={"account": NEWTON_ACCOUNT, "code": "RP", "occurred_at": tested_at.isoformat()},
        headers={"Authorization": f"Bearer {PANEL_TOKEN}"},
    )
    assert response.status_code == 202, response.text
    console.sign_in()

    page = console.client.get("/dashboard/supervision")
    assert page.status_code == 200
    assert 'href="/dashboard/supervision" aria-current="page"' in page.text
    row = page.text.split('data-account="acme-panels/1f4a"', 1)[1].split("</tr>", 1)[0]
    assert '<span class="badge a-succeeded">ok</span>' in row
    assert "newton-residence" in row
    assert "at least every 25h" in row and "at least every 24h30m (grace included)" in row
    assert f"{tested_at:%Y-%m-%d %H:%M}" in row  # last contact and last test, to the millisecond

    with console.sessions.begin() as session:  # two days of silence, as the tick sees them
        checked = supervision.check(
            session, sites=services.sites, now=tested_at + timedelta(days=2), rules=services.intake_rules
        )
    link, test = sorted(checked.troubles, key=lambda t: t.kind)
    rows = console.client.get("/dashboard/queue/rows?list=supervision")
    assert rows.status_code == 200 and "<html" not in rows.text
    row = rows.text.split('data-account="acme-panels/1f4a"', 1)[1].split("</tr>", 1)[0]
    assert "link silent and test missed" in row
    assert f'href="/dashboard/alarms/{link.alarm_id}">alarm {link.alarm_id}</a>: link silent' in row
    assert f'href="/dashboard/alarms/{test.alarm_id}">alarm {test.alarm_id}</a>: automatic test missed' in row
    assert [int(i) for i in ROW_IDS.findall(console.client.get("/dashboard/needs-person").text)] == sorted(
        [link.alarm_id, test.alarm_id]
    )
