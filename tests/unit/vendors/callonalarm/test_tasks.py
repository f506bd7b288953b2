"""CallOnAlarm task handlers, called directly with a hand-built Job and a real client aimed at the
CallOnAlarm simulator (seed 001; CONTRACTS Part A items 10-12).

Sandbox account 1001 (the Montréal example site): BA instant; IA delayed 60 s and IR cancels it;
contacts ring 30 s and 25 s over two rounds, so an instant alert times out after 110 s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
import requests

from app.domain.actions import ClaimedAction
from app.domain.alarms import AlarmContext
from app.domain.sites import Site
from config.settings import Settings
from sandbox.callonalarm import create_app
from sandbox.server import RunningServer, serve_in_thread
from tests.logs import capture_logs
from tests.sites_fixture import example_sites
from vendors.callonalarm import steps as callonalarm_steps
from vendors.callonalarm import tasks
from vendors.callonalarm.client import CallOnAlarmClient
from vendors.callonalarm.settings import CallOnAlarmSettings
from vendors.callonalarm.site import CallOnAlarmSite
from workers.clients import Clients
from workers.clients.errors import (
    BudgetExhaustedError,
    NotYetError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from workers.perform import FollowUp, Job

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
POLL_S = 30.0


class Sandbox:
    """The simulator and the bits of its control API these tests read."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.http = requests.Session()

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, self.server.base_url + path, timeout=5, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def advance(self, seconds: float) -> None:
        self.control("POST", "/_sandbox/clock", json={"advance_s": seconds})

    def fault(self, **fault: Any) -> None:
        self.control("POST", "/_sandbox/faults", json=fault)

    def journal(self, **filters: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.control("GET", "/_sandbox/journal", params=filters)
        return entries

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.control("GET", "/_sandbox/alerts")
        return alerts


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    server = serve_in_thread(create_app(), port=0)
    live = Sandbox(server)
    yield live
    live.http.close()
    server.stop()


@pytest.fixture
def settings(sandbox: Sandbox) -> Settings:
    callonalarm = CallOnAlarmSettings(base_url=sandbox.server.base_url, poll_interval_s=POLL_S)
    return Settings().with_vendor(callonalarm)


@pytest.fixture
def clients(settings: Settings) -> Iterator[Clients]:
    client = CallOnAlarmClient.from_settings(settings, fakeredis.FakeRedis())
    yield Clients.of(client)
    client.session.close()


@pytest.fixture
def montreal() -> Site:
    site = next(site for site in example_sites().sites if site.key == "montreal-hq")
    callonalarm = site.table(CallOnAlarmSite)
    assert callonalarm is not None
    assert callonalarm.account_number == "1001"
    return site


def make_alarm(site: Site | None, **overrides: Any) -> AlarmContext:
    values: dict[str, Any] = {
        "id": 7,
        "state": "open",
        "site": site,
        "source_kind": "panel",
        "account": "ab-95367",
        "zone": "3",
        "code": "BA",
        "family": "burglary",
        "priority": "property",
        "description": "Burglary Alarm",
        "opened_at": NOW,
        "occurred_at": NOW,
        "message": None,
        "payload": {},
        "refs": {},
        "verification": None,
    }
    values.update(overrides)
    return AlarmContext(**values)


JobFactory = Callable[..., Job]


@pytest.fixture
def make_job(clients: Clients, settings: Settings) -> JobFactory:
    def build(
        kind: str,
        alarm: AlarmContext | None,
        params: dict[str, Any] | None = None,
        *,
        outcome_unknown: bool = False,
    ) -> Job:
        action = ClaimedAction(
            id=11,
            alarm_id=alarm.id if alarm else None,
            kind=kind,
            attempts=2 if outcome_unknown else 1,
            max_attempts=8,
            lease_token="lease",
            idempotency_key="action-11",
            outcome_unknown=outcome_unknown,
            params=params or {},
        )
        return Job(action=action, alarm=alarm, clients=clients, settings=settings, now=NOW)

    return build


def with_refs(alarm: AlarmContext, refs: dict[str, Any]) -> AlarmContext:
    return dataclasses.replace(alarm, refs={**alarm.refs, **refs})


# --- callonalarm.trigger ---------------------------------------------------------------------------


def test_trigger_calls_the_sites_account_and_follows_the_alert(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, make_alarm(montreal)))

    [entry] = sandbox.journal(path="/v1/alert/trigger")
    assert entry["body"] == {
        "accountNumber": "1001",
        "eventCode": "BA",
        "zone": "3",
        "message": "Burglary Alarm, zone 3",
    }
    alert_id = outcome.external_id
    assert alert_id is not None
    assert outcome.refs == {
        "callonalarm_alert_id": alert_id,
        "callonalarm_account": "1001",
        "callonalarm_status": "call_immediate",
        "callonalarm_delay_s": 0,
    }
    assert outcome.follow_ups == (
        FollowUp(callonalarm_steps.FOLLOW_STATUS, after_s=POLL_S, params={"alert_id": alert_id}),
    )
    assert outcome.needs_person is None


