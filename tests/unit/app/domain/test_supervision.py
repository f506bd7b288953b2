"""Supervision on both ledgers: a quiet account opens one trouble alarm per outage, for a person, on
its site's trouble plan; its next message restores it and re-arms the deadline; the deadlines are
ledger rows, so a restart loses none; an unsupervised account costs intake nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.domain import supervision
from app.domain.events import Event
from app.domain.intake import IntakeRules, Receipt, record_event
from app.domain.sites import Sites, Source, Supervision
from app.ledger.models import AccountSupervision, Action, Alarm, AlarmState, TimelineEntry
from app.ledger.session import make_engine, make_sessionmaker
from tests.sites_fixture import MONTREAL_ACCOUNT, NEWTON_ACCOUNT, example_sites

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
LINK = timedelta(minutes=10)
TEST_INTERVAL, TEST_GRACE = timedelta(hours=1), timedelta(minutes=5)


def supervised_sites(**by_site: Supervision) -> Sites:
    """The example sites, each declaring the Supervision ``by_site`` gives it (``newton_residence=``
    for site ``newton-residence``), and none otherwise (the example file's own is replaced)."""
    example = example_sites()
    sites = [replace(s, supervision=by_site.get(s.key.replace("-", "_"))) for s in example.sites]
    return Sites(example.sources, sites)


# newton-residence (account 1f4a) runs the residential plan: trouble = ["callonalarm.trigger"].
SITES = supervised_sites(
    newton_residence=Supervision(link=LINK, test_interval=TEST_INTERVAL, test_grace=TEST_GRACE)
)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def panel(code: str, at: datetime, account: str = NEWTON_ACCOUNT) -> Event:
    return Event(
        source_key="acme-panels", source_kind="panel", received_at=at, account=account, code=code,
        zone="1", occurred_at=at, payload={"code": code},
    )  # fmt: skip


def record(sessions: sessionmaker[Session], code: str, at: datetime, sites: Sites = SITES) -> Receipt:
    with sessions.begin() as session:
        return record_event(session, panel(code, at), sites=sites, rules=RULES)


def tick(sessions: sessionmaker[Session], now: datetime, sites: Sites = SITES) -> supervision.Checked:
    with sessions.begin() as session:
        return supervision.check(session, sites=sites, now=now, rules=RULES)


def arm(sessions: sessionmaker[Session], now: datetime, sites: Sites = SITES) -> None:
    with sessions.begin() as session:
        supervision.arm(session, sites=sites, now=now)


def link_frame(sessions: sessionmaker[Session], at: datetime, sites: Sites = SITES) -> None:
    with sessions.begin() as session:
        assert (
            supervision.note_link(
                session, sites=sites, source_key="acme-panels", account=NEWTON_ACCOUNT, at=at
            )
            == []
        )


def row(sessions: sessionmaker[Session], account: str = NEWTON_ACCOUNT) -> AccountSupervision:
    with sessions() as session:
        return session.execute(
            select(AccountSupervision).where(AccountSupervision.account == account)
        ).scalar_one()


def alarm(sessions: sessionmaker[Session], alarm_id: int) -> Alarm:
    with sessions() as session:
        return session.get_one(Alarm, alarm_id)


def trouble_alarms(sessions: sessionmaker[Session], code: str) -> list[Alarm]:
    with sessions() as session:
        return list(session.execute(select(Alarm).where(Alarm.code == code).order_by(Alarm.id)).scalars())


def timeline(sessions: sessionmaker[Session], alarm_id: int) -> list[tuple[str, str]]:
    with sessions() as session:
        rows = session.execute(
            select(TimelineEntry.kind, TimelineEntry.message)
            .where(TimelineEntry.alarm_id == alarm_id)
            .order_by(TimelineEntry.id)
        ).all()
        return [(r.kind, r.message) for r in rows]


def action_kinds(sessions: sessionmaker[Session], alarm_id: int) -> list[str]:
    with sessions() as session:
        return list(session.execute(select(Action.kind).where(Action.alarm_id == alarm_id)).scalars())


# --- link supervision --------------------------------------------------------------------------------


def test_a_quiet_account_opens_one_link_trouble_for_a_person_on_the_sites_trouble_plan(
    sessions: sessionmaker[Session],
) -> None:
    record(sessions, "OP", T0)

    assert tick(sessions, T0 + LINK - timedelta(seconds=1)).troubles == []
    first = tick(sessions, T0 + LINK + timedelta(seconds=1))
    # Ticks on, before the test deadline (the account's tests are supervised too).
    later = [tick(sessions, T0 + LINK + timedelta(minutes=m)) for m in (1, 5, 30, 50)]

    assert [(t.kind, t.account, t.site_key) for t in first.troubles] == [
        ("link", NEWTON_ACCOUNT, "newton-residence")
    ]
    assert all(t.troubles == [] and t.due_actions == [] for t in later)
    [opened] = trouble_alarms(sessions, "YC")
    assert opened.id == first.troubles[0].alarm_id
    assert (opened.site_key, opened.family, opened.state) == ("newton-residence", "network", "needs_person")
    reason = "link to account 1f4a silent since 2026-11-23 12:00:00 UTC: link_supervision is 10m"
    assert opened.needs_person_reason == reason
    assert ("alarm.needs_person", reason) in timeline(sessions, opened.id)
    # The residential plan's trouble list, planned and handed to the caller to publish after commit.
    assert action_kinds(sessions, opened.id) == ["callonalarm.trigger"]
    assert [d.task_name for d in first.due_actions] == ["callonalarm.trigger"]
    state = row(sessions)
    assert (state.link_alarm_id, state.link_deadline_at) == (opened.id, None)


def test_the_next_event_restores_the_link_trouble_and_re_arms_the_deadline(
    sessions: sessionmaker[Session],
) -> None:
    record(sessions, "OP", T0)
    [trouble] = tick(sessions, T0 + LINK).troubles
    back = T0 + timedelta(minutes=20)

    receipt = record(sessions, "CL", back)

    restored = alarm(sessions, trouble.alarm_id)
    assert restored.restored_at == back
    assert restored.state == AlarmState.NEEDS_PERSON  # a restore stops nothing: a person ends it
    assert (
        "alarm.zone_restored",
        "event CL from account 1f4a: the link is back; the trouble stays until a person ends it",
    ) in timeline(sessions, trouble.alarm_id)
    with sessions() as session:
        line = session.execute(
            select(TimelineEntry).where(
                TimelineEntry.alarm_id == trouble.alarm_id, TimelineEntry.kind == "alarm.zone_restored"
            )
        ).scalar_one()
        assert line.event_id == receipt.event_id
    state = row(sessions)
    assert (state.link_alarm_id, state.link_deadline_at, state.last_contact_at) == (None, back + LINK, back)
    # Re-armed: quiet again past the new deadline is a new outage, with an alarm of its own.
    assert tick(sessions, back + LINK - timedelta(seconds=1)).troubles == []
    [again] = tick(sessions, back + LINK).troubles
    assert again.alarm_id != trouble.alarm_id
    assert "silent since 2026-11-23 12:20:00 UTC" in again.reason


def test_a_heartbeat_answered_as_a_duplicate_keeps_the_link_alive(sessions: sessionmaker[Session]) -> None:
    """An id-less, time-less post (CallOnAlarm's body, a plain gateway) is recorded once per dedupe
    window (300 s); posted every minute, the link (3m) is heard from every minute all the same."""
    link = timedelta(minutes=3)
    sites = supervised_sites(newton_residence=Supervision(link=link))
    arm(sessions, T0, sites)
    duplicates = 0
    for minute in range(31):
        at = T0 + timedelta(minutes=minute)
        heartbeat = Event(
            source_key="acme-panels", source_kind="panel", received_at=at, account=NEWTON_ACCOUNT,
            code="OP", zone=None, payload={"code": "OP"},
        )  # fmt: skip
        with sessions.begin() as session:
            duplicates += record_event(session, heartbeat, sites=sites, rules=RULES).duplicate
        assert tick(sessions, at + timedelta(seconds=59), sites).troubles == []

    assert duplicates >= 20  # most of them were duplicates
    assert trouble_alarms(sessions, "YC") == []
    state = row(sessions)
    assert (state.last_contact_at, state.link_deadline_at) == (
        T0 + timedelta(minutes=30),
        T0 + timedelta(minutes=30) + link,
    )


def test_a_delivery_sent_again_restores_a_link_outage(sessions: sessionmaker[Session]) -> None:
    sent = replace(panel("OP", T0), sender_event_id="gw-7")
    with sessions.begin() as session:
        record_event(session, sent, sites=SITES, rules=RULES)
    [trouble] = tick(sessions, T0 + LINK).troubles
    again_at = T0 + LINK + timedelta(minutes=2)  # the gateway's uplink is back: it sends its backlog

    with sessions.begin() as session:
        receipt = record_event(session, replace(sent, received_at=again_at), sites=SITES, rules=RULES)

    assert receipt.duplicate
    assert alarm(sessions, trouble.alarm_id).restored_at == again_at
    assert (
        "alarm.zone_restored",
        "event OP (sent again) from account 1f4a: the link is back; the trouble stays until a person ends it",
    ) in timeline(sessions, trouble.alarm_id)
    state = row(sessions)
    assert (state.link_alarm_id, state.last_contact_at, state.link_deadline_at) == (
        None,
        again_at,
        again_at + LINK,
    )


def test_a_link_dropping_again_within_the_grouping_window_un_restores_its_alarm_without_a_second_plan(
    sessions: sessionmaker[Session],
) -> None:
    """link_supervision (3m) shorter than the grouping window (5m): the second outage joins the
    first's alarm, which must show it is not restored; the next message restores it again."""
    link = timedelta(minutes=3)
    sites = supervised_sites(newton_residence=Supervision(link=link))
    record(sessions, "OP", T0, sites)
    [first] = tick(sessions, T0 + link, sites).troubles
    record(sessions, "OP", T0 + timedelta(minutes=4), sites)
    assert alarm(sessions, first.alarm_id).restored_at == T0 + timedelta(minutes=4)

    again = tick(sessions, T0 + timedelta(minutes=7), sites)  # silent again since 12:04

    [second] = again.troubles
    assert second.alarm_id == first.alarm_id  # joined: one alarm for the flapping link
    assert again.due_actions == []  # its plan already rang the contacts: not again in the window
    joined = alarm(sessions, first.alarm_id)
    assert (joined.restored_at, joined.state, joined.event_count) == (None, AlarmState.NEEDS_PERSON, 2)
    assert "silent since 2026-11-23 12:04:00 UTC" in (joined.needs_person_reason or "")
    lines = timeline(sessions, first.alarm_id)
    withdrawn = [m for k, m in lines if k == "alarm.restore_withdrawn"]
    assert withdrawn == [
        "link silent again for account 1f4a: the alarm is no longer restored "
        "(its trouble plan ran when it opened and is not run again)"
    ]
    assert action_kinds(sessions, first.alarm_id) == ["callonalarm.trigger"]
    assert row(sessions).link_alarm_id == first.alarm_id

    back = T0 + timedelta(minutes=8)
    record(sessions, "OP", back, sites)

    assert alarm(sessions, first.alarm_id).restored_at == back
    assert [k for k, _ in timeline(sessions, first.alarm_id)].count("alarm.zone_restored") == 2
    state = row(sessions)
    assert (state.link_alarm_id, state.link_deadline_at) == (None, back + link)


def test_a_link_frame_keeps_the_link_alive_and_restores_an_outage(sessions: sessionmaker[Session]) -> None:
    arm(sessions, T0)
    link_frame(sessions, T0 + timedelta(minutes=8))
    assert tick(sessions, T0 + timedelta(minutes=17)).troubles == []  # the frame moved the deadline
    [trouble] = tick(sessions, T0 + timedelta(minutes=18)).troubles

    link_frame(sessions, T0 + timedelta(minutes=19))

    assert alarm(sessions, trouble.alarm_id).restored_at == T0 + timedelta(minutes=19)
    assert any(
        message.startswith("a DC-09 link frame from account 1f4a: the link is back")
        for kind, message in timeline(sessions, trouble.alarm_id)
        if kind == "alarm.zone_restored"
    )
    state = row(sessions)
    assert state.last_link_at == state.last_contact_at == T0 + timedelta(minutes=19)
    assert (state.link_alarm_id, state.link_deadline_at) == (None, T0 + timedelta(minutes=29))
    # No event was recorded for the frame: only the trouble's own.
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(Alarm)).scalar_one() == 1


