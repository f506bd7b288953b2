"""A panel's cancel on both ledgers: it cancels its own family, stands the response down in time, and
puts what it cannot stand down by API (a TrackTik dispatch) in front of a person (issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions as action_rules
from app.domain import operations
from app.domain.events import Event
from app.domain.intake import IntakeRules, Receipt, record_event
from app.ledger.models import Action, ActionState, Alarm, TimelineEntry
from app.ledger.session import make_sessionmaker
from tests.sites_fixture import MONTREAL_ACCOUNT, NEWTON_ACCOUNT, dual_path_sites, example_sites
from vendors.callonalarm import steps as callonalarm_steps
from vendors.rapidsos import steps as rapidsos_steps
from vendors.tracktik import steps as tracktik_steps

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
SITES = example_sites()
LEASE = timedelta(seconds=90)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def signal(
    sessions: sessionmaker[Session], code: str, *, after_s: float = 0, zone: str | None = "3", **kw: Any
) -> Receipt:
    at = T0 + timedelta(seconds=after_s)
    account = kw.pop("account", MONTREAL_ACCOUNT)
    occurred_at = kw.pop("occurred_at", at)  # the sender's own time; None: it gave none
    event = Event(
        source_key="acme-panels", source_kind="panel", received_at=at, account=account,
        code=code, zone=zone, occurred_at=occurred_at, payload={"code": code},
    )  # fmt: skip
    with sessions.begin() as session:
        return record_event(session, event, sites=SITES, rules=RULES)


def steps(sessions: sessionmaker[Session], alarm_id: int | None) -> dict[str, str]:
    with sessions() as session:
        rows = session.execute(select(Action).where(Action.alarm_id == alarm_id)).scalars()
        return {row.kind: row.state for row in rows}


def get(sessions: sessionmaker[Session], alarm_id: int | None) -> Alarm:
    with sessions() as session:
        return session.get_one(Alarm, alarm_id)


def timeline(sessions: sessionmaker[Session], alarm_id: int | None) -> list[tuple[str, str]]:
    with sessions() as session:
        rows = session.execute(
            select(TimelineEntry).where(TimelineEntry.alarm_id == alarm_id).order_by(TimelineEntry.id)
        ).scalars()
        return [(row.kind, row.message) for row in rows]


def run_step(
    sessions: sessionmaker[Session], alarm_id: int | None, kind: str, *, after_s: float, refs: dict[str, Any]
) -> None:
    """A worker ran the step and the upstream created something (what perform records on success)."""
    now = T0 + timedelta(seconds=after_s)
    with sessions.begin() as session:
        step_id = session.execute(
            select(Action.id).where(Action.alarm_id == alarm_id, Action.kind == kind)
        ).scalar_one()
        session.execute(select(Action).where(Action.id == step_id)).scalar_one().due_at = now
        claimed = action_rules.claim(session, step_id, now=now, lease=LEASE)
        assert claimed is not None
        action_rules.succeed(session, claimed, now=now, external_id=None, result={}, message="done")
        alarm = session.get_one(Alarm, alarm_id)
        alarm.refs = {**(alarm.refs or {}), **refs}


def start_step(sessions: sessionmaker[Session], alarm_id: int | None, kind: str, *, after_s: float) -> None:
    """A worker holds the step's lease: its request may be on the wire."""
    now = T0 + timedelta(seconds=after_s)
    with sessions.begin() as session:
        step_id = session.execute(
            select(Action.id).where(Action.alarm_id == alarm_id, Action.kind == kind)
        ).scalar_one()
        assert action_rules.claim(session, step_id, now=now, lease=LEASE) is not None


# -- a cancel in time with a guard on the road -------------------------------------------------------