def test_trigger_sends_burglary_alarm_code_for_an_alta_video_intrusion(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm = make_alarm(
        montreal, source_kind="alta", code=None, zone="az-5d1c", description="Person detected: Loading Dock"
    )

    tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))

    [entry] = sandbox.journal(path="/v1/alert/trigger")
    assert entry["body"]["eventCode"] == "BA"
    assert entry["body"]["message"] == "Person detected: Loading Dock, zone az-5d1c"


def test_trigger_of_a_delayed_code_first_polls_when_the_calls_start(
    make_job: JobFactory, montreal: Site
) -> None:
    alarm = make_alarm(montreal, code="IA", family="system", priority="technical", description=None)

    outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))

    assert outcome.refs["callonalarm_status"] == "call_delayed"
    assert outcome.refs["callonalarm_delay_s"] == 60
    [follow_up] = outcome.follow_ups
    assert follow_up.after_s == 60


def test_fallback_trigger_calls_the_given_account_and_says_why(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    params = {"fallback": True, "account": "9000", "reason": "rapidsos.create_alert failed"}

    outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, make_alarm(montreal), params))

    [entry] = sandbox.journal(path="/v1/alert/trigger")
    assert entry["body"]["accountNumber"] == "9000"
    assert entry["body"]["message"] == "Burglary Alarm, zone 3; fallback: rapidsos.create_alert failed"
    assert outcome.refs["callonalarm_account"] == "9000"


def test_retry_after_an_unknown_outcome_triggers_again(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    # No idempotency key and no lookup: a second call is safer than none for a life-safety alarm.
    job = make_job(callonalarm_steps.TRIGGER, make_alarm(montreal))
    tasks._trigger(job)
    retry = make_job(callonalarm_steps.TRIGGER, make_alarm(montreal), outcome_unknown=True)

    outcome = tasks._trigger(retry)

    assert len(sandbox.alerts()) == 2
    assert outcome.external_id is not None
    assert "repeat" in sandbox.journal(path="/v1/alert/trigger")[-1]["body"]["message"]


def test_trigger_on_an_inactive_connection_needs_a_person(make_job: JobFactory, montreal: Site) -> None:
    alarm = make_alarm(montreal)

    outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm, {"account": "1002"}))

    assert outcome.refs["callonalarm_status"] == "logged_inactive"
    assert outcome.follow_ups == ()
    assert outcome.needs_person == "CallOnAlarm placed no call (logged_inactive) on account 1002"


def test_trigger_without_any_account_is_rejected_without_a_request(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm = make_alarm(montreal.without(CallOnAlarmSite))

    with pytest.raises(UpstreamRejectedError):
        tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))
    with pytest.raises(UpstreamRejectedError):
        tasks._trigger(make_job(callonalarm_steps.TRIGGER, None))
    assert sandbox.journal() == []


def test_trigger_with_a_code_callonalarm_refuses_calls_as_an_undefined_alarm(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    # An unknown panel code is ranked life-safety: CallOnAlarm's 400 "Invalid eventCode" must not
    # leave the contacts uncalled. The panel's code travels in the message.
    alarm = make_alarm(montreal, code="ZZZZ", family="unknown")

    outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))

    sent = [entry["body"] for entry in sandbox.journal() if entry["path"].endswith("/v1/alert/trigger")]
    assert [body["eventCode"] for body in sent] == ["ZZZZ", "UX"]
    assert "panel code ZZZZ" in sent[1]["message"]
    assert outcome.result["event_code"] == "UX"
    assert outcome.result["status"] == "call_immediate"
    assert [alert["eventCode"] for alert in sandbox.alerts()] == ["UX"]


def test_trigger_with_a_custom_code_of_the_connection_is_sent_as_is(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, make_alarm(montreal, code="STOP_LOSS")))

    assert outcome.result["event_code"] == "STOP_LOSS"
    assert [alert["eventCode"] for alert in sandbox.alerts()] == ["STOP_LOSS"]