def test_a_link_frame_from_an_unsupervised_account_touches_nothing(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert (
            supervision.note_link(
                session, sites=SITES, source_key="acme-panels", account=MONTREAL_ACCOUNT, at=T0
            )
            == []
        )
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(AccountSupervision)).scalar_one() == 0


# --- automatic tests -----------------------------------------------------------------------------------


def test_an_automatic_test_refreshes_its_deadline_and_the_deadline_trips_when_tests_stop(
    sessions: sessionmaker[Session],
) -> None:
    tests_only = supervised_sites(
        newton_residence=Supervision(test_interval=TEST_INTERVAL, test_grace=TEST_GRACE)
    )
    period = TEST_INTERVAL + TEST_GRACE
    record(sessions, "RP", T0, tests_only)
    for hour in (1, 2):  # tests on time, each within its interval and grace
        early = T0 + timedelta(hours=hour) + TEST_GRACE - timedelta(seconds=1)
        assert tick(sessions, early, tests_only).troubles == []
        record(sessions, "RP", T0 + timedelta(hours=hour), tests_only)
    last_test = T0 + timedelta(hours=2)
    assert row(sessions).test_deadline_at == last_test + period

    # The tests stop; the panel keeps sending other events, which are not tests.
    for minutes in (10, 30, 50, 64):
        record(sessions, "OP", last_test + timedelta(minutes=minutes), tests_only)
        assert tick(sessions, last_test + timedelta(minutes=minutes), tests_only).troubles == []
    [trouble] = tick(sessions, last_test + period, tests_only).troubles

    assert trouble.kind == "test"
    opened = alarm(sessions, trouble.alarm_id)
    assert (opened.code, opened.family, opened.state) == ("XX", "test", "needs_person")
    assert opened.needs_person_reason == (
        "no automatic test (RP or RY) from account 1f4a since 2026-11-23 14:00:00 UTC: "
        "test_interval + test_grace is 1h5m"
    )
    assert action_kinds(sessions, opened.id) == ["callonalarm.trigger"]
    assert tick(sessions, last_test + period + timedelta(hours=5), tests_only).troubles == []  # once

    record(sessions, "OP", last_test + period + timedelta(minutes=1), tests_only)  # not a test
    assert alarm(sessions, trouble.alarm_id).restored_at is None
    assert row(sessions).test_alarm_id == trouble.alarm_id

    back = last_test + period + timedelta(minutes=2)
    record(sessions, "RP", back, tests_only)
    assert alarm(sessions, trouble.alarm_id).restored_at == back
    state = row(sessions)
    assert (state.test_alarm_id, state.test_deadline_at, state.last_test_at) == (None, back + period, back)
    assert tick(sessions, back + period - timedelta(seconds=1), tests_only).troubles == []


