"""record_event's rules on both ledgers: dedupe, routing, grouping, restore vs cancel vs fire, plans."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

from app.domain import operations
from app.domain.alarms import load_context
from app.domain.events import Event
from app.domain.intake import HOLD_FOR_911, IntakeRules, Receipt, record_event
from app.domain.sites_file import load_sites
from app.ledger.models import Action, ActionState, Alarm, TimelineEntry
from app.ledger.models import Event as EventRow
from app.ledger.session import make_engine, make_sessionmaker
from tests.sites_fixture import (
    ALTA_ZONE,
    EXAMPLE_SITES,
    MONTREAL_ACCOUNT,
    NEWTON_ACCOUNT,
    SOURCE_ENV,
    dual_path_sites,
    example_sites,
)

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
SITES = example_sites()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def panel(
    code: str, *, at: datetime = T0, account: str = MONTREAL_ACCOUNT, zone: str | None = "3", **kw: Any
) -> Event:
    return Event(
        source_key="acme-panels",
        source_kind="panel",
        received_at=at,
        account=account,
        code=code,
        zone=zone,
        occurred_at=kw.pop("occurred_at", at),
        payload={"code": code},
        **kw,
    )


def record(sessions: sessionmaker[Session], event: Event) -> Receipt:
    with sessions.begin() as session:
        return record_event(session, event, sites=SITES, rules=RULES)


def actions_of(sessions: sessionmaker[Session], alarm_id: int | None) -> dict[str, str]:
    with sessions() as session:
        rows = session.execute(select(Action).where(Action.alarm_id == alarm_id)).scalars()
        return {row.kind: row.state for row in rows}


def alarm(sessions: sessionmaker[Session], alarm_id: int | None) -> Alarm:
    with sessions() as session:
        return session.get_one(Alarm, alarm_id)


def timeline_kinds(sessions: sessionmaker[Session], alarm_id: int | None) -> list[str]:
    with sessions() as session:
        return list(
            session.execute(
                select(TimelineEntry.kind)
                .where(TimelineEntry.alarm_id == alarm_id)
                .order_by(TimelineEntry.id)
            ).scalars()
        )


def test_a_burglary_opens_an_alarm_and_materialises_the_plan(sessions: sessionmaker[Session]) -> None:
    receipt = record(sessions, panel("BA"))
    assert not receipt.duplicate
    opened = alarm(sessions, receipt.alarm_id)
    assert (opened.site_key, opened.family, opened.priority, opened.needs_person) == (
        "montreal-hq", "burglary", "property", False,
    )  # fmt: skip
    with sessions() as session:
        rows = {
            a.kind: a for a in session.execute(select(Action).where(Action.alarm_id == opened.id)).scalars()
        }
    # alta.collect_video is skipped: a panel alarm has no Alta zone to look at.
    assert set(rows) == {"tracktik.create_alarm", "callonalarm.trigger"}
    assert rows["tracktik.create_alarm"].due_at == T0 and not rows["tracktik.create_alarm"].cancellable
    assert rows["callonalarm.trigger"].due_at == T0 + timedelta(seconds=60)
    assert rows["callonalarm.trigger"].cancellable
    assert [d.task_name for d in receipt.due_actions] == ["tracktik.create_alarm"]  # the delayed one waits
    assert "plan.step_skipped" in timeline_kinds(sessions, opened.id)


def test_fire_goes_on_the_life_safety_queue(sessions: sessionmaker[Session]) -> None:
    receipt = record(sessions, panel("FA"))
    assert {d.queue for d in receipt.due_actions} == {"life_safety"}
    assert alarm(sessions, receipt.alarm_id).priority == "life_safety"


def test_the_same_sender_event_id_is_one_event(sessions: sessionmaker[Session]) -> None:
    first = record(sessions, panel("BA", sender_event_id="evt-1"))
    again = record(sessions, panel("BA", at=T0 + timedelta(seconds=5), sender_event_id="evt-1"))
    assert again.duplicate
    assert (again.event_id, again.alarm_id) == (first.event_id, first.alarm_id)
    assert again.due_actions == ()


def test_an_identical_body_without_id_is_recognised_by_its_content(sessions: sessionmaker[Session]) -> None:
    first = record(sessions, panel("BA"))
    again = record(sessions, panel("BA", at=T0 + timedelta(seconds=20), occurred_at=T0))
    assert again.duplicate and again.event_id == first.event_id


def test_repeats_join_the_open_alarm_without_a_new_plan(sessions: sessionmaker[Session]) -> None:
    first = record(sessions, panel("BA", sender_event_id="1"))
    second = record(sessions, panel("BA", at=T0 + timedelta(minutes=1), sender_event_id="2"))
    assert second.alarm_id == first.alarm_id and not second.duplicate
    assert second.due_actions == ()
    joined = alarm(sessions, first.alarm_id)
    assert joined.event_count == 2 and joined.last_event_at == T0 + timedelta(minutes=1)
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(Action)).scalar_one() == 2


def test_a_repeat_after_the_grouping_window_opens_a_new_alarm(sessions: sessionmaker[Session]) -> None:
    first = record(sessions, panel("BA", sender_event_id="1"))
    later = record(sessions, panel("BA", at=T0 + timedelta(minutes=6), sender_event_id="2"))
    assert later.alarm_id != first.alarm_id


@pytest.mark.parametrize(
    ("trouble", "then"),
    # CI (fail to close) and OT (late to close) are access supervisories at property priority, the
    # priority of a door forced (DF) or left open (DL): the priority alone would let the door join.
    [("FT", "FA"), ("BT", "BA"), ("GT", "GA"), ("CI", "DF"), ("OT", "DL")],
)
def test_an_alarm_after_a_trouble_of_its_zone_opens_its_own_alarm_with_its_own_response(
    sessions: sessionmaker[Session], trouble: str, then: str
) -> None:
    """A detector's fault, then the fire: the fire must not join the trouble's alarm and its plan."""
    fault = record(sessions, panel(trouble, account=NEWTON_ACCOUNT, zone="5"))
    real = record(sessions, panel(then, account=NEWTON_ACCOUNT, zone="5", at=T0 + timedelta(seconds=60)))

    assert real.alarm_id != fault.alarm_id and real.opened is not None
    assert alarm(sessions, fault.alarm_id).event_count == 1
    opened = alarm(sessions, real.alarm_id)
    assert (opened.family, opened.priority) == (alarm(sessions, fault.alarm_id).family, real.opened[1])
    assert opened.priority in ("life_safety", "property")
    # The same response as the alarm gets on a zone with no trouble.
    alone = record(sessions, panel(then, account=NEWTON_ACCOUNT, zone="6", at=T0 + timedelta(seconds=60)))
    assert actions_of(sessions, real.alarm_id) == actions_of(sessions, alone.alarm_id) != {}
    assert [d.queue for d in real.due_actions] == [d.queue for d in alone.due_actions]


def test_a_trouble_after_a_fire_alarm_of_its_zone_joins_the_fire_alarm(
    sessions: sessionmaker[Session],
) -> None:
    fire = record(sessions, panel("FA", account=NEWTON_ACCOUNT, zone="5"))
    fault = record(sessions, panel("FT", account=NEWTON_ACCOUNT, zone="5", at=T0 + timedelta(seconds=30)))

    assert fault.alarm_id == fire.alarm_id and fault.due_actions == ()
    joined = alarm(sessions, fire.alarm_id)
    assert (joined.priority, joined.event_count) == ("life_safety", 2)


def test_another_zone_or_family_is_another_alarm(sessions: sessionmaker[Session]) -> None:
    burglary = record(sessions, panel("BA", zone="3"))
    other_zone = record(sessions, panel("BA", zone="4"))
    fire = record(sessions, panel("FA", zone="3"))
    assert len({burglary.alarm_id, other_zone.alarm_id, fire.alarm_id}) == 3


def test_a_restore_records_the_zone_closed_and_stops_nothing(sessions: sessionmaker[Session]) -> None:
    opened = record(sessions, panel("BA"))
    restored = record(sessions, panel("BR", at=T0 + timedelta(seconds=10)))
    assert restored.alarm_id == opened.alarm_id
    assert alarm(sessions, opened.alarm_id).restored_at == T0 + timedelta(seconds=10)
    assert actions_of(sessions, opened.alarm_id) == {
        "tracktik.create_alarm": ActionState.QUEUED,  # handed to the broker
        "callonalarm.trigger": ActionState.PENDING,  # waiting for its 60 s
    }


def test_the_zone_in_alarm_again_after_its_restore_is_no_longer_restored(
    sessions: sessionmaker[Session],
) -> None:
    opened = record(sessions, panel("BA"))
    record(sessions, panel("BR", at=T0 + timedelta(seconds=10)))
    again = record(sessions, panel("BA", at=T0 + timedelta(seconds=20)))

    assert again.alarm_id == opened.alarm_id and again.due_actions == ()  # a repeat: no second plan
    assert alarm(sessions, opened.alarm_id).restored_at is None
    assert timeline_kinds(sessions, opened.alarm_id)[-1] == "alarm.restore_withdrawn"
    record(sessions, panel("BR", at=T0 + timedelta(seconds=30)))
    assert alarm(sessions, opened.alarm_id).restored_at == T0 + timedelta(seconds=30)


def test_a_repeat_of_a_zone_not_restored_withdraws_nothing(sessions: sessionmaker[Session]) -> None:
    opened = record(sessions, panel("BA"))
    record(sessions, panel("BA", at=T0 + timedelta(seconds=20)))
    assert "alarm.restore_withdrawn" not in timeline_kinds(sessions, opened.alarm_id)


def test_an_exit_alarm_is_restored_by_the_burglary_restore_panels_send_for_it(
    sessions: sessionmaker[Session],
) -> None:
    # Contact ID 1374 (exit error) is EA; its restore, 3374, is BH: the zone reads normal again.
    opened = record(sessions, panel("EA"))
    restored = record(sessions, panel("BH", at=T0 + timedelta(seconds=10)))
    assert restored.alarm_id == opened.alarm_id
    assert alarm(sessions, opened.alarm_id).restored_at == T0 + timedelta(seconds=10)


def test_a_restore_before_its_alarm_is_kept_and_matched(sessions: sessionmaker[Session]) -> None:
    early = record(sessions, panel("BH", occurred_at=T0 + timedelta(seconds=2)))
    assert early.alarm_id is None
    opened = record(
        sessions, panel("BA", at=T0 + timedelta(seconds=3), occurred_at=T0 + timedelta(seconds=1))
    )
    assert alarm(sessions, opened.alarm_id).restored_at == T0
    with sessions() as session:
        assert session.get_one(EventRow, early.event_id).alarm_id == opened.alarm_id
    assert actions_of(sessions, opened.alarm_id)["tracktik.create_alarm"] == ActionState.QUEUED


def test_a_restore_before_its_alarm_is_matched_whichever_path_of_the_site_brought_it(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A dual-path panel: the restore came through the gateway, the alarm through the other path."""
    sites = dual_path_sites(tmp_path)
    with sessions.begin() as session:
        early = record_event(
            session, replace(panel("BH"), source_key="acme-gateway"), sites=sites, rules=RULES
        )
    assert early.alarm_id is None
    with sessions.begin() as session:
        opened = record_event(session, panel("BA", at=T0 + timedelta(seconds=3)), sites=sites, rules=RULES)
    assert alarm(sessions, opened.alarm_id).restored_at == T0
    assert "alarm.zone_restored" in timeline_kinds(sessions, opened.alarm_id)