def test_trigger_refused_for_another_reason_is_not_sent_again(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    sandbox.fault(path="/v1/alert/trigger", status=400, body={"error": "Bad Request", "message": "no"})

    with pytest.raises(UpstreamRejectedError) as caught:
        tasks._trigger(make_job(callonalarm_steps.TRIGGER, make_alarm(montreal)))
    assert caught.value.status == 400
    assert len(sandbox.journal()) == 1


def test_trigger_with_a_bad_api_key_is_rejected(
    sandbox: Sandbox, montreal: Site, make_job: JobFactory
) -> None:
    wrong_key = CallOnAlarmSettings(base_url=sandbox.server.base_url, api_key="coa_wrong")
    settings = Settings().with_vendor(wrong_key)
    client = CallOnAlarmClient.from_settings(settings, fakeredis.FakeRedis())
    job = dataclasses.replace(
        make_job(callonalarm_steps.TRIGGER, make_alarm(montreal)),
        clients=Clients.of(client),
    )

    with pytest.raises(UpstreamRejectedError) as caught:
        tasks._trigger(job)
    assert caught.value.status == 401
    client.session.close()


def test_trigger_refused_with_429_carries_retry_after(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    sandbox.fault(path="/v1/alert/trigger", status=429, headers={"Retry-After": "42"})

    with pytest.raises(UpstreamUnavailableError) as caught:
        tasks._trigger(make_job(callonalarm_steps.TRIGGER, make_alarm(montreal)))
    assert caught.value.retry_after_s == 42


def test_trigger_waits_when_the_hourly_budget_is_spent(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    job = make_job(callonalarm_steps.TRIGGER, make_alarm(montreal))
    budget = job.clients.get(CallOnAlarmClient).budget
    for _ in range(100):
        budget.take()

    with pytest.raises(BudgetExhaustedError) as caught:
        tasks._trigger(job)
    assert 3500 < caught.value.retry_after_s <= 3600
    assert sandbox.journal() == []


def test_only_life_safety_and_fallback_calls_take_the_hours_reserve(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    # Polls and troubles spent the hour down to the reserve: a burglary's calls wait, a fire's and a
    # failed dispatch's fallback go.
    burglary = make_job(callonalarm_steps.TRIGGER, make_alarm(montreal))
    budget = burglary.clients.get(CallOnAlarmClient).budget
    for _ in range(80):
        budget.take()

    with pytest.raises(BudgetExhaustedError):
        tasks._trigger(burglary)
    assert sandbox.journal() == []

    fire = make_alarm(montreal, code="FA", family="fire", priority="life_safety", description="Fire Alarm")
    assert tasks._trigger(make_job(callonalarm_steps.TRIGGER, fire)).result["event_code"] == "FA"
    fallback = make_job(callonalarm_steps.TRIGGER, make_alarm(montreal), params={"fallback": True})
    assert tasks._trigger(fallback).result["event_code"] == "BA"
    assert len(sandbox.journal()) == 2


# --- the account's language ------------------------------------------------------------------------


def speaking(site: Site, account: str, language: str | None = None) -> Site:
    """``site`` with its CallOnAlarm connection on ``account``, declared in ``language`` if given."""
    table = CallOnAlarmSite(account) if language is None else CallOnAlarmSite(account, language)
    return dataclasses.replace(site, tables={**site.tables, CallOnAlarmSite: table})


def test_a_french_sites_trigger_sends_no_english_message(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    # Sandbox account 1003 speaks French: a message would override its French default message and be
    # read, in English words, by the French voice. Our text stays on the bridge's own timeline.
    alarm = make_alarm(speaking(montreal, "1003", "fr"), code="FA", family="fire", description="Fire Alarm")

    with capture_logs() as logs:
        outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))

    [entry] = sandbox.journal(path="/v1/alert/trigger")
    assert entry["body"] == {"accountNumber": "1003", "eventCode": "FA", "zone": "3"}
    [stored] = sandbox.alerts()
    assert stored["message"] is None
    assert outcome.result["language"] == "fr"
    assert outcome.result["message"] == "Fire Alarm, zone 3"
    assert outcome.result["message_sent"] is None
    assert outcome.message is not None
    assert "CallOnAlarm's own message in fr, not ours ('Fire Alarm, zone 3')" in outcome.message
    assert "mismatch" not in outcome.message
    assert not [line for line in logs if line["event"] == "callonalarm.language_mismatch"]


def test_a_spanish_sites_repeat_and_fallback_send_no_english_message(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    site = speaking(montreal, "1004", "es")
    fallback = {"fallback": True, "account": "1004", "reason": "rapidsos.create_alert failed"}

    tasks._trigger(make_job(callonalarm_steps.TRIGGER, make_alarm(site), fallback, outcome_unknown=True))

    [entry] = sandbox.journal(path="/v1/alert/trigger")
    assert "message" not in entry["body"]


def test_a_non_english_sites_undefined_alarm_carries_only_the_panels_raw_code(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    # "Undefined Alarm" alone would hide what the panel sent; its code reads alike in any language.
    alarm = make_alarm(speaking(montreal, "1004", "es"), code="ZZZZ", family="unknown")

    outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))

    sent = [entry["body"] for entry in sandbox.journal(path="/v1/alert/trigger")]
    assert [body.get("message") for body in sent] == [None, "ZZZZ"]
    assert sent[1]["eventCode"] == "UX"
    assert outcome.result["message"].startswith("panel code ZZZZ (sent as UX): ")


def test_a_non_english_sites_restore_sends_no_english_message(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm = with_refs(
        make_alarm(speaking(montreal, "1003", "fr")),
        {"callonalarm_alert_id": "alt_1", "callonalarm_account": "1003"},
    )

    tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, alarm))

    [entry] = sandbox.journal(path="/v1/alert/trigger")
    assert "message" not in entry["body"]


def test_an_account_speaking_another_language_than_declared_is_on_the_timeline_and_in_the_log(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    # The site leaves language at its default ("en"), but account 1003 speaks French: our English
    # message went to a French voice. The first call says so, naming the site and both languages.
    alarm = make_alarm(speaking(montreal, "1003"), code="FA", family="fire", description="Fire Alarm")

    with capture_logs() as logs:
        outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))

    assert sandbox.journal(path="/v1/alert/trigger")[0]["body"]["message"] == "Fire Alarm, zone 3"
    assert outcome.message is not None
    assert (
        'language mismatch: CallOnAlarm account 1003 speaks "fr" but site "montreal-hq" declares "en"'
        in outcome.message
    )
    [warning] = [line for line in logs if line["event"] == "callonalarm.language_mismatch"]
    assert warning["log_level"] == "warning"
    assert (warning["site"], warning["declared"], warning["account_language"]) == ("montreal-hq", "en", "fr")


def test_an_english_sites_trigger_still_sends_its_message_and_no_mismatch(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    with capture_logs() as logs:
        outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, make_alarm(montreal)))

    assert sandbox.journal(path="/v1/alert/trigger")[0]["body"]["message"] == "Burglary Alarm, zone 3"
    assert outcome.result["message_sent"] == "Burglary Alarm, zone 3"
    assert outcome.message == f"CallOnAlarm alert {outcome.external_id}: call_immediate (BA on account 1001)"
    assert not [line for line in logs if line["event"] == "callonalarm.language_mismatch"]


