"""The operator dashboard in a real headless Chromium against the whole running stack: sign in, watch
the queue fill without reloading, open an alarm, verify it and see the verdict reach Alta.

Screenshots of the queue and of the alarm page are saved in the test's tmp_path; with
UPDATE_SCREENSHOTS=1 they also replace docs/screenshots/queue.png and alarm.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from app.domain.outbox import RecordingOutbox
from app.ledger.models import Action, ActionState, Alarm
from app.web import create_app
from config.settings import Settings
from sandbox.server import serve_in_thread
from tests.sites_fixture import EXAMPLE_SITES, MONTREAL_ACCOUNT, PANEL_TOKEN, SOURCE_ENV
from tests.stack import Stack

pytestmark = pytest.mark.browser
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WORKER_S = 60_000  # ms: how long a step done by the worker may take to show


def event(account: str, code: str, zone: str = "3", **kw: Any) -> dict[str, Any]:
    body = {"account": account, "code": code, "zone": zone, "occurred_at": datetime.now(UTC).isoformat()}
    body.update(event_id=uuid.uuid4().hex, **kw)
    return body


def screenshot(page: Page, tmp_path: Path, name: str, *, full_page: bool = False) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / f"{name}.png")


def no_sideways_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_an_operator_signs_in_takes_the_queue_in_order_and_verifies_an_alarm(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    base = stack.web.base_url
    problems: list[str] = []  # script errors and CSP refusals the page reports
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    played = stack.http.post(
        f"{stack.sandbox.base_url}/alta/_sandbox/detections",
        json={"alarm_zone_id": "az-5d1c", "device_id": "dev-2"},
        timeout=10,
    ).json()
    alta_alarm = int(json.loads(played["webhook"]["response_body"])["alarm_id"])
    stack.advance(10)  # Alta lists the alert and adds its bookmark a few seconds after the webhook
    fire = stack.post_event(event("ny-1", "FA"))["alarm_id"]

    page.goto(f"{base}/dashboard/")
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))
    page.get_by_label("Operator key").fill("test-operator-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Queue")).to_be_visible()
    rows = page.locator("table.alarms tbody tr[data-alarm-id]")
    expect(rows).to_have_count(2)
    assert rows.first.get_attribute("data-alarm-id") == str(fire)  # life-safety above the burglary

    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    unrouted = stack.post_event(event("nobody-knows-me", "BA"))["alarm_id"]
    expect(rows).to_have_count(3)
    expect(page.locator(f'tr[data-alarm-id="{unrouted}"]')).to_contain_text("unrouted: no site claims")
    assert page.evaluate("window.sameDocument") is True
    assert rows.first.get_attribute("data-alarm-id") == str(fire)
    stack.wait_for(alta_alarm, "tracktik.create_alarm")
    screenshot(page, tmp_path, "queue")

    page.locator(f'tr[data-alarm-id="{alta_alarm}"] a.what').click()
    expect(page.get_by_role("heading", name=f"Alarm {alta_alarm}")).to_be_visible()
    tracktik = page.locator('#actions tr[data-kind="tracktik.create_alarm"]')
    expect(tracktik).to_have_attribute("data-state", "succeeded", timeout=WORKER_S)
    expect(page.get_by_role("link", name="Recording 1")).to_be_visible()
    expect(page.locator("#refs")).to_contain_text(played["alert"]["guid"])
    expect(page.locator("#timeline time").first).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
    expect(page.locator("#verification")).to_have_text("not verified")

    page.get_by_role("button", name="Verify valid").click()
    expect(page.locator("#command-message")).to_have_text("Verdict recorded: valid.")
    expect(page.locator("#verification")).to_have_text("verified valid")
    expect(page.locator("#timeline")).to_contain_text("operator verdict: valid")
    verify = page.locator('#actions tr[data-kind="alta.verify"]')
    expect(verify).to_have_attribute("data-state", "succeeded", timeout=WORKER_S)
    screenshot(page, tmp_path, "alarm", full_page=True)  # the timeline is below the fold

    page.set_viewport_size({"width": 768, "height": 1024})  # a tablet, upright
    assert no_sideways_scroll(page)
    page.screenshot(path=str(tmp_path / "alarm-tablet.png"))
    page.goto(f"{base}/dashboard/")
    assert no_sideways_scroll(page)
    assert problems == []


def test_a_wrong_operator_key_is_refused(page: Page, make_settings: Any, sqlite_url: str) -> None:
    settings: Settings = make_settings(database_url=sqlite_url, operator_api_keys=("test-operator-key",))
    app = create_app(settings, outbox=RecordingOutbox(), ping_broker=lambda: None)
    web = serve_in_thread(app)
    try:
        page.goto(f"{web.base_url}/dashboard/login")
        page.get_by_label("Operator key").fill("guess")
        with page.expect_response(re.compile(r"/dashboard/login$")) as answer:
            page.get_by_role("button", name="Sign in").click()
        assert answer.value.status == 401
        expect(page.get_by_role("alert")).to_have_text("That operator key is not valid.")
        page.goto(f"{web.base_url}/dashboard/")
        expect(page).to_have_url(re.compile(r"/dashboard/login"))
    finally:
        web.stop()
        app.extensions["alarm_bridge"].engine.dispose()


def test_an_ended_alarm_with_a_guard_to_recall_is_acknowledged_from_its_page(
    page: Page, make_settings: Any, sqlite_url: str, redis_url: str
) -> None:
    """Verify false while a TrackTik guard is on the way: the ended alarm's page offers Acknowledge
    alone, and once acknowledged, nothing."""
    settings: Settings = make_settings(
        database_url=sqlite_url, redis_url=redis_url, broker_key_prefix=f"abtest:{uuid.uuid4().hex[:12]}:",
        operator_api_keys=("test-operator-key",), sites_file=str(EXAMPLE_SITES), environ=SOURCE_ENV,
    )  # fmt: skip
    app = create_app(settings, outbox=RecordingOutbox(), ping_broker=lambda: None)
    client = app.test_client()
    alarm_id = client.post(
        "/v1/events", json=event(MONTREAL_ACCOUNT, "BA"), headers={"Authorization": f"Bearer {PANEL_TOKEN}"}
    ).json["alarm_id"]
    with app.extensions["alarm_bridge"].sessions.begin() as session:  # the guard was dispatched
        step = session.execute(
            select(Action).where(Action.alarm_id == alarm_id, Action.kind == "tracktik.create_alarm")
        ).scalar_one()
        step.state = ActionState.SUCCEEDED
        session.get_one(Alarm, alarm_id).refs = {"tracktik_alarm_id": 4244}
    verdict = client.post(
        f"/v1/alarms/{alarm_id}/verify",
        json={"verdict": "false"},
        headers={"Authorization": "Bearer test-operator-key"},
    )
    assert verdict.json["needs_person"] is True
    web = serve_in_thread(app)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        page.goto(f"{web.base_url}/dashboard/alarms/{alarm_id}")
        page.get_by_label("Operator key").fill("test-operator-key")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name=f"Alarm {alarm_id}")).to_be_visible()
        acknowledge = page.get_by_role("button", name="Acknowledge")
        expect(page.locator("#status")).to_contain_text("TrackTik dispatch 4244 is active: cancel it there")
        expect(acknowledge).to_be_enabled()
        expect(page.get_by_role("button", name="Verify valid")).to_be_disabled()
        expect(page.get_by_role("button", name="End")).to_be_disabled()

        acknowledge.click()

        expect(page.locator("#command-message")).to_have_text("Acknowledged.")
        expect(page.locator("#status")).to_have_attribute("data-needs-person", "false")
        expect(acknowledge).to_be_disabled()
        expect(page.locator("#status")).to_contain_text("outcome: false alarm")
        assert problems == []
    finally:
        web.stop()
        app.extensions["alarm_bridge"].engine.dispose()