def test_a_dual_path_panel_spelling_its_zone_two_ways_opens_one_alarm_and_one_response(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The DC-09 path says Contact ID zone "003", the gateway posts the number 3: one zone, one
    alarm, one dispatch (two alarms would each send a guard)."""
    sites = dual_path_sites(tmp_path)
    with sessions.begin() as session:
        first = record_event(session, panel("BA", zone="003"), sites=sites, rules=RULES)
    gateway = replace(panel("BA", zone="3", at=T0 + timedelta(seconds=1)), source_key="acme-gateway")
    with sessions.begin() as session:
        second = record_event(session, gateway, sites=sites, rules=RULES)
    assert second.alarm_id == first.alarm_id and second.due_actions == ()
    assert alarm(sessions, first.alarm_id).event_count == 2
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(Action)).scalar_one() == 2
        assert session.get_one(EventRow, second.event_id).zone == "3"  # as its sender wrote it


@pytest.mark.parametrize(("alarm_zone", "restore_zone"), [("003", "3"), ("3", "0003"), ("0", "000")])
def test_a_restore_spelling_the_zone_otherwise_is_the_alarm_s(
    sessions: sessionmaker[Session], alarm_zone: str, restore_zone: str
) -> None:
    opened = record(sessions, panel("BA", zone=alarm_zone))
    restored = record(sessions, panel("BR", zone=restore_zone, at=T0 + timedelta(seconds=10)))
    assert restored.alarm_id == opened.alarm_id
    assert alarm(sessions, opened.alarm_id).restored_at == T0 + timedelta(seconds=10)


def test_an_early_restore_spelling_the_zone_otherwise_is_adopted(sessions: sessionmaker[Session]) -> None:
    early = record(sessions, panel("BH", zone="003"))
    opened = record(sessions, panel("BA", zone="3", at=T0 + timedelta(seconds=3)))
    assert alarm(sessions, opened.alarm_id).restored_at == T0
    with sessions() as session:
        assert session.get_one(EventRow, early.event_id).alarm_id == opened.alarm_id


def test_a_restore_after_the_end_spelling_the_zone_otherwise_is_the_ended_alarm_s(
    sessions: sessionmaker[Session],
) -> None:
    opened = record(sessions, panel("BA", zone="03"))
    with sessions.begin() as session:
        assert opened.alarm_id is not None
        operations.end(session, opened.alarm_id, "false_alarm", now=T0 + timedelta(seconds=5), max_attempts=3)
    restored = record(sessions, panel("BR", zone="3", at=T0 + timedelta(seconds=10)))
    assert restored.alarm_id == opened.alarm_id


@pytest.mark.parametrize("other", ["30", "13", "103", "3A", "B3"])
def test_zones_that_only_look_alike_stay_apart(sessions: sessionmaker[Session], other: str) -> None:
    three = record(sessions, panel("BA", zone="003"))
    elsewhere = record(sessions, panel("BA", zone=other, at=T0 + timedelta(seconds=1)))
    assert elsewhere.alarm_id != three.alarm_id and elsewhere.opened is not None
    restore = record(sessions, panel("BR", zone=other, at=T0 + timedelta(seconds=2)))
    assert restore.alarm_id == elsewhere.alarm_id
    assert alarm(sessions, three.alarm_id).restored_at is None


def said(code: str, message: str, *, after_s: float = 0, occurred_after_s: float | None = None) -> Event:
    """A panel event with its text in the body, as steps read it for their context."""
    at = T0 + timedelta(seconds=after_s)
    occurred = at if occurred_after_s is None else T0 + timedelta(seconds=occurred_after_s)
    return replace(
        panel(code, at=at, occurred_at=occurred, message=message),
        payload={"code": code, "message": message},
    )


def test_an_adopted_early_restore_never_becomes_the_alarm_s_context(sessions: sessionmaker[Session]) -> None:
    """Dual-path reordering: the restore is adopted, but every step (a guard's note, a 911 incident
    time) must read the alarm's own event, not the restore's time and text."""
    early = record(sessions, said("FH", "kitchen normal", occurred_after_s=2))
    opened = record(sessions, said("FA", "kitchen smoke", after_s=3, occurred_after_s=1))

    assert alarm(sessions, opened.alarm_id).restored_at == T0  # adopted, as before
    with sessions() as session:
        assert session.get_one(EventRow, early.event_id).alarm_id == opened.alarm_id
        assert opened.alarm_id is not None
        context = load_context(session, opened.alarm_id, SITES)
    assert context is not None
    assert (context.occurred_at, context.message) == (T0 + timedelta(seconds=1), "kitchen smoke")
    assert context.payload["code"] == "FA"


def test_a_restore_after_its_alarm_ended_is_that_alarm_s_not_the_next_one_s(
    sessions: sessionmaker[Session],
) -> None:
    """Left unattached, the kitchen's restore was adopted by the next real fire four minutes later:
    the fire read "restored before it opened" and its steps carried the restore's time and text."""
    first = record(sessions, said("FA", "kitchen smoke"))
    assert first.alarm_id is not None
    with sessions.begin() as session:
        operations.end(session, first.alarm_id, "false_alarm", now=T0 + timedelta(seconds=20), max_attempts=3)
    restore = record(sessions, said("FR", "kitchen normal", after_s=30))
    second = record(sessions, said("FA", "kitchen smoke", after_s=240))

    assert second.alarm_id not in (None, first.alarm_id)
    assert alarm(sessions, second.alarm_id).restored_at is None
    assert "alarm.zone_restored" not in timeline_kinds(sessions, second.alarm_id)
    with sessions() as session:
        assert second.alarm_id is not None
        context = load_context(session, second.alarm_id, SITES)
    assert context is not None
    assert (context.occurred_at, context.message) == (T0 + timedelta(seconds=240), "kitchen smoke")
    # The restore is the ended alarm's, on its timeline.
    assert restore.alarm_id == first.alarm_id
    ended = alarm(sessions, first.alarm_id)
    assert (ended.state, ended.restored_at) == ("ended", T0 + timedelta(seconds=30))
    assert "alarm.zone_restored" in timeline_kinds(sessions, first.alarm_id)


def test_a_restore_long_after_an_ended_alarm_got_its_own_is_still_matched_to_a_later_alarm(
    sessions: sessionmaker[Session],
) -> None:
    """An ended alarm takes one restore (or the same again within the grouping window): a restore
    much later, with no live alarm, is still kept for an alarm that comes after it."""
    first = record(sessions, said("BA", "back door"))
    assert first.alarm_id is not None
    with sessions.begin() as session:
        operations.end(session, first.alarm_id, "false_alarm", now=T0 + timedelta(seconds=20), max_attempts=3)
    record(sessions, said("BH", "back door normal", after_s=30))
    early = record(sessions, said("BH", "back door normal", after_s=3600))
    opened = record(sessions, said("BA", "back door", after_s=3602))

    assert early.alarm_id is None and opened.alarm_id != first.alarm_id
    with sessions() as session:
        assert session.get_one(EventRow, early.event_id).alarm_id == opened.alarm_id
    assert alarm(sessions, opened.alarm_id).restored_at == T0 + timedelta(seconds=3600)


@pytest.mark.parametrize(
    ("restore_spelling", "alarm_spelling"),
    [(" AB-95367 ", MONTREAL_ACCOUNT), (MONTREAL_ACCOUNT, "AB-95367"), ("Ab-95367", " aB-95367")],
)
def test_a_restore_before_its_alarm_is_matched_however_each_spells_the_account(
    sessions: sessionmaker[Session], restore_spelling: str, alarm_spelling: str
) -> None:
    """Routing ignores case and spaces, so the early restore must be found the same way: else the
    alarm never learns its zone was already normal (restored_at stays empty, the restore unattached)."""
    early = record(sessions, panel("BH", account=restore_spelling))
    assert early.alarm_id is None
    opened = record(sessions, panel("BA", account=alarm_spelling, at=T0 + timedelta(seconds=3)))
    assert alarm(sessions, opened.alarm_id).restored_at == T0
    with sessions() as session:
        row = session.get_one(EventRow, early.event_id)
        assert row.alarm_id == opened.alarm_id
        assert row.account == MONTREAL_ACCOUNT  # as the site lists it; the body keeps the sender's
    assert "alarm.zone_restored" in timeline_kinds(sessions, opened.alarm_id)


def test_a_user_opening_within_the_cancel_window_stands_the_response_down_and_ends_the_alarm(
    sessions: sessionmaker[Session],
) -> None:
    opened = record(sessions, panel("BA"))
    cancel = record(sessions, panel("OP", zone="7", at=T0 + timedelta(seconds=30)))
    assert cancel.alarm_id == opened.alarm_id
    assert actions_of(sessions, opened.alarm_id) == {
        "tracktik.create_alarm": ActionState.CANCELLED,  # never sent: no guard leaves for it
        "callonalarm.trigger": ActionState.CANCELLED,  # held 60 s: the owner disarmed in time
    }
    ended = alarm(sessions, opened.alarm_id)
    assert (ended.state, ended.outcome, ended.needs_person_reason) == ("ended", "cancelled", None)
    assert cancel.due_actions == ()  # nothing was engaged: nothing to stand down upstream
    kinds = timeline_kinds(sessions, opened.alarm_id)
    assert kinds.index("alarm.cancelled_by_user") < kinds.index("alarm.ended")


def through_gateway(event: Event) -> Event:
    return replace(event, source_key="acme-gateway")


# DUAL_PATH_COPIES=true: late copies of openings are recognised (off by default).
COPIES = replace(RULES, path_copies=True)


def record_at(
    sessions: sessionmaker[Session], sites: Any, event: Event, rules: IntakeRules = COPIES
) -> Receipt:
    with sessions.begin() as session:
        return record_event(session, event, sites=sites, rules=rules)


# The panel's stamp on its burglary: seconds past a minute, as a clock that writes seconds gives.
STAMP = T0 + timedelta(seconds=7)


def user_disarms(sessions: sessionmaker[Session], sites: Any, *, at_s: float) -> Receipt:
    """The user's opening (OP, user 7) through the panel path, whose clock runs a second ahead."""
    opening = panel(
        "OP", zone="7", at=T0 + timedelta(seconds=at_s), occurred_at=T0 + timedelta(seconds=at_s + 1)
    )
    return record_at(sessions, sites, opening)


def test_a_dual_path_copy_arriving_after_the_user_s_cancel_opens_nothing(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The cellular path's copy of the burglary arrives a minute late, after the owner disarmed:
    it is the signal already cancelled, not a new alarm that would send a guard."""
    sites = dual_path_sites(tmp_path)
    opened = record_at(sessions, sites, panel("BA", occurred_at=STAMP))
    record_at(sessions, sites, panel("OP", zone="7", at=T0 + timedelta(seconds=30)))
    assert alarm(sessions, opened.alarm_id).outcome == "cancelled"

    late = through_gateway(panel("BA", zone="003", at=T0 + timedelta(seconds=60), occurred_at=STAMP))
    copy = record_at(sessions, sites, late)

    assert copy.alarm_id == opened.alarm_id and copy.opened is None and copy.due_actions == ()
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(Alarm)).scalar_one() == 1
    assert actions_of(sessions, opened.alarm_id) == {
        "tracktik.create_alarm": ActionState.CANCELLED,
        "callonalarm.trigger": ActionState.CANCELLED,
    }
    assert timeline_kinds(sessions, opened.alarm_id)[-1] == "alarm.path_copy"
    assert alarm(sessions, opened.alarm_id).event_count == 2  # the cancel is not one of its events


def test_by_default_a_late_copy_after_the_cancel_opens_an_alarm_never_absorbs_one(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """DUAL_PATH_COPIES off (the default): the late copy opens an alarm and sends again, and so a
    new trip through a path whose clock differs, stamped by coincidence like the first, is never
    absorbed: the paths' clocks are not trusted to be one."""
    sites = dual_path_sites(tmp_path)
    first = record_at(sessions, sites, panel("BA", occurred_at=STAMP), RULES)
    record_at(sessions, sites, panel("OP", zone="7", at=T0 + timedelta(seconds=30)), RULES)
    assert alarm(sessions, first.alarm_id).outcome == "cancelled"
    trip = through_gateway(panel("BA", at=T0 + timedelta(seconds=48), occurred_at=STAMP))
    new = record_at(sessions, sites, trip, RULES)
    assert new.alarm_id != first.alarm_id and new.opened is not None and new.due_actions != ()


def test_a_dual_path_copy_arriving_after_an_operator_s_end_opens_nothing(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sites = dual_path_sites(tmp_path)
    opened = record_at(sessions, sites, panel("FA", occurred_at=STAMP))
    with sessions.begin() as session:
        assert opened.alarm_id is not None
        operations.end(
            session, opened.alarm_id, "false_alarm", now=T0 + timedelta(seconds=20), max_attempts=3
        )
    late = through_gateway(panel("FA", at=T0 + timedelta(seconds=90), occurred_at=STAMP))
    copy = record_at(sessions, sites, late)
    assert copy.alarm_id == opened.alarm_id and copy.opened is None


def test_a_copy_after_its_alarm_went_quiet_does_not_dispatch_again(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Past the grouping window the alarm is no longer joined; its late copy is still its own."""
    sites = dual_path_sites(tmp_path)
    rules = replace(COPIES, grouping_window=timedelta(seconds=60))
    with sessions.begin() as session:
        opened = record_event(session, panel("BA", occurred_at=STAMP), sites=sites, rules=rules)
    late = through_gateway(panel("BA", at=T0 + timedelta(seconds=120), occurred_at=STAMP))
    with sessions.begin() as session:
        copy = record_event(session, late, sites=sites, rules=rules)
    assert copy.alarm_id == opened.alarm_id and copy.due_actions == ()


@pytest.mark.parametrize(
    ("code", "zone", "stamped"),
    [
        pytest.param("BA", "3", STAMP + timedelta(seconds=50), id="a-new-trip-has-its-own-time"),
        pytest.param("BA", "3", None, id="no-sender-time-is-never-a-copy"),
        pytest.param("BA", "4", STAMP, id="another-zone"),
        pytest.param("FA", "3", STAMP, id="another-code"),
    ],
)
def test_after_a_cancel_a_new_signal_through_the_other_path_opens_its_alarm(
    sessions: sessionmaker[Session], tmp_path: Path, code: str, zone: str, stamped: datetime | None
) -> None:
    sites = dual_path_sites(tmp_path)
    opened = record_at(sessions, sites, panel("BA", occurred_at=STAMP))
    record_at(sessions, sites, panel("OP", zone="7", at=T0 + timedelta(seconds=30)))
    signal = panel(code, zone=zone, at=T0 + timedelta(seconds=60), occurred_at=stamped)
    new = record_at(sessions, sites, through_gateway(signal))
    assert new.alarm_id != opened.alarm_id and new.opened is not None and new.due_actions != ()


def test_a_stamp_on_a_whole_minute_is_never_taken_for_a_copy(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A gateway whose clock writes minutes only stamps a new trip after the cancel with its first
    one's time: it opens its alarm (a real copy stamped on the minute does too, as before)."""
    sites = dual_path_sites(tmp_path)
    opened = record_at(sessions, sites, panel("BA", occurred_at=T0))
    record_at(sessions, sites, panel("OP", zone="7", at=T0 + timedelta(seconds=30)))
    new = record_at(
        sessions, sites, through_gateway(panel("BA", at=T0 + timedelta(seconds=50), occurred_at=T0))
    )
    assert new.alarm_id != opened.alarm_id and new.opened is not None


def test_the_same_path_after_a_cancel_is_a_new_alarm_whatever_its_time(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Only another path's copy is looked for: through its own path a panel's retry is recognised
    by its dedupe key, and anything else it sends is new."""
    sites = dual_path_sites(tmp_path)
    opened = record_at(sessions, sites, panel("BA", sender_event_id="7", occurred_at=STAMP))
    record_at(sessions, sites, panel("OP", zone="7", at=T0 + timedelta(seconds=30)))
    again = panel("BA", sender_event_id="8", at=T0 + timedelta(seconds=60), occurred_at=STAMP)
    new = record_at(sessions, sites, again)
    assert new.alarm_id != opened.alarm_id and new.opened is not None


@pytest.mark.parametrize("zone", ["0000003", "000000", "0000000000012"])
def test_a_zone_padded_beyond_the_spellings_still_groups_and_restores_with_itself(
    sessions: sessionmaker[Session], zone: str
) -> None:
    first = record(sessions, panel("BA", zone=zone))
    again = record(sessions, panel("BA", zone=zone, at=T0 + timedelta(seconds=5)))
    assert again.alarm_id == first.alarm_id and again.due_actions == ()
    restored = record(sessions, panel("BR", zone=zone, at=T0 + timedelta(seconds=10)))
    assert restored.alarm_id == first.alarm_id


@pytest.mark.parametrize(("alarm_code", "restore", "trouble"), [("FA", "FH", "FT"), ("BA", "BH", "BT")])
def test_a_trouble_joining_a_restored_alarm_leaves_its_restore(
    sessions: sessionmaker[Session], alarm_code: str, restore: str, trouble: str
) -> None:
    """A trouble of the zone joins its alarm, but is not the alarm's condition again: withdrawing
    the restore would leave the page saying "in alarm" for good (the trouble's restore never clears
    the alarm's condition)."""
    opened = record(sessions, panel(alarm_code))
    record(sessions, panel(restore, at=T0 + timedelta(seconds=10)))
    joined = record(sessions, panel(trouble, at=T0 + timedelta(seconds=20)))
    assert joined.alarm_id == opened.alarm_id
    assert alarm(sessions, opened.alarm_id).restored_at == T0 + timedelta(seconds=10)
    assert "alarm.restore_withdrawn" not in timeline_kinds(sessions, opened.alarm_id)


def test_an_exit_alarm_joining_a_restored_burglary_withdraws_its_restore(
    sessions: sessionmaker[Session],
) -> None:
    """Another code of the condition the restore clears (EA and BA are both restored by BH) is the
    zone in alarm again."""
    opened = record(sessions, panel("BA"))
    record(sessions, panel("BH", at=T0 + timedelta(seconds=10)))
    record(sessions, panel("EA", at=T0 + timedelta(seconds=20)))
    assert alarm(sessions, opened.alarm_id).restored_at is None


def test_a_path_copy_within_the_grouping_window_leaves_the_restore(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The other path's late copy of the signal the zone's restore already restored is not the zone
    in alarm again (a gateway that forwards no restores would never put the restore back)."""
    sites = dual_path_sites(tmp_path)
    opened = record_at(sessions, sites, panel("BA", occurred_at=STAMP))
    record_at(sessions, sites, panel("BR", at=T0 + timedelta(seconds=10)))
    late = through_gateway(panel("BA", at=T0 + timedelta(seconds=40), occurred_at=STAMP))
    assert record_at(sessions, sites, late).alarm_id == opened.alarm_id
    assert alarm(sessions, opened.alarm_id).restored_at == T0 + timedelta(seconds=10)


def test_a_new_trip_on_a_coarse_clock_after_both_copies_came_is_a_new_alarm(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Both paths stamp the panel's time coarsely (tens of seconds): the fire and its copy both say
    12:00:10; an operator ends it as false; the detector trips again and the first path stamps
    12:00:10 again, with a new id. That path already brought its copy of the first: this is a new
    signal, and its fire plan runs."""
    sites = dual_path_sites(tmp_path)
    stamp = T0 + timedelta(seconds=10)
    opened = record_at(sessions, sites, panel("FA", sender_event_id="1", occurred_at=stamp))
    copy = through_gateway(
        panel("FA", at=T0 + timedelta(seconds=11), occurred_at=stamp, sender_event_id="g1")
    )
    assert record_at(sessions, sites, copy).alarm_id == opened.alarm_id
    with sessions.begin() as session:
        assert opened.alarm_id is not None
        operations.end(
            session, opened.alarm_id, "false_alarm", now=T0 + timedelta(seconds=20), max_attempts=3
        )
    again = panel("FA", at=T0 + timedelta(seconds=25), occurred_at=stamp, sender_event_id="2")
    new = record_at(sessions, sites, again)
    assert new.alarm_id != opened.alarm_id and new.opened is not None and new.due_actions != ()


def test_two_trips_stamped_alike_and_their_two_late_copies_open_no_third_alarm(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A coarse clock stamps two trips alike, each cancelled; the gateway's two copies arrive late.
    The second copy belongs to the first alarm (the second already holds the gateway's copy): it
    must not open a third alarm and send a guard."""
    sites = dual_path_sites(tmp_path)
    first = record_at(sessions, sites, panel("BA", occurred_at=STAMP, sender_event_id="1"))
    record_at(sessions, sites, panel("OP", zone="7", at=T0 + timedelta(seconds=9), sender_event_id="c1"))
    again = panel("BA", at=T0 + timedelta(seconds=10), occurred_at=STAMP, sender_event_id="2")
    second = record_at(sessions, sites, again)
    assert second.opened is not None  # a new trip: this path already brought that stamp
    record_at(sessions, sites, panel("OP", zone="7", at=T0 + timedelta(seconds=12), sender_event_id="c2"))

    copies = [
        record_at(
            sessions,
            sites,
            # Ids of their own: two copies alike without one are one delivery sent twice.
            through_gateway(
                panel("BA", at=T0 + timedelta(seconds=40 + n), occurred_at=STAMP, sender_event_id=f"g{n}")
            ),
        )
        for n in range(2)
    ]

    assert [c.opened for c in copies] == [None, None] and [c.due_actions for c in copies] == [(), ()]
    assert sorted(c.alarm_id for c in copies) == sorted([first.alarm_id, second.alarm_id])
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(Alarm)).scalar_one() == 2


def test_the_same_path_tripping_again_at_the_same_stamp_withdraws_the_restore(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """One DC-09 frame stamps its events alike: BA, BR, BA of zone 3 within a second, the gateway's
    copy of the first BA already in. The second BA through the same path is the zone in alarm again,
    not the gateway's copy."""
    sites = dual_path_sites(tmp_path)
    opened = record_at(sessions, sites, panel("BA", occurred_at=STAMP, sender_event_id="f1/0"))
    copy = through_gateway(panel("BA", at=T0 + timedelta(seconds=1), occurred_at=STAMP, sender_event_id="g1"))
    assert record_at(sessions, sites, copy).alarm_id == opened.alarm_id
    restore = panel("BR", at=T0 + timedelta(seconds=2), occurred_at=STAMP, sender_event_id="f1/1")
    record_at(sessions, sites, restore)
    assert alarm(sessions, opened.alarm_id).restored_at is not None
    again = panel("BA", at=T0 + timedelta(seconds=2), occurred_at=STAMP, sender_event_id="f1/2")
    assert record_at(sessions, sites, again).alarm_id == opened.alarm_id
    assert alarm(sessions, opened.alarm_id).restored_at is None


def test_the_late_copy_of_a_restore_after_the_zone_tripped_again_restores_nothing(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Path A: BA, BR, BA (the restore withdrawn). The gateway's copies come late: its BR is the
    restore the alarm already holds, not the zone normal again."""
    sites = dual_path_sites(tmp_path)
    t1, t2, t3 = STAMP, STAMP + timedelta(seconds=10), STAMP + timedelta(seconds=20)
    opened = record_at(sessions, sites, panel("BA", at=t1, occurred_at=t1))
    record_at(sessions, sites, panel("BR", at=t2, occurred_at=t2))
    record_at(sessions, sites, panel("BA", at=t3, occurred_at=t3))
    assert alarm(sessions, opened.alarm_id).restored_at is None
    record_at(sessions, sites, through_gateway(panel("BA", at=t3 + timedelta(seconds=30), occurred_at=t1)))
    late_restore = through_gateway(panel("BR", at=t3 + timedelta(seconds=31), occurred_at=t2))
    assert record_at(sessions, sites, late_restore).alarm_id == opened.alarm_id
    assert alarm(sessions, opened.alarm_id).restored_at is None
    assert timeline_kinds(sessions, opened.alarm_id)[-1] == "alarm.path_copy"
    record_at(
        sessions, sites, panel("BR", at=t3 + timedelta(seconds=40), occurred_at=t3 + timedelta(seconds=5))
    )
    assert alarm(sessions, opened.alarm_id).restored_at == t3 + timedelta(seconds=40)  # a real restore


def test_the_late_copy_of_a_user_s_cancel_does_not_stand_down_the_next_alarm(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A: BA zone 3, the user's OP (alarm 1 cancelled), then a burglary of zone 5 (alarm 2: another
    area still armed). The gateway's copy of the OP comes a minute late, inside alarm 2's cancel
    window by receive time: it is the disarm already acted on, and stands nothing down."""
    sites = dual_path_sites(tmp_path)
    first = record_at(sessions, sites, panel("BA", occurred_at=STAMP))
    user_disarms(sessions, sites, at_s=30)
    assert alarm(sessions, first.alarm_id).outcome == "cancelled"
    second = record_at(
        sessions,
        sites,
        panel("BA", zone="5", at=T0 + timedelta(seconds=50), occurred_at=T0 + timedelta(seconds=51)),
    )
    assert second.opened is not None

    late = through_gateway(
        panel("OP", zone="7", at=T0 + timedelta(seconds=95), occurred_at=T0 + timedelta(seconds=31))
    )
    copy = record_at(sessions, sites, late)

    assert copy.alarm_id == first.alarm_id and copy.due_actions == ()
    assert alarm(sessions, second.alarm_id).state == "open"
    assert ActionState.CANCELLED not in actions_of(sessions, second.alarm_id).values()
    assert timeline_kinds(sessions, first.alarm_id)[-1] == "alarm.path_copy"


def test_the_late_copy_of_a_disarm_made_while_nothing_was_live_stands_nothing_down(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sites = dual_path_sites(tmp_path)
    disarm = panel("OP", zone="7", at=T0, occurred_at=STAMP)
    assert record_at(sessions, sites, disarm).alarm_id is None  # nothing live: an event only
    opened = record_at(
        sessions, sites, panel("BA", at=T0 + timedelta(seconds=20), occurred_at=STAMP + timedelta(seconds=20))
    )
    copy = record_at(
        sessions, sites, through_gateway(replace(disarm, received_at=T0 + timedelta(seconds=40)))
    )
    assert copy.alarm_id is None and copy.due_actions == ()
    assert alarm(sessions, opened.alarm_id).state == "open"


def test_a_cancel_through_the_other_path_at_its_own_stamp_still_cancels(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Only a copy is set aside: the user's second disarm, reaching the bridge through the gateway
    alone (the first path down), stands the burglary down as ever, beside an earlier disarm of the
    same user through the panel path."""
    sites = dual_path_sites(tmp_path)
    earlier = panel("OP", zone="7", at=T0 - timedelta(seconds=60), occurred_at=T0 - timedelta(seconds=59))
    record_at(sessions, sites, earlier)
    opened = record_at(sessions, sites, panel("BA", occurred_at=STAMP))
    disarm = through_gateway(
        panel("OP", zone="7", at=T0 + timedelta(seconds=30), occurred_at=T0 + timedelta(seconds=31))
    )
    record_at(sessions, sites, disarm)
    assert alarm(sessions, opened.alarm_id).outcome == "cancelled"


@pytest.mark.parametrize("elsewhere", [False, True], ids=["alone", "another-account-at-the-stamp"])
def test_a_new_trip_through_a_backup_path_whose_clock_runs_behind_is_never_absorbed(
    sessions: sessionmaker[Session], tmp_path: Path, elsewhere: bool
) -> None:
    """The gateway's clock runs 40 s behind the panel path's. A: BA stamped 12:00:07 (alarm 1); the
    gateway's copy, stamped 11:59:27, joins; the user's OP cancels. A's path then fails; the zone
    trips 40 s later and the gateway stamps it 12:00:07, A's stamp on alarm 1. The gateway brought
    this code to alarm 1 at a stamp A never sent: its clock is another, and this is a new alarm.
    The clock test looks inside the alarm only: another account's burglary at the gateway's stamp
    (``elsewhere``) changes nothing."""
    sites = dual_path_sites(tmp_path)
    skew = timedelta(seconds=40)
    if elsewhere:
        record_at(sessions, sites, panel("BA", account=NEWTON_ACCOUNT, zone="1", occurred_at=STAMP - skew))
    first = record_at(sessions, sites, panel("BA", occurred_at=STAMP))
    copy = through_gateway(panel("BA", at=T0 + timedelta(seconds=8), occurred_at=STAMP - skew))
    assert record_at(sessions, sites, copy).alarm_id == first.alarm_id
    user_disarms(sessions, sites, at_s=30)

    trip = through_gateway(panel("BA", at=T0 + timedelta(seconds=48), occurred_at=STAMP))
    new = record_at(sessions, sites, trip)

    assert new.alarm_id != first.alarm_id and new.opened is not None and new.due_actions != ()


def test_the_late_copy_of_a_cancel_stamped_on_a_whole_minute_stands_nothing_down(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A whole minute keeps an opening from being taken for a copy; a cancel's copy is recognised
    whatever its stamp (taken wrongly, a cancel is ignored: the response goes on)."""
    sites = dual_path_sites(tmp_path)
    first = record_at(sessions, sites, panel("BA", occurred_at=STAMP))
    disarm = panel("OP", zone="7", at=T0 + timedelta(seconds=61), occurred_at=T0 + timedelta(seconds=60))
    record_at(sessions, sites, disarm)
    assert alarm(sessions, first.alarm_id).outcome == "cancelled"
    second = record_at(
        sessions,
        sites,
        panel("BA", zone="5", at=T0 + timedelta(seconds=80), occurred_at=T0 + timedelta(seconds=81)),
    )
    record_at(sessions, sites, through_gateway(replace(disarm, received_at=T0 + timedelta(seconds=125))))
    assert alarm(sessions, second.alarm_id).state == "open"


def test_the_late_copy_of_a_cancel_whose_alarm_waits_for_a_person_stands_nothing_down(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The original cancel's alarm is still live (a panel cancel waiting for a person to recall a
    responder): the copy is found there, and the alarm opened since goes on."""
    sites = dual_path_sites(tmp_path)
    first = record_at(sessions, sites, panel("BA", occurred_at=STAMP))
    disarm = panel("OP", zone="7", at=T0 + timedelta(seconds=30), occurred_at=T0 + timedelta(seconds=31))
    record_at(sessions, sites, disarm)
    with sessions.begin() as session:  # as a dispatched guard leaves it: waiting for a person
        held = session.get_one(Alarm, first.alarm_id)
        held.state, held.ended_at, held.panel_cancelled_at = "needs_person", None, T0 + timedelta(seconds=30)
    second = record_at(
        sessions,
        sites,
        panel("BA", zone="5", at=T0 + timedelta(seconds=50), occurred_at=T0 + timedelta(seconds=51)),
    )
    copy = record_at(
        sessions, sites, through_gateway(replace(disarm, received_at=T0 + timedelta(seconds=95)))
    )
    assert copy.alarm_id == first.alarm_id
    assert alarm(sessions, second.alarm_id).state == "open"


def test_a_copy_after_one_path_alone_brought_an_earlier_trip_opens_an_alarm_never_absorbs_one(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """One clock on both paths. Trip 1 reached the gateway alone (the panel path down a moment);
    trip 2 both, the gateway's copy late, after the user's cancel. By their stamps this is the
    slow-clock case below with another arrival order, so the copy opens an alarm (sent twice, a
    known limit) rather than risk absorbing a real trip."""
    sites = dual_path_sites(tmp_path)
    first = record_at(sessions, sites, through_gateway(panel("BA", occurred_at=STAMP)))
    second_stamp = STAMP + timedelta(seconds=20)
    record_at(sessions, sites, panel("BA", at=T0 + timedelta(seconds=28), occurred_at=second_stamp))
    user_disarms(sessions, sites, at_s=40)
    assert alarm(sessions, first.alarm_id).outcome == "cancelled"
    late = through_gateway(panel("BA", at=T0 + timedelta(seconds=90), occurred_at=second_stamp))
    copy = record_at(sessions, sites, late)
    assert copy.alarm_id != first.alarm_id and copy.opened is not None


def test_a_slow_clock_path_that_delivered_first_never_has_its_new_trip_absorbed(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The gateway's clock runs 40 s behind and it delivered first: its stamp is on the alarm from
    before the panel path's. Its new trip after the cancel, stamped like the panel path's old one,
    opens its alarm."""
    sites = dual_path_sites(tmp_path)
    skew = timedelta(seconds=40)
    first = record_at(sessions, sites, through_gateway(panel("BA", occurred_at=STAMP - skew)))
    joined = record_at(sessions, sites, panel("BA", at=T0 + timedelta(seconds=1), occurred_at=STAMP))
    assert joined.alarm_id == first.alarm_id
    user_disarms(sessions, sites, at_s=30)
    trip = through_gateway(panel("BA", at=T0 + timedelta(seconds=48), occurred_at=STAMP))
    new = record_at(sessions, sites, trip)
    assert new.alarm_id != first.alarm_id and new.opened is not None and new.due_actions != ()


def test_the_cancel_copy_lookup_reads_the_account_s_live_alarms_not_the_site_s_history(
    sqlite_url: str, tmp_path: Path
) -> None:
    """SQLite is never ANALYZEd: its plan for the live alarms must go by account and state."""
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    sites = dual_path_sites(tmp_path)
    record_at(sessions, sites, panel("BA", occurred_at=STAMP))
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if "UNION ALL" in statement and "alarms" in statement:
            rows = conn.connection.driver_connection.execute("EXPLAIN QUERY PLAN " + statement, params)
            plans.extend(str(row[-1]) for row in rows.fetchall())

    sa_event.listen(engine, "before_cursor_execute", explain)
    try:
        record_at(sessions, sites, panel("OP", zone="7", at=T0 + timedelta(seconds=30), occurred_at=STAMP))
    finally:
        sa_event.remove(engine, "before_cursor_execute", explain)
        engine.dispose()
    alarm_reads = [plan for plan in plans if "alarms" in plan and "events" not in plan]
    assert alarm_reads and not [plan for plan in alarm_reads if "ix_alarms_site_opened_at" in plan], plans


def test_a_site_with_one_panel_path_beside_alta_looks_for_no_copy(
    sessions: sessionmaker[Session], statements: list[str]
) -> None:
    """Montréal's sources are its panels and Alta: Alta's webhooks carry no code, so no panel signal
    can have a copy there, and an opening pays no query for one."""
    assert len(SITES.site_for_account("acme-panels", MONTREAL_ACCOUNT).sources) == 2  # type: ignore[union-attr]
    statements.clear()
    opened = record(sessions, panel("BA", occurred_at=STAMP))
    assert opened.opened is not None
    assert not [sql for sql in statements if "events.occurred_at =" in sql]


def test_a_cancel_after_the_window_stops_nothing(sessions: sessionmaker[Session]) -> None:
    opened = record(sessions, panel("BA"))
    record(sessions, panel("BC", at=T0 + timedelta(seconds=91)))  # Montréal's window is 90 s
    assert actions_of(sessions, opened.alarm_id)["callonalarm.trigger"] == ActionState.PENDING
    assert "alarm.cancel_too_late" in timeline_kinds(sessions, opened.alarm_id)


def test_fire_is_never_held_for_a_cancel(sessions: sessionmaker[Session]) -> None:
    fire = record(sessions, panel("FA"))
    cancel = record(sessions, panel("FC", at=T0 + timedelta(seconds=5)))
    assert cancel.alarm_id == fire.alarm_id and cancel.due_actions == ()
    assert set(actions_of(sessions, fire.alarm_id).values()) == {ActionState.QUEUED}
    assert alarm(sessions, fire.alarm_id).state == "open"
    assert "alarm.cancel_ignored" in timeline_kinds(sessions, fire.alarm_id)


def test_a_user_opening_stops_nothing_of_a_fire_alarm_and_is_noted_on_it(
    sessions: sessionmaker[Session],
) -> None:
    fire = record(sessions, panel("FA", zone="5"))
    burglary = record(sessions, panel("BA", zone="3", at=T0 + timedelta(seconds=1)))
    cancel = record(sessions, panel("OP", zone="7", at=T0 + timedelta(seconds=5)))
    assert cancel.alarm_id == burglary.alarm_id
    assert set(actions_of(sessions, fire.alarm_id).values()) == {ActionState.QUEUED}
    kinds = set(timeline_kinds(sessions, fire.alarm_id))
    assert "alarm.cancel_ignored" in kinds and "alarm.cancelled_by_user" not in kinds
    assert alarm(sessions, fire.alarm_id).state == "open"
    assert alarm(sessions, burglary.alarm_id).outcome == "cancelled"


def test_a_disarm_after_a_holdup_is_on_the_holdup_alarm_and_stops_nothing(
    sessions: sessionmaker[Session],
) -> None:
    # A user's opening right after a duress or holdup can be the duress itself: the operator must see
    # it on that alarm, and nothing of its response stops.
    holdup = record(sessions, panel("HA", zone="2"))
    opening = record(sessions, panel("OP", zone="7", at=T0 + timedelta(seconds=5)))

    assert opening.alarm_id is None and opening.due_actions == ()  # no alarm of its own families
    assert alarm(sessions, holdup.alarm_id).state == "open"
    assert "alarm.cancel_ignored" in timeline_kinds(sessions, holdup.alarm_id)
    assert ActionState.CANCELLED not in set(actions_of(sessions, holdup.alarm_id).values())


def test_an_unclaimed_account_opens_an_unrouted_alarm_for_a_person(sessions: sessionmaker[Session]) -> None:
    receipt = record(sessions, panel("BA", account="no-such-panel"))
    unrouted = alarm(sessions, receipt.alarm_id)
    assert unrouted.site_key is None
    assert unrouted.needs_person
    assert "unrouted" in (unrouted.needs_person_reason or "")
    assert receipt.due_actions == () and actions_of(sessions, receipt.alarm_id) == {}


def test_an_unknown_code_waits_for_a_person_at_life_safety_priority(sessions: sessionmaker[Session]) -> None:
    # Montréal's plan has a default list (TrackTik, a call): an unknown code must not take it.
    receipt = record(sessions, panel("QZ9", message="ZONE 9 LINE CUT?"))
    flagged = alarm(sessions, receipt.alarm_id)
    assert (flagged.family, flagged.priority, flagged.needs_person) == ("unknown", "life_safety", True)
    assert "'QZ9'" in (flagged.needs_person_reason or "")
    assert "ZONE 9 LINE CUT?" in (flagged.needs_person_reason or "")
    assert "nothing is dispatched on a guess" in (flagged.needs_person_reason or "")
    assert receipt.due_actions == () and actions_of(sessions, receipt.alarm_id) == {}


def test_a_different_unknown_code_joining_an_open_unknown_alarm_goes_to_a_person_again(
    sessions: sessionmaker[Session],
) -> None:
    """All unknown codes share the family "unknown": a new one joined the acknowledged alarm as a
    mere repeat, and nobody read it."""
    opened = record(sessions, panel("QZ"))
    assert opened.alarm_id is not None
    with sessions.begin() as session:
        operations.acknowledge(session, opened.alarm_id, now=T0 + timedelta(seconds=10), max_attempts=3)
    assert alarm(sessions, opened.alarm_id).state == "open"

    joined = record(sessions, panel("ZQ", at=T0 + timedelta(seconds=30), message="AUX 3"))

    assert joined.alarm_id == opened.alarm_id and joined.due_actions == ()
    raised = alarm(sessions, opened.alarm_id)
    assert raised.state == "needs_person"
    assert "unknown event code 'ZQ' with text 'AUX 3' joined the alarm" in (raised.needs_person_reason or "")
    assert timeline_kinds(sessions, opened.alarm_id)[-1] == "alarm.needs_person"


@pytest.mark.parametrize("again", ["QZ", "ZQ"])
def test_the_same_unknown_code_again_is_a_repeat(sessions: sessionmaker[Session], again: str) -> None:
    opened = record(sessions, panel("QZ"))
    record(sessions, panel("ZQ", at=T0 + timedelta(seconds=30)))
    assert opened.alarm_id is not None
    with sessions.begin() as session:
        operations.acknowledge(session, opened.alarm_id, now=T0 + timedelta(seconds=40), max_attempts=3)

    record(sessions, panel(again, at=T0 + timedelta(seconds=50)))

    assert alarm(sessions, opened.alarm_id).state == "open"
    assert timeline_kinds(sessions, opened.alarm_id)[-1] == "alarm.repeated"


def test_an_unknown_code_runs_the_plan_s_unknown_list_when_it_has_one(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    text = EXAMPLE_SITES.read_text(encoding="utf-8")
    opted = 'default  = ["tracktik.create_alarm", "callonalarm.trigger"]'
    assert opted in text
    path = tmp_path / "sites.toml"
    path.write_text(text.replace(opted, opted + '\nunknown  = ["callonalarm.trigger"]'), encoding="utf-8")
    sites = load_sites(path, SOURCE_ENV)
    with sessions.begin() as session:
        receipt = record_event(session, panel("QZ"), sites=sites, rules=RULES)
    assert [(d.task_name, d.queue) for d in receipt.due_actions] == [("callonalarm.trigger", "life_safety")]
    flagged = alarm(sessions, receipt.alarm_id)
    assert flagged.needs_person and 'runs its "unknown" list' in (flagged.needs_person_reason or "")


def test_a_trouble_takes_the_trouble_plan_on_the_bulk_queue(sessions: sessionmaker[Session]) -> None:
    receipt = record(sessions, panel("AT"))
    assert [(d.task_name, d.queue) for d in receipt.due_actions] == [("callonalarm.trigger", "bulk")]


def test_closings_and_tests_are_recorded_without_an_alarm(sessions: sessionmaker[Session]) -> None:
    for code in ("CL", "RP"):
        receipt = record(sessions, panel(code))
        assert receipt.alarm_id is None
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(Alarm)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(EventRow)).scalar_one() == 2


def test_clock_skew_is_flagged_not_rejected(sessions: sessionmaker[Session]) -> None:
    receipt = record(sessions, panel("BA", occurred_at=T0 - timedelta(hours=2)))
    assert "event.clock_skew" in timeline_kinds(sessions, receipt.alarm_id)
    with sessions() as session:
        assert session.get_one(EventRow, receipt.event_id).clock_skew_s == 7200


def test_an_alta_zone_alarm_runs_the_alta_steps_too(sessions: sessionmaker[Session]) -> None:
    event = Event(
        source_key="alta-main",
        source_kind="alta",
        received_at=T0,
        account=ALTA_ZONE,
        zone=ALTA_ZONE,
        details={"alarm_zone_name": "Loading dock"},
    )
    receipt = record(sessions, event)
    assert [d.task_name for d in receipt.due_actions] == ["alta.find_ongoing_alert", "tracktik.create_alarm"]
    assert alarm(sessions, receipt.alarm_id).description == "Alta alarm zone Loading dock"


def test_the_residential_site_follows_its_own_plan(sessions: sessionmaker[Session]) -> None:
    receipt = record(sessions, panel("MA", account=NEWTON_ACCOUNT))
    assert [d.task_name for d in receipt.due_actions] == ["rapidsos.create_alert"]  # the call follows it
    assert set(actions_of(sessions, receipt.alarm_id)) == {"rapidsos.create_alert", "callonalarm.trigger"}


def test_a_cancel_stops_a_held_call_that_already_retried_and_sends_the_restore(
    sessions: sessionmaker[Session],
) -> None:
    from app.domain import actions as action_rules

    opened = record(sessions, panel("BA"))
    with sessions.begin() as session:
        call = session.execute(
            select(Action).where(Action.alarm_id == opened.alarm_id, Action.kind == "callonalarm.trigger")
        ).scalar_one()
        call.due_at = T0  # its delay is over; its first attempt got a 503
        call_id = call.id
    with sessions.begin() as session:
        claimed = action_rules.claim(
            session, call_id, now=T0 + timedelta(seconds=1), lease=timedelta(seconds=90)
        )
        assert claimed is not None
        action_rules.retry_later(session, claimed, now=T0 + timedelta(seconds=1), error="HTTP 503", delay_s=5)
    cancel = record(sessions, panel("BC", at=T0 + timedelta(seconds=30)))
    assert actions_of(sessions, opened.alarm_id)["callonalarm.trigger"] == ActionState.CANCELLED
    assert [d.task_name for d in cancel.due_actions] == ["callonalarm.send_restore"]


def test_a_life_safety_alarm_sends_its_911_request_first_and_holds_the_rest_briefly(
    sessions: sessionmaker[Session],
) -> None:
    """Residential fire: RapidSOS now; the call and the CAD wait until the 911 request leaves (the
    worker releases them), and at most HOLD_FOR_911 if it never does."""
    receipt = record(sessions, panel("FA", account=NEWTON_ACCOUNT, zone="1"))
    assert [d.task_name for d in receipt.due_actions] == ["rapidsos.create_alert"]
    with sessions() as session:
        rows = session.execute(select(Action).where(Action.alarm_id == receipt.alarm_id).order_by(Action.id))
        steps = {a.kind: (a.state, a.waiting_on, a.due_at - T0) for a in rows.scalars()}
    assert steps == {
        "rapidsos.create_alert": (ActionState.QUEUED, None, timedelta(0)),
        "callonalarm.trigger": (ActionState.PENDING, "911", HOLD_FOR_911),
        "cad.upload_incident": (ActionState.PENDING, "911", HOLD_FOR_911),
    }


def test_an_alarm_without_a_911_request_holds_nothing(sessions: sessionmaker[Session]) -> None:
    receipt = record(sessions, panel("FA", zone="1"))  # commercial fire: no RapidSOS step
    assert [d.task_name for d in receipt.due_actions] == [
        "tracktik.create_alarm",
        "cad.upload_incident",
        "callonalarm.trigger",
    ]
    with sessions() as session:
        waiting = session.execute(select(Action.waiting_on).where(Action.alarm_id == receipt.alarm_id))
        assert set(waiting.scalars()) == {None}


# -- a plan that sends nobody ------------------------------------------------------------------------

MONTREAL_BURGLARY = """burglary = [
    "alta.collect_video",
    "tracktik.create_alarm",
    { do = "callonalarm.trigger", after = "60s", cancellable = true },
]"""


@pytest.mark.parametrize(
    ("burglary", "said"),
    [
        ('["alta.collect_video"]', "(none applies to this signal)"),  # Alta's step, a panel's signal
        ('["cad.upload_incident"]', "(cad.upload_incident)"),  # a record, nobody sent
    ],
)
def test_a_plan_that_sends_no_responder_puts_the_alarm_before_a_person(
    sessions: sessionmaker[Session], tmp_path: Path, burglary: str, said: str
) -> None:
    """Montréal HQ's burglary list rewritten to steps that send nobody to a panel's BA: the alarm used
    to open with no step or only the CAD's record, in state open, and nothing ever raised it."""
    text = EXAMPLE_SITES.read_text()
    assert MONTREAL_BURGLARY in text
    path = tmp_path / "sites.toml"
    path.write_text(text.replace(MONTREAL_BURGLARY, f"burglary = {burglary}", 1))
    sites = load_sites(path, SOURCE_ENV)

    with sessions.begin() as session:
        receipt = record_event(session, panel("BA"), sites=sites, rules=RULES)

    opened = alarm(sessions, receipt.alarm_id)
    assert opened.state == "needs_person"
    assert f"plan 'commercial' sends no responder for a burglary alarm {said}" in (
        opened.needs_person_reason or ""
    )


def test_a_plan_with_a_responder_opens_the_alarm_without_a_person(sessions: sessionmaker[Session]) -> None:
    receipt = record(sessions, panel("BA"))
    assert alarm(sessions, receipt.alarm_id).state == "open"