# --- callonalarm.send_restore and the seed's example ------------------------------------------------


def test_restore_within_the_delay_cancels_the_calls_as_in_the_seed(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm = make_alarm(montreal, code="IA", zone="rack B34E", description="Server down")
    triggered = tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))
    assert triggered.refs["callonalarm_status"] == "call_delayed"
    alarm = with_refs(alarm, triggered.refs)
    sandbox.advance(30)

    restored = tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, alarm))

    restore_entry = sandbox.journal(path="/v1/alert/trigger")[-1]
    assert restore_entry["body"]["eventCode"] == "IR"
    assert restore_entry["body"]["accountNumber"] == "1001"
    assert restored.refs["callonalarm_restore_sent"] is True
    assert restored.refs["callonalarm_restore_code"] == "IR"
    alarm = with_refs(alarm, restored.refs)
    sandbox.advance(60)  # past the original delay: no call may start
    [follow_up] = triggered.follow_ups

    followed = tasks._follow_status(make_job(follow_up.kind, alarm, follow_up.params))

    assert followed.refs["callonalarm_status"] == "cancelled"
    assert followed.refs["callonalarm_calls_made"] == 0
    assert followed.follow_ups == ()
    assert followed.needs_person is None


def test_restore_of_a_burglary_sends_burglary_restoral(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm = with_refs(
        make_alarm(montreal), {"callonalarm_alert_id": "alt_1", "callonalarm_status": "call_delayed"}
    )

    tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, alarm))

    assert sandbox.journal(path="/v1/alert/trigger")[-1]["body"]["eventCode"] == "BR"


