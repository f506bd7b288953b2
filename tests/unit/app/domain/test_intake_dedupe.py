"""How record_event recognises a retried or replayed delivery, on both ledgers (issue 16): the sender's
id, the sender's time, and for events with neither a sliding content window plus the signed
delivery's ``webhook-id``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.domain.events import Event
from app.domain.intake import IntakeRules, Receipt, record_event
from app.ledger.models import Event as EventRow
from app.ledger.session import make_sessionmaker
from tests.sites_fixture import MONTREAL_ACCOUNT, example_sites

pytestmark = pytest.mark.unit
# Second 296 of a 300 s bucket: fixed buckets put a body and its replay 6 s later in two.
T0 = datetime.fromtimestamp(1_764_000_000 - 1_764_000_000 % 300 + 296, UTC)
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
SITES = example_sites()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def untimed(after_s: float = 0, **kw: Any) -> Event:
    """A CallOnAlarm-style event: no sender id, no sender time."""
    values: dict[str, Any] = {
        "source_key": "acme-panels",
        "source_kind": "panel",
        "received_at": T0 + timedelta(seconds=after_s),
        "account": MONTREAL_ACCOUNT,
        "code": "BA",
        "zone": "3",
        "payload": {"eventCode": "BA"},
    }
    values.update(kw)
    return Event(**values)


def record(sessions: sessionmaker[Session], event: Event) -> Receipt:
    with sessions.begin() as session:
        return record_event(session, event, sites=SITES, rules=RULES)


def events(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.execute(select(func.count()).select_from(EventRow)).scalar_one())


def test_the_content_window_slides_across_a_bucket_boundary(sessions: sessionmaker[Session]) -> None:
    first = record(sessions, untimed())
    again = record(sessions, untimed(6))
    assert again.duplicate and again.event_id == first.event_id
    assert record(sessions, untimed(300)).duplicate  # the window's last second, measured from the first
    later = record(sessions, untimed(301))
    assert not later.duplicate and events(sessions) == 2


def test_the_window_looks_both_ways_when_the_clock_steps_back(sessions: sessionmaker[Session]) -> None:
    first = record(sessions, untimed(100))
    assert record(sessions, untimed(0)).event_id == first.event_id


def test_different_content_in_the_window_is_another_event(sessions: sessionmaker[Session]) -> None:
    record(sessions, untimed())
    assert not record(sessions, untimed(1, zone="4")).duplicate
    assert not record(sessions, untimed(2, message="Back door")).duplicate


def test_a_signed_delivery_is_recognised_by_its_id_after_the_window(sessions: sessionmaker[Session]) -> None:
    first = record(sessions, untimed(delivery_id="msg_1"))
    replay = record(sessions, untimed(9 * 60, delivery_id="msg_1"))  # past the content window
    assert replay.duplicate and replay.event_id == first.event_id
    other = record(sessions, untimed(9 * 60 + 1, delivery_id="msg_2"))
    assert not other.duplicate  # a new delivery of the same words, after the window: a new event


def test_a_delivery_id_is_per_source(sessions: sessionmaker[Session]) -> None:
    record(sessions, untimed(delivery_id="msg_1"))
    elsewhere = record(sessions, untimed(9 * 60, source_key="other-panels", delivery_id="msg_1"))
    assert not elsewhere.duplicate


def test_a_new_delivery_of_the_same_content_within_the_window_is_a_duplicate(
    sessions: sessionmaker[Session],
) -> None:
    first = record(sessions, untimed(delivery_id="msg_1"))
    assert record(sessions, untimed(6, delivery_id="msg_2")).event_id == first.event_id


def test_an_event_with_its_own_id_or_time_keeps_its_key(sessions: sessionmaker[Session]) -> None:
    timed = untimed(occurred_at=T0)
    with_id = untimed(sender_event_id="evt-1")
    assert (timed.dedupe_key().content, with_id.dedupe_key().content) == (None, None)
    record(sessions, timed)
    record(sessions, with_id)
    # Recognised whenever they come again, long after any window.
    assert record(sessions, untimed(3600, occurred_at=T0)).duplicate
    assert record(sessions, untimed(3600, sender_event_id="evt-1")).duplicate
    with sessions() as session:
        assert session.execute(select(EventRow.content_key)).scalars().all() == [None, None]


def test_an_id_with_a_sequence_number_is_also_matched_by_what_it_says_within_the_window(
    sessions: sessionmaker[Session],
) -> None:
    """A stamped DC-09 frame's id holds its timestamp; the panel re-stamps a retransmission. The same
    content under the same sequence number within the window is that event, on both ledgers; another
    number, or the same after the window, is a new one."""
    first = record(
        sessions, untimed(sender_event_id="dc09/1234/0077/T1/0", sequence="0077/0", occurred_at=T0)
    )
    again = untimed(
        30, sender_event_id="dc09/1234/0077/T2/0", sequence="0077/0", occurred_at=T0 + timedelta(seconds=30)
    )
    assert record(sessions, again).event_id == first.event_id
    assert not record(
        sessions, untimed(40, sender_event_id="dc09/1234/0078/T3/0", sequence="0078/0")
    ).duplicate
    late = untimed(RULES.dedupe_window_s + 60, sender_event_id="dc09/1234/0077/T4/0", sequence="0077/0")
    assert not record(sessions, late).duplicate
    assert events(sessions) == 3


def test_the_window_costs_a_new_event_no_statement_of_its_own(
    sessions: sessionmaker[Session], statements: list[str]
) -> None:
    """The window's test rides in the insert: a new event without an id or a time of its own takes as
    many statements as one with its id (a lookup before the insert cost the DC-09 receiver a fifth of
    its frames a second)."""
    record(sessions, untimed(zone="1", sender_event_id="warm-up"))  # the first call of a statement differs
    record(sessions, untimed(zone="2"))
    statements.clear()
    record(sessions, untimed(zone="3", sender_event_id="evt-3"))
    with_id = list(statements)
    statements.clear()
    record(sessions, untimed(zone="4"))
    assert len(statements) == len(with_id)
    statements.clear()
    assert record(sessions, untimed(5, zone="4")).duplicate  # the same content within the window
    assert events(sessions) == 4


def test_a_replayed_delivery_answers_its_own_event_beside_a_later_one_of_its_content(
    sessions: sessionmaker[Session],
) -> None:
    """A signed delivery replayed within the window of a later event of the same content (recorded
    after the first one's window) is the delivery's own event, not the later one."""
    first = record(sessions, untimed(delivery_id="msg-1"))
    later = record(sessions, untimed(RULES.dedupe_window_s + 100, delivery_id="msg-2"))
    assert not later.duplicate
    replay = record(sessions, untimed(RULES.dedupe_window_s + 150, delivery_id="msg-1"))
    assert replay.duplicate and replay.event_id == first.event_id