def test_a_periodic_test_sent_with_a_trouble_present_is_an_automatic_test_too(
    sessions: sessionmaker[Session],
) -> None:
    """A panel with a trouble present sends its periodic test as RY (Test Off Normal; Contact ID
    1608): tests on time open nothing, and an RY restores a missed test as an RP does."""
    tests_only = supervised_sites(
        newton_residence=Supervision(test_interval=TEST_INTERVAL, test_grace=TEST_GRACE)
    )
    period = TEST_INTERVAL + TEST_GRACE
    arm(sessions, T0, tests_only)
    for hour in range(4):  # hourly, on time: RY, RP, RY, RY
        at = T0 + timedelta(hours=hour, minutes=1)
        record(sessions, "RP" if hour == 1 else "RY", at, tests_only)
        assert tick(sessions, at + period - timedelta(seconds=1), tests_only).troubles == []
    last_test = T0 + timedelta(hours=3, minutes=1)
    assert row(sessions).last_test_at == last_test

    [trouble] = tick(sessions, last_test + period, tests_only).troubles  # the tests stop
    back = last_test + period + timedelta(minutes=1)
    record(sessions, "RY", back, tests_only)

    assert alarm(sessions, trouble.alarm_id).restored_at == back
    state = row(sessions)
    assert (state.test_alarm_id, state.test_deadline_at, state.last_test_at) == (None, back + period, back)