def test_restore_sends_the_code_it_is_given_on_the_triggers_account(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm = with_refs(make_alarm(montreal), {"callonalarm_alert_id": "alt_1", "callonalarm_account": "9000"})

    tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, alarm, {"code": "BH"}))

    body = sandbox.journal(path="/v1/alert/trigger")[-1]["body"]
    assert (body["eventCode"], body["accountNumber"]) == ("BH", "9000")


def test_restore_of_a_code_without_a_pair_sends_a_cancel_report(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm = with_refs(make_alarm(montreal, code="UX"), {"callonalarm_alert_id": "alt_1"})

    outcome = tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, alarm))

    assert outcome.refs["callonalarm_restore_code"] == "OC"


def test_restore_without_a_callonalarm_alert_sends_nothing(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    outcome = tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, make_alarm(montreal)))

    assert outcome.refs == {}
    assert sandbox.journal() == []


def test_restore_of_an_alert_that_already_ended_sends_nothing(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm = with_refs(
        make_alarm(montreal), {"callonalarm_alert_id": "alt_1", "callonalarm_status": "acknowledged"}
    )

    outcome = tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, alarm))

    assert outcome.refs == {}
    assert sandbox.journal() == []


# --- callonalarm.follow_status ---------------------------------------------------------------------


def triggered_alarm(make_job: JobFactory, site: Site) -> tuple[AlarmContext, str]:
    alarm = make_alarm(site)
    outcome = tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))
    assert outcome.external_id is not None
    return with_refs(alarm, outcome.refs), outcome.external_id


def test_follow_status_of_a_running_alert_polls_again_and_counts(
    make_job: JobFactory, montreal: Site
) -> None:
    alarm, alert_id = triggered_alarm(make_job, montreal)

    outcome = tasks._follow_status(
        make_job(callonalarm_steps.FOLLOW_STATUS, alarm, {"alert_id": alert_id, "polls": 3})
    )

    assert outcome.refs["callonalarm_status"] == "call_immediate"
    assert outcome.follow_ups == (
        FollowUp(callonalarm_steps.FOLLOW_STATUS, after_s=POLL_S, params={"alert_id": alert_id, "polls": 4}),
    )
    assert outcome.needs_person is None


def test_follow_status_stops_after_forty_polls_and_asks_a_person(
    make_job: JobFactory, montreal: Site
) -> None:
    alarm, alert_id = triggered_alarm(make_job, montreal)

    outcome = tasks._follow_status(
        make_job(callonalarm_steps.FOLLOW_STATUS, alarm, {"alert_id": alert_id, "polls": 39})
    )

    assert outcome.follow_ups == ()
    assert outcome.needs_person is not None
    assert "still call_immediate after 40 polls" in outcome.needs_person


def test_follow_status_records_who_acknowledged(
    make_job: JobFactory, montreal: Site, clients: Clients
) -> None:
    alarm, alert_id = triggered_alarm(make_job, montreal)
    clients.get(CallOnAlarmClient).acknowledge(alert_id, "+15550100002")

    outcome = tasks._follow_status(make_job(callonalarm_steps.FOLLOW_STATUS, alarm, {"alert_id": alert_id}))

    assert outcome.refs["callonalarm_status"] == "acknowledged"
    assert outcome.refs["callonalarm_acknowledged_by"] == "+15550100002"
    assert outcome.refs["callonalarm_acknowledged_at"].endswith("+00:00")
    assert outcome.follow_ups == ()
    assert outcome.needs_person is None


