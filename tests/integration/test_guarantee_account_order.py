"""One account's signals are recorded one at a time, in order (DESIGN.md "Record": dedupe and grouping
in ONE transaction), on both ledgers.

A second signal of an account arriving while the first is still being recorded waits for the first
to commit, so it sees the alarm the first opened (and joins it) or the event the first recorded (and is
its duplicate). PostgreSQL gets this from the account's advisory lock, SQLite from BEGIN IMMEDIATE.
Without the lock, the second writer sees nothing yet and opens a second alarm with a second response
(a second guard), or records a retried delivery twice.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.domain.events import Event
from app.domain.intake import IntakeRules, Receipt, record_event
from app.domain.sites import Sites
from app.ledger.models import Action, Alarm
from app.ledger.models import Event as EventRow
from app.ledger.session import make_sessionmaker
from tests.sites_fixture import MONTREAL_ACCOUNT, dual_path_sites, example_sites

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC).replace(microsecond=0)
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
SITES = example_sites()
WAIT_S = 1.0  # how long the second writer is given to (wrongly) get through while the first is open


def burglary(
    *, after_s: float, account: str = MONTREAL_ACCOUNT, source: str = "acme-panels", **kw: Any
) -> Event:
    at = T0 + timedelta(seconds=after_s)
    return Event(
        source_key=source, source_kind="panel", received_at=at, account=account,
        code="BA", zone="3", message="Front door", payload={"code": "BA"}, **kw,
    )  # fmt: skip


def first_open_then_second(
    sessions: sessionmaker[Session], first: Event, second: Event, sites: Sites = SITES
) -> tuple[Receipt, Receipt, bool]:
    """Record ``first`` and keep its transaction open while ``second`` is recorded in another thread;
    commit the first after WAIT_S. Returns both receipts, and whether the second was still waiting
    when the first committed."""
    got: list[Receipt] = []
    errors: list[BaseException] = []

    def record_second() -> None:
        try:
            with sessions.begin() as session:
                got.append(record_event(session, second, sites=sites, rules=RULES))
        except BaseException as exc:  # reported by the caller's assertion
            errors.append(exc)

    with sessions.begin() as session:
        receipt = record_event(session, first, sites=sites, rules=RULES)
        thread = threading.Thread(target=record_second)
        thread.start()
        thread.join(WAIT_S)
        waited = thread.is_alive()
    thread.join(60)
    assert not thread.is_alive() and not errors, errors
    return receipt, got[0], waited


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.mark.parametrize("spelling", [MONTREAL_ACCOUNT, " AB-95367 "], ids=["same-spelling", "other-case"])
def test_a_repeat_recorded_while_the_first_signal_commits_joins_its_alarm(
    engine: Engine, spelling: str
) -> None:
    sessions = make_sessionmaker(engine)
    first, second, waited = first_open_then_second(
        sessions,
        burglary(after_s=0, sender_event_id="evt-1", occurred_at=T0),
        burglary(after_s=5, account=spelling, sender_event_id="evt-2", occurred_at=T0 + timedelta(seconds=5)),
    )

    assert waited, "the second signal of the account did not wait for the first one's commit"
    assert not second.duplicate and second.alarm_id == first.alarm_id and second.due_actions == ()
    assert count(sessions, Alarm) == 1
    assert count(sessions, Action) == 2  # one plan: the guard and the held call, not two of each
    with sessions() as session:
        assert session.get_one(Alarm, first.alarm_id).event_count == 2


def test_a_delivery_without_id_or_time_repeated_while_the_first_commits_is_its_duplicate(
    engine: Engine,
) -> None:
    """The sliding dedupe window (no id, no time of its own) is a lookup: it only sees what the first
    writer committed, so the second must wait for it."""
    sessions = make_sessionmaker(engine)
    first, second, waited = first_open_then_second(sessions, burglary(after_s=0), burglary(after_s=3))

    assert waited
    assert second.duplicate and (second.event_id, second.alarm_id) == (first.event_id, first.alarm_id)
    assert count(sessions, EventRow) == 1 and count(sessions, Alarm) == 1


def test_the_same_alarm_through_a_second_path_waits_and_joins_the_first(
    engine: Engine, tmp_path: Path
) -> None:
    """A dual-path panel sends one alarm through two sources at once. Grouping finds the open alarm by
    site and account, so the lock must be the site's account, not each source's: with a lock per
    source, the second path's signal sees nothing yet and opens a second alarm (a second guard)."""
    sessions = make_sessionmaker(engine)
    sites = dual_path_sites(tmp_path)
    first, second, waited = first_open_then_second(
        sessions,
        burglary(after_s=0, sender_event_id="evt-1", occurred_at=T0),
        burglary(after_s=0.2, source="acme-gateway", sender_event_id="gw-1", occurred_at=T0),
        sites,
    )

    assert waited, "the second path's signal did not wait for the first one's commit"
    assert not second.duplicate and second.alarm_id == first.alarm_id and second.due_actions == ()
    assert count(sessions, Alarm) == 1
    assert count(sessions, Action) == 2  # one plan: the guard and the held call, not two of each
