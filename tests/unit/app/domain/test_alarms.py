"""What a step sees of its alarm (read with the claim, or on its own) and how its refs are merged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions
from app.domain.alarms import load_context, locked_alarm, merge_refs
from app.ledger.models import Alarm, Event
from app.ledger.session import make_engine, make_sessionmaker
from tests.sites_fixture import example_sites

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _alarm(sessions: sessionmaker[Session], *, events: int = 2) -> tuple[int, list[int]]:
    """A panel alarm at the Montréal example site, its events, and two steps."""
    with sessions.begin() as session:
        alarm = Alarm(
            site_key="montreal-hq", account="ab-95367", zone="7", code="BA", description="Burglary",
            family="burglary", priority="property", opened_at=T0, last_event_at=T0,
            refs={"alta_alert_guid": "g-1"}, event_count=events,
        )  # fmt: skip
        session.add(alarm)
        session.flush()
        for n in range(events):
            session.add(
                Event(
                    dedupe_key=f"e{n}",
                    source="acme-panels",
                    received_at=T0 + timedelta(seconds=n),
                    occurred_at=T0 - timedelta(seconds=5 - n),
                    payload={"message": f"Front door {n}", "zone": "7"},
                    alarm_id=alarm.id,
                )
            )
        steps = [
            actions.new_action(
                kind=kind,
                target=kind.split(".")[0],
                queue="default",
                due_at=T0,
                max_attempts=3,
                alarm_id=alarm.id,
                enqueued=True,
            )
            for kind in ("tracktik.create_alarm", "callonalarm.trigger")
        ]
        session.add_all(steps)
        session.flush()
        return alarm.id, [s.id for s in steps]


def test_the_context_read_with_the_claim_is_the_context_read_on_its_own(
    sessions: sessionmaker[Session],
) -> None:
    alarm_id, (first_step, _) = _alarm(sessions)
    sites = example_sites()
    with sessions.begin() as session:
        claimed, row = actions.claim_with_alarm(session, first_step, now=T0, lease=timedelta(seconds=90))
        with_claim = load_context(session, alarm_id, sites, alarm=row)
    with sessions() as session:
        alone = load_context(session, alarm_id, sites)

    assert claimed is not None and with_claim == alone
    assert alone is not None
    assert (alone.message, alone.payload["message"]) == ("Front door 0", "Front door 0")  # the first event
    assert alone.occurred_at == T0 - timedelta(seconds=5)
    assert sorted(alone.action_kinds) == ["callonalarm.trigger", "tracktik.create_alarm"]
    assert (alone.source_kind, alone.refs, alone.event_count) == ("panel", {"alta_alert_guid": "g-1"}, 2)
    assert alone.site is not None and alone.site.key == "montreal-hq"


def test_a_step_reads_its_alarm_in_the_claim_s_two_statements(engine: Engine, statements: list[str]) -> None:
    """The lock with the alarm's snapshot (its first event and its steps' kinds too), then the lease:
    no round trip more for the step's context (its steps' kinds were one of their own)."""
    sessions = make_sessionmaker(engine)
    alarm_id, (first_step, second_step) = _alarm(sessions)
    with sessions.begin() as session:  # the first call of a statement differs
        actions.claim_with_alarm(session, second_step, now=T0, lease=timedelta(seconds=90))
    statements.clear()
    with sessions.begin() as session:
        claimed, row = actions.claim_with_alarm(session, first_step, now=T0, lease=timedelta(seconds=90))
        context = load_context(session, alarm_id, example_sites(), alarm=row)
        sent = [statement.split(None, 1)[0].upper() for statement in statements]
    assert claimed is not None and context is not None
    assert sorted(context.action_kinds) == ["callonalarm.trigger", "tracktik.create_alarm"]
    assert [word for word in sent if word not in ("BEGIN", "COMMIT")] == ["SELECT", "UPDATE"]


def test_an_alarm_without_steps_has_no_step_kinds(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        alarm = Alarm(
            site_key="montreal-hq", account="ab-95367", zone="7", code="BA", description="Burglary",
            family="burglary", priority="property", opened_at=T0, last_event_at=T0,
        )  # fmt: skip
        session.add(alarm)
        session.flush()
        alarm_id = alarm.id
    with sessions() as session:
        context = load_context(session, alarm_id, example_sites())
    assert context is not None and context.action_kinds == ()


def test_an_alarm_without_events_has_an_empty_payload(sessions: sessionmaker[Session]) -> None:
    alarm_id, _ = _alarm(sessions, events=0)
    with sessions() as session:
        context = load_context(session, alarm_id, example_sites())
    assert context is not None
    assert (context.payload, context.occurred_at, context.message) == ({}, None, None)


def test_an_unknown_alarm_has_no_context(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert load_context(session, 404, example_sites()) is None


def test_refs_are_merged_over_what_the_alarm_already_knows(sessions: sessionmaker[Session]) -> None:
    alarm_id, _ = _alarm(sessions)
    with sessions.begin() as session:
        merge_refs(session, alarm_id, {"tracktik_alarm_id": 7, "tracktik_dispatch_task_id": None})
    with sessions.begin() as session:
        held = locked_alarm(session, alarm_id)
        assert held is not None
        merge_refs(session, alarm_id, {"alta_alert_guid": "g-2"}, current=held.refs)
    with sessions() as session:
        refs = session.get_one(Alarm, alarm_id).refs
    assert refs == {"alta_alert_guid": "g-2", "tracktik_alarm_id": 7, "tracktik_dispatch_task_id": None}


def test_a_loaded_alarm_sees_the_refs_merged_behind_it(sessions: sessionmaker[Session]) -> None:
    alarm_id, _ = _alarm(sessions)
    with sessions.begin() as session:
        alarm = session.get_one(Alarm, alarm_id)
        alarm.description = "Burglary, rear door"  # pending: written before the merge, not lost
        merge_refs(session, alarm_id, {"tracktik_alarm_id": 7})
        assert alarm.refs == {"alta_alert_guid": "g-1", "tracktik_alarm_id": 7}
    with sessions() as session:
        stored = session.get_one(Alarm, alarm_id)
        assert (stored.description, stored.refs["tracktik_alarm_id"]) == ("Burglary, rear door", 7)