@pytest.mark.parametrize("code", ["RX", "TX"])
def test_a_manual_test_or_an_unspecified_test_report_is_not_an_automatic_test(
    sessions: sessionmaker[Session], code: str
) -> None:
    tests_only = supervised_sites(
        newton_residence=Supervision(test_interval=TEST_INTERVAL, test_grace=TEST_GRACE)
    )
    arm(sessions, T0, tests_only)
    record(sessions, code, T0 + timedelta(minutes=30), tests_only)

    [trouble] = tick(sessions, T0 + TEST_INTERVAL + TEST_GRACE, tests_only).troubles
    assert trouble.kind == "test"
    assert row(sessions).last_test_at is None


# --- accounts never heard from, restarts, configuration ------------------------------------------------


def test_a_declared_account_never_heard_from_trips_its_interval_after_supervision_began(
    sessions: sessionmaker[Session],
) -> None:
    arm(sessions, T0)

    assert tick(sessions, T0 + LINK - timedelta(seconds=1)).troubles == []
    [link] = tick(sessions, T0 + LINK).troubles
    [test] = tick(sessions, T0 + TEST_INTERVAL + TEST_GRACE).troubles

    assert link.reason == (
        "link to account 1f4a silent since supervision began at 2026-11-23 12:00:00 UTC (never heard from): "
        "link_supervision is 10m"
    )
    assert test.reason.startswith("no automatic test (RP or RY) from account 1f4a since supervision began at")
    assert {a.code for a in trouble_alarms(sessions, "YC") + trouble_alarms(sessions, "XX")} == {"YC", "XX"}