def test_a_cancel_in_time_with_a_tracktik_dispatch_raises_the_alarm_to_a_person(
    sessions: sessionmaker[Session],
) -> None:
    # Montréal burglary: TrackTik now, a call after 60 s (cancellable); the window is 90 s.
    opened = signal(sessions, "BA")
    run_step(
        sessions, opened.alarm_id, tracktik_steps.CREATE_ALARM, after_s=1, refs={"tracktik_alarm_id": 42}
    )
    cancel = signal(sessions, "BC", after_s=2)

    assert cancel.alarm_id == opened.alarm_id
    assert steps(sessions, opened.alarm_id)[callonalarm_steps.TRIGGER] == ActionState.CANCELLED
    held = get(sessions, opened.alarm_id)
    assert held.state == "needs_person" and held.panel_cancelled_at is not None
    assert (
        held.needs_person_reason == "cancelled at the panel — TrackTik dispatch 42 is active: cancel it there"
    )
    assert ("tracktik.cancel_by_hand", held.needs_person_reason) in timeline(sessions, opened.alarm_id)
    assert cancel.due_actions == ()  # TrackTik has no cancel API; nothing else was engaged


@pytest.mark.parametrize("command", ["acknowledge", "end"])
def test_the_operator_s_acknowledge_or_end_then_ends_it_as_cancelled(
    sessions: sessionmaker[Session], command: str
) -> None:
    opened = signal(sessions, "BA")
    run_step(
        sessions, opened.alarm_id, tracktik_steps.CREATE_ALARM, after_s=1, refs={"tracktik_alarm_id": 42}
    )
    signal(sessions, "BC", after_s=2)
    now = T0 + timedelta(seconds=40)
    assert opened.alarm_id is not None
    with sessions.begin() as session:
        if command == "acknowledge":
            operations.acknowledge(session, opened.alarm_id, now=now, max_attempts=5)
        else:
            # Without an outcome, a dispatched TrackTik step would make it "dispatched": the panel's
            # cancel wins.
            operations.end(session, opened.alarm_id, None, now=now, max_attempts=5)
    ended = get(sessions, opened.alarm_id)
    assert (ended.state, ended.outcome) == ("ended", "cancelled")
    # The person who took the panel's to-do (recall the guard) is not handed it back a second time.
    assert ended.person_needed_at is None and not ended.needs_person
    assert ended.needs_person_reason.count("TrackTik dispatch 42 is active") == 1


@pytest.mark.parametrize("command", ["acknowledge", "end"])
def test_a_valid_verdict_after_the_cancel_is_not_turned_into_cancelled_by_acknowledge_or_end(
    sessions: sessionmaker[Session], command: str
) -> None:
    """The operator watched the video after the panel's cancel and judged it real: acknowledging the
    alarm, or ending it without an outcome, must not end it as cancelled (which stands down what
    lands later, a guard or a 911 request) against that verdict."""
    opened = signal(sessions, "BA")
    run_step(
        sessions, opened.alarm_id, tracktik_steps.CREATE_ALARM, after_s=1, refs={"tracktik_alarm_id": 42}
    )
    signal(sessions, "BC", after_s=2)
    assert opened.alarm_id is not None
    with sessions.begin() as session:
        operations.verify(session, opened.alarm_id, "valid", now=T0 + timedelta(seconds=20), max_attempts=5)
    now = T0 + timedelta(seconds=40)
    with sessions.begin() as session:
        if command == "acknowledge":
            operations.acknowledge(session, opened.alarm_id, now=now, max_attempts=5)
        else:
            operations.end(session, opened.alarm_id, None, now=now, max_attempts=5)
    alarm = get(sessions, opened.alarm_id)
    if command == "acknowledge":
        assert (alarm.state, alarm.outcome) == ("open", None)
    else:
        assert (alarm.state, alarm.outcome) == ("ended", "verified")


def test_a_tracktik_create_in_flight_at_the_cancel_is_put_in_front_of_a_person(
    sessions: sessionmaker[Session],
) -> None:
    opened = signal(sessions, "BA")
    start_step(sessions, opened.alarm_id, tracktik_steps.CREATE_ALARM, after_s=0.5)
    signal(sessions, "BC", after_s=1)

    held = get(sessions, opened.alarm_id)
    assert held.state == "needs_person"
    assert "a TrackTik dispatch was being created: check TrackTik and cancel it there" in (
        held.needs_person_reason or ""
    )
    assert steps(sessions, opened.alarm_id) == {
        tracktik_steps.CREATE_ALARM: ActionState.RUNNING,  # cannot be called back
        callonalarm_steps.TRIGGER: ActionState.CANCELLED,
    }