def test_follow_status_of_a_timeout_needs_a_person(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm, alert_id = triggered_alarm(make_job, montreal)
    sandbox.advance(200)

    outcome = tasks._follow_status(make_job(callonalarm_steps.FOLLOW_STATUS, alarm, {"alert_id": alert_id}))

    assert outcome.refs["callonalarm_status"] == "timeout"
    assert outcome.follow_ups == ()
    assert outcome.needs_person == "CallOnAlarm: nobody acknowledged (timeout)"


def test_follow_status_without_an_alert_id_is_rejected(make_job: JobFactory, montreal: Site) -> None:
    with pytest.raises(UpstreamRejectedError):
        tasks._follow_status(make_job(callonalarm_steps.FOLLOW_STATUS, make_alarm(montreal)))


def test_user_cancel_waits_for_a_trigger_still_in_flight(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    job = make_job(callonalarm_steps.SEND_RESTORE, make_alarm(montreal), {"cancelled_by": "BC"})

    with pytest.raises(NotYetError):
        tasks._send_restore(job)
    assert sandbox.journal() == []


def test_user_cancel_stops_waiting_once_the_trigger_must_have_ended(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    long_ago = NOW - montreal.cancel_window - timedelta(hours=1)
    alarm = make_alarm(montreal, opened_at=long_ago)

    outcome = tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, alarm, {"cancelled_by": "BC"}))

    assert outcome.result == {"skipped": "no CallOnAlarm alert"}
    assert sandbox.journal() == []


def test_user_cancel_sends_the_alarms_restore_pair_not_the_cancel_code(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm = with_refs(make_alarm(montreal), {"callonalarm_alert_id": "alt_1"})

    outcome = tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, alarm, {"cancelled_by": "BC"}))

    assert outcome.refs["callonalarm_restore_code"] == "BR"
    assert outcome.result["cancelled_by"] == "BC"


# --- an alert cancelled by another alarm's restore --------------------------------------------------


def cancelled_by_anothers_restore(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox, alarm: AlarmContext
) -> tuple[AlarmContext, str]:
    """``alarm``'s calls run; then a burglary on the same account is stood down and sends its restore,
    which CallOnAlarm applies to every alert of the account (CONTRACTS Part A item 11)."""
    triggered = tasks._trigger(make_job(callonalarm_steps.TRIGGER, alarm))
    assert triggered.external_id is not None
    alarm = with_refs(alarm, triggered.refs)
    burglary = make_alarm(montreal, id=9, zone="7")
    burglary = with_refs(burglary, tasks._trigger(make_job(callonalarm_steps.TRIGGER, burglary)).refs)
    tasks._send_restore(make_job(callonalarm_steps.SEND_RESTORE, burglary, {"cancelled_by": "OP"}))
    sandbox.advance(5)
    return alarm, triggered.external_id


def test_a_fire_alarms_calls_cancelled_by_another_alarms_restore_are_placed_again(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    fire = make_alarm(
        montreal, code="FA", zone="5", family="fire", priority="life_safety", description="Fire Alarm"
    )
    fire, alert_id = cancelled_by_anothers_restore(make_job, montreal, sandbox, fire)

    outcome = tasks._follow_status(make_job(callonalarm_steps.FOLLOW_STATUS, fire, {"alert_id": alert_id}))

    assert outcome.refs["callonalarm_status"] in tasks.CANCELLED
    assert outcome.needs_person is not None
    assert "by a restore sent for another alarm on account 1001" in outcome.needs_person
    assert outcome.follow_ups == (
        FollowUp(callonalarm_steps.TRIGGER, params={"account": "1001", "repeat_of": alert_id}),
    )
    again = tasks._trigger(make_job(callonalarm_steps.TRIGGER, fire, dict(outcome.follow_ups[0].params)))
    entry = sandbox.journal(path="/v1/alert/trigger")[-1]
    assert (entry["body"]["eventCode"], entry["body"]["accountNumber"]) == ("FA", "1001")
    assert f"again: alert {alert_id} was cancelled by another alarm's restore" in entry["body"]["message"]
    assert again.external_id not in (None, alert_id)


def test_a_burglarys_calls_cancelled_by_another_alarms_restore_are_put_before_a_person(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    burglary, alert_id = cancelled_by_anothers_restore(make_job, montreal, sandbox, make_alarm(montreal))

    outcome = tasks._follow_status(
        make_job(callonalarm_steps.FOLLOW_STATUS, burglary, {"alert_id": alert_id})
    )

    assert outcome.needs_person is not None and "another alarm" in outcome.needs_person
    assert outcome.follow_ups == ()


def test_an_alert_cancelled_by_the_alarms_own_stand_down_needs_nobody(
    make_job: JobFactory, montreal: Site, sandbox: Sandbox
) -> None:
    alarm, alert_id = cancelled_by_anothers_restore(make_job, montreal, sandbox, make_alarm(montreal))
    own = dataclasses.replace(alarm, action_kinds=(callonalarm_steps.TRIGGER, callonalarm_steps.SEND_RESTORE))
    ended = dataclasses.replace(alarm, state="ended")

    for context in (own, ended):
        outcome = tasks._follow_status(
            make_job(callonalarm_steps.FOLLOW_STATUS, context, {"alert_id": alert_id})
        )
        assert outcome.needs_person is None and outcome.follow_ups == ()