def test_a_restart_reads_the_deadlines_from_the_ledger_and_loses_none(
    engine: Engine, database_url: str
) -> None:
    before = make_sessionmaker(engine)
    arm(before, T0)
    record(before, "RP", T0 + timedelta(minutes=3))
    engine.dispose()

    # A new process: its own engine, its own sites file read again, armed again at its start.
    restarted_engine = make_engine(database_url)
    try:
        after = make_sessionmaker(restarted_engine)
        sites = supervised_sites(
            newton_residence=Supervision(link=LINK, test_interval=TEST_INTERVAL, test_grace=TEST_GRACE)
        )
        arm(after, T0 + timedelta(minutes=9), sites)
        assert row(after).link_deadline_at == T0 + timedelta(minutes=13)  # not pushed by the restart

        [trouble] = tick(after, T0 + timedelta(minutes=13), sites).troubles
        assert trouble.kind == "link"
        assert tick(after, T0 + timedelta(minutes=14), sites).troubles == []
    finally:
        restarted_engine.dispose()


def test_a_changed_period_re_arms_and_an_account_no_longer_supervised_never_trips(
    sessions: sessionmaker[Session],
) -> None:
    arm(sessions, T0)
    record(sessions, "OP", T0, sites=SITES)
    longer = supervised_sites(newton_residence=Supervision(link=timedelta(hours=2)))
    arm(sessions, T0 + timedelta(minutes=5), longer)

    state = row(sessions)
    assert (state.link_period_s, state.link_deadline_at) == (7200, T0 + timedelta(minutes=5, hours=2))
    assert (state.test_period_s, state.test_deadline_at) == (None, None)  # tests no longer supervised
    assert tick(sessions, T0 + timedelta(hours=2), longer).troubles == []

    nothing = supervised_sites()
    arm(sessions, T0 + timedelta(hours=2), nothing)
    assert tick(sessions, T0 + timedelta(days=3), nothing).troubles == []
    assert trouble_alarms(sessions, "YC") == []


def test_a_row_the_sites_file_no_longer_supervises_is_disarmed_by_the_tick(
    sessions: sessionmaker[Session],
) -> None:
    arm(sessions, T0)  # by a process that still supervised it
    nothing = supervised_sites()

    assert tick(sessions, T0 + timedelta(days=1), nothing).troubles == []

    state = row(sessions)
    assert (state.link_deadline_at, state.test_deadline_at, state.link_period_s) == (None, None, None)


def test_a_site_overrides_its_sources_supervision_check_by_check() -> None:
    example = example_sites()
    sources = [
        replace(s, supervision=Supervision(link=timedelta(minutes=3), test_interval=timedelta(hours=24)))
        if s.key == "acme-panels"
        else s
        for s in example.sources
    ]
    sites = [
        replace(s, supervision=Supervision(test_interval=timedelta(hours=1), test_grace=timedelta(0)))
        if s.key == "newton-residence"
        else s
        for s in example.sites
    ]
    directory = Sites(sources, sites)

    montreal = directory.supervision_for("acme-panels", " AB-95367 ")
    newton = directory.supervision_for("acme-panels", NEWTON_ACCOUNT)
    assert montreal is not None and newton is not None
    assert (montreal.site_key, montreal.account) == ("montreal-hq", MONTREAL_ACCOUNT)
    assert montreal.supervision.link == timedelta(minutes=3)
    assert montreal.supervision.test_period == timedelta(hours=24, minutes=15)  # the default grace
    assert newton.supervision.link == timedelta(minutes=3)  # the source's
    assert newton.supervision.test_period == timedelta(hours=1)  # the site's
    assert directory.supervision_for("alta-main", "az-5d1c") is None
    assert example.supervision_for("acme-panels", MONTREAL_ACCOUNT) is None