# -- an operator's verdict wins over the panel -----------------------------------------------------------


def test_a_cancel_in_time_after_an_operator_verified_the_alarm_valid_stands_nothing_down(
    sessions: sessionmaker[Session],
) -> None:
    """A disarm after the operator judged the alarm real may be coerced: the verdict stands, the
    opening is on the timeline, and a person is asked to look."""
    opened = signal(sessions, "BA")
    assert opened.alarm_id is not None
    with sessions.begin() as session:
        operations.verify(session, opened.alarm_id, "valid", now=T0 + timedelta(seconds=15), max_attempts=3)
    cancel = signal(sessions, "OP", zone="7", after_s=30)  # inside Montréal's 90 s window

    assert cancel.alarm_id == opened.alarm_id and cancel.due_actions == ()
    assert steps(sessions, opened.alarm_id) == {
        tracktik_steps.CREATE_ALARM: ActionState.QUEUED,
        callonalarm_steps.TRIGGER: ActionState.PENDING,
    }
    kept = get(sessions, opened.alarm_id)
    assert (kept.state, kept.outcome, kept.panel_cancelled_at) == ("needs_person", None, None)
    assert "came after an operator verified the alarm valid" in (kept.needs_person_reason or "")
    lines = timeline(sessions, opened.alarm_id)
    assert (
        "alarm.cancel_after_verified",
        "OP Opening Report (Disarmed) zone 7: the opening came after an operator judged the alarm "
        "real; nothing was stood down",
    ) in lines
    assert "alarm.cancelled_by_user" not in [k for k, _ in lines]


def test_a_cancel_after_a_valid_verdict_stands_no_911_request_or_call_down(
    sessions: sessionmaker[Session],
) -> None:
    opened = signal(sessions, "BA", account=NEWTON_ACCOUNT)
    run_step(
        sessions, opened.alarm_id, callonalarm_steps.TRIGGER, after_s=31,
        refs={"callonalarm_alert_id": "coa-7", "rapidsos_alert_id": "rs-9"},
    )  # fmt: skip
    assert opened.alarm_id is not None
    with sessions.begin() as session:
        operations.verify(session, opened.alarm_id, "valid", now=T0 + timedelta(seconds=35), max_attempts=3)
    cancel = signal(sessions, "OP", account=NEWTON_ACCOUNT, zone="1", after_s=40)

    assert cancel.due_actions == ()  # no RapidSOS cancel, no restore code to CallOnAlarm
    kept = get(sessions, opened.alarm_id)
    assert kept.state == "needs_person" and kept.outcome is None


# -- the stand-down table ------------------------------------------------------------------------------


def test_a_cancel_in_time_cancels_rapidsos_and_restores_a_held_call_then_ends_the_alarm(
    sessions: sessionmaker[Session],
) -> None:
    # Newton residential burglary: one call after 30 s, cancellable; the window is 2 min. The call was
    # handed to CallOnAlarm (it may sit in CallOnAlarm's own delay) and a RapidSOS alert exists.
    opened = signal(sessions, "BA", account=NEWTON_ACCOUNT)
    run_step(
        sessions, opened.alarm_id, callonalarm_steps.TRIGGER, after_s=31,
        refs={"callonalarm_alert_id": "coa-7", "rapidsos_alert_id": "rs-9"},
    )  # fmt: skip
    cancel = signal(sessions, "OP", account=NEWTON_ACCOUNT, zone="1", after_s=40)

    assert sorted(d.task_name for d in cancel.due_actions) == [
        callonalarm_steps.SEND_RESTORE,
        rapidsos_steps.CANCEL_ALERT,
    ]
    ended = get(sessions, opened.alarm_id)
    assert (ended.state, ended.outcome, ended.panel_cancelled_at) == ("ended", "cancelled", None)