# --- what it costs intake ---------------------------------------------------------------------------


def test_an_unsupervised_account_adds_no_statement_to_intake(
    sessions: sessionmaker[Session], statements: list[str]
) -> None:
    unsupervised = supervised_sites()
    record(sessions, "BA", T0, unsupervised)  # warm up: the first call of a statement differs
    statements.clear()

    with sessions.begin() as session:
        record_event(session, panel("CL", T0, MONTREAL_ACCOUNT), sites=unsupervised, rules=RULES)
    baseline = list(statements)
    statements.clear()
    with sessions.begin() as session:  # another account of the same directory is supervised
        record_event(
            session, panel("CL", T0 + timedelta(seconds=1), MONTREAL_ACCOUNT), sites=SITES, rules=RULES
        )

    assert statements == baseline
    assert not any("account_supervision" in s for s in statements)
    statements.clear()
    record(sessions, "OP", T0 + timedelta(seconds=1))  # the supervised account: one upsert more
    assert sum("account_supervision" in s for s in statements) == 1


def test_a_duplicate_costs_a_supervised_account_one_upsert_and_an_unsupervised_one_nothing(
    sessions: sessionmaker[Session], statements: list[str]
) -> None:
    unsupervised = supervised_sites()
    montreal = replace(panel("CL", T0, MONTREAL_ACCOUNT), sender_event_id="m-1")
    newton = replace(panel("CL", T0), sender_event_id="n-1")
    for event in (montreal, newton):
        with sessions.begin() as session:
            record_event(session, event, sites=SITES, rules=RULES)
    with sessions.begin() as session:  # warm up the duplicate path
        assert record_event(session, montreal, sites=unsupervised, rules=RULES).duplicate
    statements.clear()

    with sessions.begin() as session:
        assert record_event(session, montreal, sites=unsupervised, rules=RULES).duplicate
    baseline = list(statements)
    statements.clear()
    with sessions.begin() as session:  # another account of the same directory is supervised
        assert record_event(session, montreal, sites=SITES, rules=RULES).duplicate
    assert statements == baseline
    assert not any("account_supervision" in s for s in statements)

    statements.clear()
    with sessions.begin() as session:
        assert record_event(session, newton, sites=SITES, rules=RULES).duplicate
    assert sum("account_supervision" in s for s in statements) == 1
    assert len(statements) == len(baseline) + 1


def test_the_troubles_own_event_does_not_count_as_contact(sessions: sessionmaker[Session]) -> None:
    record(sessions, "OP", T0)
    tick(sessions, T0 + LINK)

    state = row(sessions)
    assert state.last_contact_at == T0
    assert state.link_deadline_at is None
    with sessions() as session:
        codes = session.execute(select(Alarm.code)).scalars().all()
    assert "YC" in codes


def test_an_event_in_a_dc09_frame_is_a_link_frame_too(sessions: sessionmaker[Session]) -> None:
    example = example_sites()
    receiver = Source(key="acme-dc09", kind="dc09")
    site = example.site("newton-residence")
    assert site is not None
    newton = replace(site, sources=("acme-panels", "acme-dc09"), supervision=Supervision(link=LINK))
    sites = Sites((*example.sources, receiver), [newton])
    event = replace(panel("OP", T0), source_key="acme-dc09")

    with sessions.begin() as session:
        record_event(session, event, sites=sites, rules=RULES)
    with sessions.begin() as session:  # the same account over HTTP: contact, not a link frame
        record_event(session, panel("CL", T0 + timedelta(minutes=1)), sites=sites, rules=RULES)

    state = row(sessions)  # one row for the site's account, whichever path brought the contact
    assert state.source_key == "acme-panels"  # the first of the site's sources
    assert state.last_link_at == T0
    assert state.last_contact_at == T0 + timedelta(minutes=1)


# --- an account reached through several sources (a dual-path panel) ------------------------------------

GATEWAY = Source(key="acme-gateway", kind="panel", tokens=("gateway-token-0123456789abcdef",))


def dual_path(supervision: Supervision | None = None) -> Sites:
    """Newton's panel also reports through a gateway posting as a source of its own (link: 10m)."""
    supervision = supervision or Supervision(link=LINK)
    example = example_sites()
    site = example.site("newton-residence")
    assert site is not None
    newton = replace(site, sources=("acme-panels", "acme-gateway"), supervision=supervision)
    return Sites((*example.sources, GATEWAY), [newton])


def test_an_account_reached_through_two_sources_is_supervised_once_and_either_path_is_contact(
    sessions: sessionmaker[Session],
) -> None:
    sites = dual_path()
    arm(sessions, T0, sites)

    def post(source_key: str, code: str, at: datetime) -> None:
        with sessions.begin() as session:
            event = replace(panel(code, at), source_key=source_key)
            record_event(session, event, sites=sites, rules=RULES)

    # The panel reports through its own path only, then through the gateway only: never silent.
    for minute in range(0, 31, 3):
        at = T0 + timedelta(minutes=minute)
        post("acme-panels" if minute < 15 else "acme-gateway", "OP", at)
        assert tick(sessions, at + LINK - timedelta(seconds=1), sites).troubles == []
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(AccountSupervision)).scalar_one() == 1
    last = T0 + timedelta(minutes=30)
    assert (row(sessions).source_key, row(sessions).last_contact_at) == ("acme-panels", last)

    [trouble] = tick(sessions, last + LINK, sites).troubles  # both paths silent: one trouble
    assert trouble.reason == (
        "link to account 1f4a (through acme-panels or acme-gateway) silent since 2026-11-23 12:30:00 UTC: "
        "link_supervision is 10m"
    )
    back = last + LINK + timedelta(minutes=1)
    post("acme-gateway", "CL", back)  # either path restores it
    assert alarm(sessions, trouble.alarm_id).restored_at == back
    assert (row(sessions).link_alarm_id, row(sessions).link_deadline_at) == (None, back + LINK)


def test_an_account_on_two_sources_is_held_to_the_strictest_of_their_supervision() -> None:
    example = example_sites()
    site = example.site("newton-residence")
    assert site is not None
    source = example.source("acme-panels")
    assert source is not None
    panels = replace(
        source,
        supervision=Supervision(link=timedelta(minutes=10), test_interval=timedelta(hours=24)),
    )
    gateway = replace(
        GATEWAY,
        supervision=Supervision(
            link=timedelta(minutes=3), test_interval=timedelta(hours=1), test_grace=timedelta(0)
        ),
    )
    newton = replace(site, sources=("acme-panels", "acme-gateway"), supervision=None)
    sources = [panels if s.key == "acme-panels" else s for s in example.sources]
    directory = Sites((*sources, gateway), [newton])

    by_panels = directory.supervision_for("acme-panels", NEWTON_ACCOUNT)
    by_gateway = directory.supervision_for("acme-gateway", NEWTON_ACCOUNT)
    assert by_panels is not None and by_gateway is not None
    assert by_panels.supervision == by_gateway.supervision
    assert by_panels.supervision.link == timedelta(minutes=3)
    assert by_panels.supervision.test_period == timedelta(hours=1)
    assert by_panels.source_key == by_gateway.source_key == "acme-panels"
    assert by_panels.paths == ("acme-panels", "acme-gateway")
    assert [(s.source_key, s.account) for s in directory.supervised_accounts] == [
        ("acme-panels", NEWTON_ACCOUNT)
    ]
    # The site's own value still wins, check by check.
    own = Sites((*sources, gateway), [replace(newton, supervision=Supervision(link=timedelta(hours=1)))])
    found = own.supervision_for("acme-gateway", NEWTON_ACCOUNT)
    assert found is not None
    assert (found.supervision.link, found.supervision.test_period) == (timedelta(hours=1), timedelta(hours=1))