def test_a_call_still_in_flight_gets_a_restore_that_waits_for_it(sessions: sessionmaker[Session]) -> None:
    opened = signal(sessions, "BA", account=NEWTON_ACCOUNT)
    with sessions.begin() as session:
        call = session.execute(select(Action).where(Action.alarm_id == opened.alarm_id)).scalar_one()
        call.due_at = T0 + timedelta(seconds=30)
    start_step(sessions, opened.alarm_id, callonalarm_steps.TRIGGER, after_s=30)
    cancel = signal(sessions, "BC", account=NEWTON_ACCOUNT, after_s=31)

    (restore,) = cancel.due_actions
    assert restore.task_name == callonalarm_steps.SEND_RESTORE
    with sessions() as session:
        assert session.get_one(Action, restore.id).params["cancelled_by"] == "BC"


def test_the_operator_s_end_and_the_panel_s_cancel_plan_the_same_stand_down(
    sessions: sessionmaker[Session],
) -> None:
    refs = {"callonalarm_alert_id": "coa-7", "rapidsos_alert_id": "rs-9", "tracktik_alarm_id": 42}
    by_panel = signal(sessions, "BA", zone="3")
    run_step(sessions, by_panel.alarm_id, tracktik_steps.CREATE_ALARM, after_s=1, refs=refs)
    by_operator = signal(sessions, "BA", zone="4", account=NEWTON_ACCOUNT)
    run_step(sessions, by_operator.alarm_id, callonalarm_steps.TRIGGER, after_s=1, refs=refs)

    panel = signal(sessions, "BC", after_s=2)
    assert by_operator.alarm_id is not None
    with sessions.begin() as session:
        operator = operations.end(session, by_operator.alarm_id, "cancelled", now=T0, max_attempts=5)

    def by_hand(alarm_id: int | None) -> list[str]:
        return [m for k, m in timeline(sessions, alarm_id) if k == "tracktik.cancel_by_hand"]

    assert sorted(d.task_name for d in panel.due_actions) == sorted(d.task_name for d in operator)
    assert by_hand(by_panel.alarm_id) == [
        "cancelled at the panel — TrackTik dispatch 42 is active: cancel it there"
    ]
    assert by_hand(by_operator.alarm_id) == [
        "ended (cancelled) — TrackTik dispatch 42 is active: cancel it there"
    ]


# -- a cancel cancels its own family ------------------------------------------------------------------


def test_a_fire_cancel_does_not_stop_a_burglary_s_held_call(sessions: sessionmaker[Session]) -> None:
    burglary = signal(sessions, "BA", zone="3")
    cancel = signal(sessions, "FC", zone="5", after_s=2)

    assert cancel.alarm_id is None and cancel.due_actions == ()  # no fire alarm to record it on
    assert steps(sessions, burglary.alarm_id)[callonalarm_steps.TRIGGER] == ActionState.PENDING
    assert get(sessions, burglary.alarm_id).state == "open"
    assert not [k for k, _ in timeline(sessions, burglary.alarm_id) if k.startswith("alarm.cancel")]


def test_a_burglary_cancel_matches_the_account_not_the_zone(sessions: sessionmaker[Session]) -> None:
    zone_3 = signal(sessions, "BA", zone="3")
    zone_4 = signal(sessions, "BV", zone="4", after_s=1)
    signal(sessions, "BC", zone="12", after_s=5)  # the zone of a cancel is often the user number

    for opened in (zone_3, zone_4):
        assert get(sessions, opened.alarm_id).outcome == "cancelled"


def test_a_burglary_cancel_leaves_other_families_alone(sessions: sessionmaker[Session]) -> None:
    tamper = signal(sessions, "TA", zone="8")
    door = signal(sessions, "DF", zone="9")
    signal(sessions, "BC", zone="1", after_s=5)

    for opened in (tamper, door):
        assert get(sessions, opened.alarm_id).state == "open"
        assert not [k for k, _ in timeline(sessions, opened.alarm_id) if k.startswith("alarm.cancel")]


def test_a_user_opening_cancels_intrusion_alarms_but_not_a_tamper(sessions: sessionmaker[Session]) -> None:
    door = signal(sessions, "DF", zone="9")  # door forced: an intrusion the arriving user explains
    tamper = signal(sessions, "TA", zone="8")  # a device opened: a person must look
    signal(sessions, "OP", zone="2", after_s=5)

    assert get(sessions, door.alarm_id).outcome == "cancelled"
    assert get(sessions, tamper.alarm_id).state == "open"


def test_a_cancel_after_the_window_is_recorded_and_stops_nothing(sessions: sessionmaker[Session]) -> None:
    opened = signal(sessions, "BA")
    signal(sessions, "BC", after_s=91)  # Montréal's window is 90 s

    assert steps(sessions, opened.alarm_id) == {
        tracktik_steps.CREATE_ALARM: ActionState.QUEUED,
        callonalarm_steps.TRIGGER: ActionState.PENDING,
    }
    assert get(sessions, opened.alarm_id).state == "open"
    assert [k for k, _ in timeline(sessions, opened.alarm_id)][-1] == "alarm.cancel_too_late"


def test_a_cancel_exactly_at_the_window_s_end_is_in_time(sessions: sessionmaker[Session]) -> None:
    """The window is inclusive: a cancel received exactly ``cancel_window`` after the alarm opened
    stands the response down (the ledger keeps microseconds on both databases)."""
    site = SITES.site_for_account("acme-panels", MONTREAL_ACCOUNT)
    assert site is not None and site.cancel_window == timedelta(seconds=90)
    opened = signal(sessions, "BA")
    cancel = signal(sessions, "BC", after_s=90)

    assert cancel.alarm_id == opened.alarm_id
    assert steps(sessions, opened.alarm_id) == {
        tracktik_steps.CREATE_ALARM: ActionState.CANCELLED,
        callonalarm_steps.TRIGGER: ActionState.CANCELLED,
    }
    alarm = get(sessions, opened.alarm_id)
    assert (alarm.state, alarm.outcome) == ("ended", "cancelled")
    assert "alarm.cancel_too_late" not in [k for k, _ in timeline(sessions, opened.alarm_id)]


def test_a_cancel_one_microsecond_after_the_window_is_too_late(sessions: sessionmaker[Session]) -> None:
    """The smallest step past the window's end (the ledger's resolution, a microsecond) is late."""
    opened = signal(sessions, "BA")
    cancel = signal(sessions, "BC", after_s=(timedelta(seconds=90, microseconds=1)).total_seconds())

    assert cancel.alarm_id == opened.alarm_id
    assert steps(sessions, opened.alarm_id) == {
        tracktik_steps.CREATE_ALARM: ActionState.QUEUED,
        callonalarm_steps.TRIGGER: ActionState.PENDING,
    }
    assert get(sessions, opened.alarm_id).state == "open"
    assert timeline(sessions, opened.alarm_id)[-1] == (
        "alarm.cancel_too_late",
        "BC Burglary Cancel zone 3 came after the 90s cancel window; the response goes on",
    )


# -- the window by the sender's own clock ------------------------------------------------------------


def test_an_opening_from_before_the_alarm_delivered_after_it_stands_nothing_down(
    sessions: sessionmaker[Session],
) -> None:
    """Received a second after the burglary, but the panel says the user opened ten minutes before
    it: that opening cannot be a cancel of this alarm."""
    opened = signal(sessions, "BA")
    cancel = signal(sessions, "OP", zone="7", after_s=1, occurred_at=T0 - timedelta(minutes=10))

    assert cancel.alarm_id == opened.alarm_id and cancel.due_actions == ()
    assert steps(sessions, opened.alarm_id) == {
        tracktik_steps.CREATE_ALARM: ActionState.QUEUED,
        callonalarm_steps.TRIGGER: ActionState.PENDING,
    }
    assert get(sessions, opened.alarm_id).state == "open"
    assert (
        "alarm.cancel_before_alarm",
        "OP Opening Report (Disarmed) zone 7 happened 600s before the alarm by the sender's clock: it "
        "does not cancel it; the response goes on",
    ) in timeline(sessions, opened.alarm_id)