def test_rows_kept_per_source_are_folded_into_the_accounts_row(sessions: sessionmaker[Session]) -> None:
    """Rows from when a dual-path account was supervised per source: the gateway's path had tripped
    a (false) outage while the panel's path talked. arm folds it into the account's row: the later
    contact and the open outage move there, the other row goes, and the next contact restores it."""
    sites = dual_path(Supervision(link=LINK, test_interval=TEST_INTERVAL, test_grace=TEST_GRACE))
    with sessions.begin() as session:
        session.add_all(
            [
                AccountSupervision(
                    source_key="acme-panels", account=NEWTON_ACCOUNT, site_key="newton-residence",
                    supervised_since=T0, last_contact_at=T0 + timedelta(minutes=2), link_period_s=600,
                    link_deadline_at=T0 + timedelta(minutes=12), updated_at=T0,
                ),
                AccountSupervision(
                    source_key="acme-gateway", account=NEWTON_ACCOUNT, site_key="newton-residence",
                    supervised_since=T0, last_contact_at=T0 + timedelta(minutes=5),
                    last_link_at=T0 + timedelta(minutes=5), link_period_s=600, link_deadline_at=None,
                    link_alarm_id=41, updated_at=T0,
                ),
            ]
        )  # fmt: skip
    # A tick of a process that has not armed yet: the other path's row never trips.
    with sessions.begin() as session:
        session.execute(
            update(AccountSupervision)
            .where(AccountSupervision.source_key == "acme-gateway")
            .values(test_deadline_at=T0, test_period_s=3900)
        )
    assert tick(sessions, T0 + timedelta(minutes=1), sites).troubles == []
    assert trouble_alarms(sessions, "XX") == []

    arm(sessions, T0 + timedelta(minutes=6), sites)
    arm(sessions, T0 + timedelta(minutes=6), sites)  # every process arms: folding twice changes nothing

    state = row(sessions)
    assert state.source_key == "acme-panels"
    assert state.last_contact_at == state.last_link_at == T0 + timedelta(minutes=5)
    assert (state.link_alarm_id, state.link_deadline_at) == (41, None)
    with sessions.begin() as session:  # the outage's alarm, as the tick had opened it
        session.add(
            Alarm(
                id=41, site_key="newton-residence", source_key="acme-gateway", account=NEWTON_ACCOUNT,
                code="YC", family="network", priority="technical", state=AlarmState.NEEDS_PERSON,
                event_count=1, opened_at=T0, last_event_at=T0, refs={},
            )
        )  # fmt: skip
    back = T0 + timedelta(minutes=7)
    record(sessions, "OP", back, sites)  # through the panels' path: restores the gateway's outage
    assert alarm(sessions, 41).restored_at == back
    assert (row(sessions).link_alarm_id, row(sessions).link_deadline_at) == (None, back + LINK)


def test_folding_moves_the_deadline_on_to_the_other_paths_later_contact(
    sessions: sessionmaker[Session],
) -> None:
    sites = dual_path()
    with sessions.begin() as session:
        session.add_all(
            [
                AccountSupervision(
                    source_key="acme-panels", account=NEWTON_ACCOUNT, site_key="newton-residence",
                    supervised_since=T0, last_contact_at=T0, link_period_s=600,
                    link_deadline_at=T0 + LINK, updated_at=T0,
                ),
                AccountSupervision(
                    source_key="acme-gateway", account=NEWTON_ACCOUNT, site_key="newton-residence",
                    supervised_since=T0, last_contact_at=T0 + timedelta(minutes=8), link_period_s=600,
                    link_deadline_at=T0 + timedelta(minutes=18), updated_at=T0,
                ),
            ]
        )  # fmt: skip

    arm(sessions, T0 + timedelta(minutes=9), sites)

    assert tick(sessions, T0 + timedelta(minutes=17), sites).troubles == []  # not at the panels' 12:10
    state = row(sessions)
    assert (state.last_contact_at, state.link_deadline_at) == (
        T0 + timedelta(minutes=8),
        T0 + timedelta(minutes=18),
    )
    [trouble] = tick(sessions, T0 + timedelta(minutes=18), sites).troubles
    assert "silent since 2026-11-23 12:08:00 UTC" in trouble.reason


def test_each_contact_re_arms_from_itself_but_an_older_one_never_pulls_the_deadline_back(
    sessions: sessionmaker[Session],
) -> None:
    record(sessions, "OP", T0)
    shorter = supervised_sites(newton_residence=Supervision(link=timedelta(minutes=5)))
    record(sessions, "CL", T0 + timedelta(minutes=1), shorter)  # the file now says 5m: at once
    assert row(sessions).link_deadline_at == T0 + timedelta(minutes=6)

    with sessions.begin() as session:  # a message that took the long way, older than the last one
        record_event(session, panel("OP", T0 + timedelta(seconds=30)), sites=shorter, rules=RULES)

    state = row(sessions)
    assert (state.last_contact_at, state.link_deadline_at) == (
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=6),
    )