def test_a_dual_path_site_s_other_clock_does_not_keep_a_cancel_in_time_from_applying(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The alarm came over the panel's line, the user's opening 20 s later over the gateway, whose
    clock runs 30 s behind the panel's: by receive times the cancel is in time, and two senders'
    clocks are not compared, so it stands the burglary down."""
    sites = dual_path_sites(tmp_path)
    opened_at = T0
    with sessions.begin() as session:
        opened = record_event(
            session, _event("acme-panels", "BA", "3", opened_at, opened_at), sites=sites, rules=RULES
        )
    at = T0 + timedelta(seconds=20)
    with sessions.begin() as session:
        record_event(
            session,
            _event("acme-gateway", "OP", "7", at, at - timedelta(seconds=30)),
            sites=sites,
            rules=RULES,
        )

    ended = get(sessions, opened.alarm_id)
    assert (ended.state, ended.outcome) == ("ended", "cancelled")


def _event(source: str, code: str, zone: str, received: datetime, occurred: datetime) -> Event:
    return Event(
        source_key=source, source_kind="panel", received_at=received, account=MONTREAL_ACCOUNT,
        code=code, zone=zone, occurred_at=occurred, payload={"code": code},
    )  # fmt: skip


def test_a_buffered_burst_s_late_opening_is_outside_the_window_by_the_panel_s_clock(
    sessions: sessionmaker[Session],
) -> None:
    """A panel that buffered while its line was down sends the alarm (11:50:00) and the opening
    (11:52:00, after the 90 s window) within a second of each other."""
    alarm_at = T0 - timedelta(minutes=10)
    opened = signal(sessions, "BA", occurred_at=alarm_at)
    signal(sessions, "OP", zone="7", after_s=0.5, occurred_at=alarm_at + timedelta(seconds=120))

    assert steps(sessions, opened.alarm_id) == {
        tracktik_steps.CREATE_ALARM: ActionState.QUEUED,
        callonalarm_steps.TRIGGER: ActionState.PENDING,
    }
    assert get(sessions, opened.alarm_id).state == "open"
    assert (
        "alarm.cancel_too_late",
        "OP Opening Report (Disarmed) zone 7 happened 120s after the alarm by the sender's clock, "
        "after the 90s cancel window; the response goes on",
    ) in timeline(sessions, opened.alarm_id)


@pytest.mark.parametrize(
    "cancel_occurred_at",
    [T0, T0 + timedelta(seconds=90), None],
    ids=["same-second", "window-end-by-sender", "no-sender-time"],
)
def test_a_cancel_in_time_by_both_clocks_or_without_a_sender_time_stands_the_response_down(
    sessions: sessionmaker[Session], cancel_occurred_at: datetime | None
) -> None:
    """Panels that stamp to the second stamp an alarm and a quick disarm alike; a cancel that
    carries no time of its own is judged by the receive times alone, as before."""
    opened = signal(sessions, "BA")
    signal(sessions, "OP", zone="7", after_s=1, occurred_at=cancel_occurred_at)

    assert (get(sessions, opened.alarm_id).state, get(sessions, opened.alarm_id).outcome) == (
        "ended",
        "cancelled",
    )


def test_a_second_cancel_does_not_stand_the_alarm_down_twice(sessions: sessionmaker[Session]) -> None:
    opened = signal(sessions, "BA")
    run_step(
        sessions, opened.alarm_id, tracktik_steps.CREATE_ALARM, after_s=1, refs={"tracktik_alarm_id": 42}
    )
    signal(sessions, "BC", after_s=2)
    again = signal(sessions, "OP", zone="1", after_s=3)

    assert again.due_actions == ()
    lines = [k for k, _ in timeline(sessions, opened.alarm_id)]
    assert lines.count("tracktik.cancel_by_hand") == 1 and lines.count("alarm.cancelled_by_user") == 1


# -- after a cancel that waits for a person -----------------------------------------------------------


def held_by_a_cancel(sessions: sessionmaker[Session]) -> Receipt:
    """Montréal burglary: TrackTik dispatched a guard, then the user's cancel in time (BC)."""
    opened = signal(sessions, "BA")
    run_step(
        sessions, opened.alarm_id, tracktik_steps.CREATE_ALARM, after_s=1, refs={"tracktik_alarm_id": 42}
    )
    return opened


def give_step(sessions: sessionmaker[Session], alarm_id: int | None, kind: str, *, after_s: float) -> int:
    """Make the alarm's held call a step of ``kind`` due at ``after_s`` (a plan with that step)."""
    with sessions.begin() as session:
        action = session.execute(
            select(Action).where(Action.alarm_id == alarm_id, Action.kind == callonalarm_steps.TRIGGER)
        ).scalar_one()
        action.kind, action.target = kind, kind.split(".", 1)[0]
        action.due_at = T0 + timedelta(seconds=after_s)
        return action.id


@pytest.mark.parametrize("lost_answer", [False, True])
def test_a_step_in_flight_at_the_cancel_is_not_sent_again_by_its_retry(
    sessions: sessionmaker[Session], lost_answer: bool
) -> None:
    """A 911 request on the wire when the user cancels: its retry (a 503, or a lost answer) must not
    send what the user cancelled; a lost answer puts the alarm in front of a person."""
    opened = held_by_a_cancel(sessions)
    step_id = give_step(sessions, opened.alarm_id, rapidsos_steps.CREATE_ALERT, after_s=1)
    with sessions.begin() as session:
        claimed = action_rules.claim(session, step_id, now=T0 + timedelta(seconds=2), lease=LEASE)
    assert claimed is not None
    signal(sessions, "BC", zone="12", after_s=3)
    assert get(sessions, opened.alarm_id).panel_cancelled_at is not None
    with sessions.begin() as session:
        action_rules.retry_later(
            session, claimed, now=T0 + timedelta(seconds=4), error="no answer", delay_s=2,
            outcome_unknown=lost_answer,
        )  # fmt: skip
    with sessions.begin() as session:
        again = action_rules.claim(session, step_id, now=T0 + timedelta(seconds=10), lease=LEASE)

    assert again is None
    assert steps(sessions, opened.alarm_id)[rapidsos_steps.CREATE_ALERT] == ActionState.CANCELLED
    assert ("action.cancelled", "not run: the alarm was cancelled at the panel") in timeline(
        sessions, opened.alarm_id
    )
    reason = get(sessions, opened.alarm_id).needs_person_reason or ""
    assert ("rapidsos.create_alert may have reached rapidsos" in reason) is lost_answer


def test_a_step_planned_after_the_cancel_still_runs(sessions: sessionmaker[Session]) -> None:
    """What the cancel or a person plans afterwards (the stand-down, an operator's step) is not stopped."""
    opened = held_by_a_cancel(sessions)
    signal(sessions, "BC", zone="12", after_s=3)
    step_id = give_step(sessions, opened.alarm_id, rapidsos_steps.CREATE_ALERT, after_s=5)
    with sessions.begin() as session:
        action = session.get_one(Action, step_id)
        action.state, action.created_at = ActionState.PENDING, T0 + timedelta(seconds=4)
    with sessions.begin() as session:
        assert action_rules.claim(session, step_id, now=T0 + timedelta(seconds=6), lease=LEASE) is not None


def test_a_new_alarm_after_a_cancel_that_waits_for_a_person_gets_its_own_response(
    sessions: sessionmaker[Session],
) -> None:
    """The zone trips again after the user's cancel: a new alarm with the plan, as after an End, not a
    repeat absorbed by the stood-down alarm."""
    opened = held_by_a_cancel(sessions)
    signal(sessions, "BC", zone="12", after_s=10)
    again = signal(sessions, "BA", after_s=200)

    assert again.alarm_id != opened.alarm_id and again.opened is not None
    assert [d.task_name for d in again.due_actions] == [tracktik_steps.CREATE_ALARM]
    assert get(sessions, opened.alarm_id).event_count == 1


def test_a_cancel_finds_its_alarm_however_each_signal_spells_the_account(
    sessions: sessionmaker[Session],
) -> None:
    """Routing ignores the account's case and surrounding spaces; so do grouping and cancels."""
    opened = signal(sessions, "BA", account=f" {MONTREAL_ACCOUNT.upper()}")
    assert get(sessions, opened.alarm_id).account == MONTREAL_ACCOUNT  # as the site lists it
    repeat = signal(sessions, "BA", after_s=2, account=MONTREAL_ACCOUNT.lower())
    cancel = signal(sessions, "BC", zone="12", after_s=5, account=MONTREAL_ACCOUNT.lower())

    assert repeat.alarm_id == opened.alarm_id and repeat.due_actions == ()
    assert cancel.alarm_id == opened.alarm_id
    assert get(sessions, opened.alarm_id).state == "ended"


@pytest.mark.parametrize(
    ("kind", "vendor"),
    [(rapidsos_steps.CREATE_ALERT, "rapidsos"), (callonalarm_steps.TRIGGER, "callonalarm")],
)
def test_a_cancel_after_a_create_lost_its_answer_waits_for_a_person(
    sessions: sessionmaker[Session], kind: str, vendor: str
) -> None:
    """The 911 request (or the call) was sent and its answer lost: it may be live, and there is no id
    to stand it down by. A cancel in time must not end the alarm quietly: a person checks there."""
    opened = signal(sessions, "BA")
    step_id = give_step(sessions, opened.alarm_id, kind, after_s=1)
    with sessions.begin() as session:
        claimed = action_rules.claim(session, step_id, now=T0 + timedelta(seconds=2), lease=LEASE)
    assert claimed is not None
    with sessions.begin() as session:
        action_rules.retry_later(
            session,
            claimed,
            now=T0 + timedelta(seconds=3),
            error="no answer",
            delay_s=5,
            outcome_unknown=True,
        )

    signal(sessions, "BC", zone="12", after_s=4)

    alarm = get(sessions, opened.alarm_id)
    assert alarm.state == "needs_person" and alarm.panel_cancelled_at is not None
    assert vendor in (alarm.needs_person_reason or "")
    assert steps(sessions, opened.alarm_id)[kind] == ActionState.CANCELLED  # its retry is not sent


def test_an_operators_retry_after_a_cancel_at_the_panel_is_refused_not_undone(
    sessions: sessionmaker[Session],
) -> None:
    """The 911 request failed for good, then the user cancelled (the guard keeps the alarm in front of
    a person). Whatever a retried request created would be stood down again as soon as it succeeded
    (the alarm's response was stood down at the panel): the retry is refused, saying so, rather than
    answered 202 and then stopped at its claim or cancelled after its success."""
    opened = held_by_a_cancel(sessions)
    step_id = give_step(sessions, opened.alarm_id, rapidsos_steps.CREATE_ALERT, after_s=1)
    with sessions.begin() as session:
        claimed = action_rules.claim(session, step_id, now=T0 + timedelta(seconds=1.5), lease=LEASE)
    assert claimed is not None
    with sessions.begin() as session:
        action_rules.fail(session, claimed, now=T0 + timedelta(seconds=1.8), error="400 bad request")
    signal(sessions, "BC", zone="12", after_s=2)
    assert get(sessions, opened.alarm_id).panel_cancelled_at is not None

    with (
        pytest.raises(operations.ActionNotRetryableError, match="cancelled at the panel"),
        sessions.begin() as session,
    ):
        operations.retry_action(session, step_id, now=T0 + timedelta(seconds=30), max_attempts=5)

    assert steps(sessions, opened.alarm_id)[rapidsos_steps.CREATE_ALERT] == ActionState.FAILED
