"""Supervision through the real tick: the watchdog task (what beat sends) arms a supervised account,
trips its missed deadline into one trouble alarm whose plan a real worker runs, trips nothing more on
later ticks, and the account's next event over HTTP restores it; the metrics count both.

The tick reads the real clock, so the passing of time is the ledger's: the test moves the account's
deadline into the past, exactly what the clock would have done, instead of waiting for it.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.domain import supervision, task_names
from app.domain.events import Event
from app.domain.intake import IntakeRules, account_lock_id, record_event
from app.domain.sites import Sites, Supervision
from app.ledger.models import AccountSupervision, Alarm
from app.ledger.session import make_engine, make_sessionmaker
from config.settings import Settings
from tests.polling import wait_until
from tests.sites_fixture import NEWTON_ACCOUNT, example_sites, location, site_toml
from tests.stack import E2E_SITES, OPERATOR, Stack

pytestmark = pytest.mark.integration
ACCOUNT = "sv-1"
RULES = IntakeRules()
SITES = (
    E2E_SITES
    + """
[plans.watched]
trouble = ["tracktik.create_alarm"]
"""
    + site_toml(
        "watched-shop",
        name="Watched shop",
        sources=["acme-panels"],
        accounts=[ACCOUNT],
        plan="watched",
        link_supervision="10m",
        test_interval="24h",
        tracktik={"alarm_organization": 687, "alarm_type_codes": {"trouble": "TECHNICAL"}},
        location=location("Watched shop", "1 Rue Peel", "Montreal", "QC", "CA", "H3C 2G9"),
    )
)


@pytest.fixture
def stack(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Stack]:
    settings = make_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        broker_key_prefix=f"absv:{uuid.uuid4().hex[:10]}:",
        metrics_cache_s=0,
    )
    with Stack(settings, tmp_path, sites_toml=SITES).running() as running:
        yield running


def _event(code: str) -> dict[str, str]:
    return {"account": ACCOUNT, "code": code, "event_id": uuid.uuid4().hex, "occurred_at": _now().isoformat()}


def _now() -> datetime:
    return datetime.now(UTC)


def _metric(stack: Stack, line: str) -> float:
    text = stack.http.get(f"{stack.web.base_url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(line)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _link_troubles(stack: Stack) -> list[dict[str, Any]]:
    response = stack.http.get(
        f"{stack.web.base_url}/v1/alarms", params={"state": "all"}, headers=OPERATOR, timeout=10
    )
    assert response.status_code == 200, response.text
    return [a for a in response.json()["alarms"] if a["account"] == ACCOUNT and a["code"] == "YC"]


def _the_deadline_passes(stack: Stack) -> None:
    with stack.runtime.sessions.begin() as session:
        session.execute(
            update(AccountSupervision)
            .where(AccountSupervision.account == ACCOUNT)
            .values(link_deadline_at=_now() - timedelta(seconds=1))
        )


def test_a_quiet_account_opens_one_trouble_through_the_tick_and_its_next_message_restores_it(
    stack: Stack,
) -> None:
    check = stack.task(task_names.SYSTEM_WATCHDOG)

    opened_before = _metric(stack, 'alarm_bridge_supervision_troubles_total{kind="link"}')
    restored_before = _metric(stack, 'alarm_bridge_supervision_restored_total{kind="link"}')
    assert stack.post_event(_event("RP"))["alarm_id"] is None  # a test: contact, no alarm
    assert check() == 0  # armed, and on time
    with stack.runtime.sessions() as session:
        row = session.execute(
            select(AccountSupervision).where(AccountSupervision.account == ACCOUNT)
        ).scalar_one()
    assert row.site_key == "watched-shop" and row.link_deadline_at is not None
    assert row.link_deadline_at > _now() + timedelta(minutes=9)

    _the_deadline_passes(stack)
    assert check() == 1
    assert [check(), check()] == [0, 0]  # later ticks: the same outage, no second alarm

    [trouble] = _link_troubles(stack)
    assert trouble["state"] == "needs_person"
    assert trouble["site"] == "watched-shop"
    assert re.fullmatch(
        r"link to account sv-1 silent since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: link_supervision is 10m",
        trouble["needs_person_reason"],
    )
    # The site's trouble plan, run by the real worker once the tick committed and published it.
    stack.wait_for(trouble["id"], "tracktik.create_alarm")
    assert _metric(stack, 'alarm_bridge_supervision_troubles_total{kind="link"}') == opened_before + 1
    assert _metric(stack, 'alarm_bridge_supervised_accounts_in_trouble{kind="link"}') == 1

    stack.post_event(_event("OP"))  # the account speaks again

    restored = stack.alarm(trouble["id"])
    assert restored["restored_at"] is not None
    assert any(
        line["kind"] == "alarm.zone_restored" and line["what"].startswith("event OP from account sv-1")
        for line in restored["timeline"]
    ), restored["timeline"]
    assert _metric(stack, 'alarm_bridge_supervision_restored_total{kind="link"}') == restored_before + 1
    assert _metric(stack, 'alarm_bridge_supervised_accounts_in_trouble{kind="link"}') == 0
    assert check() == 0  # re-armed ten minutes ahead
    assert len(_link_troubles(stack)) == 1


def _newton_supervised() -> Sites:
    """The example sites with Newton's link supervised every 10 minutes."""
    example = example_sites()
    newton = example.site("newton-residence")
    assert newton is not None
    return Sites(example.sources, [replace(newton, supervision=Supervision(link=timedelta(minutes=10)))])


@pytest.mark.parametrize("first", ["tick", "message"])
def test_a_message_racing_the_tick_either_re_arms_first_or_restores_what_it_opened(
    postgres_url: str, first: str
) -> None:
    """The tick and intake take the account's lock in the same order, so the second waits for the
    first instead of deadlocking. Message first: the tick finds the deadline moved and opens nothing.
    Tick first: the message restores the alarm the tick just opened. Either way the account ends
    re-armed from the message."""
    sites = _newton_supervised()
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    deadline = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    heard = deadline + timedelta(seconds=1)
    event = Event(
        source_key="acme-panels", source_kind="panel", received_at=heard, account=NEWTON_ACCOUNT,
        code="OP", zone="1", occurred_at=heard,
    )  # fmt: skip
    try:
        with sessions.begin() as session:
            supervision.arm(session, sites=sites, now=deadline - timedelta(minutes=10))
        troubles: list[supervision.Trouble] = []

        def tick(session: Session) -> None:
            troubles.extend(supervision.check(session, sites=sites, now=heard, rules=RULES).troubles)

        def message(session: Session) -> None:
            record_event(session, event, sites=sites, rules=RULES)

        steps = [tick, message] if first == "tick" else [message, tick]
        _second_waits_for_first(sessions, *steps)

        with sessions() as session:
            row = session.execute(select(AccountSupervision)).scalar_one()
            assert (row.link_alarm_id, row.link_deadline_at) == (None, heard + timedelta(minutes=10))
            if first == "tick":
                [trouble] = troubles
                assert session.get_one(Alarm, trouble.alarm_id).restored_at == heard
            else:
                assert troubles == []
                assert session.execute(select(Alarm).where(Alarm.code == "YC")).first() is None
    finally:
        engine.dispose()


def test_the_tick_takes_the_lock_intake_takes_for_the_sites_account(postgres_url: str) -> None:
    """Intake locks a routed account by its site (every path of a dual-path panel shares it). The tick
    must wait for that same lock before it locks the account's row: with a lock of its own it would
    hold the row while waiting for the site's lock in intake, and intake, holding the site's lock,
    waits for the row to record the account's contact; each would wait for the other."""
    sites = _newton_supervised()
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    deadline = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    try:
        with sessions.begin() as session:
            supervision.arm(session, sites=sites, now=deadline - timedelta(minutes=10))

        def tick(session: Session) -> None:
            supervision.check(session, sites=sites, now=deadline + timedelta(seconds=1), rules=RULES)

        def intake_holds_the_sites_lock(session: Session) -> None:
            lock_id = account_lock_id("acme-panels", NEWTON_ACCOUNT, "newton-residence")
            session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})

        def row_is_free(session: Session) -> None:  # NOWAIT: raises if the tick holds the row
            session.execute(select(AccountSupervision.id).with_for_update(nowait=True)).all()

        _second_waits_for_first(sessions, intake_holds_the_sites_lock, tick, while_waiting=row_is_free)
    finally:
        engine.dispose()


def _second_waits_for_first(
    sessions: sessionmaker[Session],
    first: Callable[[Session], None],
    second: Callable[[Session], None],
    while_waiting: Callable[[Session], None] | None = None,
) -> None:
    """Run ``first`` in a transaction held open until ``second``, in another thread, is seen waiting
    for one of its locks (then ``while_waiting`` runs in the first's transaction); then commit it and
    let ``second`` finish."""
    errors: list[BaseException] = []
    pid: list[int] = []

    def run_second() -> None:
        try:
            with sessions.begin() as session:
                session.execute(text("SET LOCAL lock_timeout = '10s'"))
                pid.append(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
                second(session)
        except BaseException as exc:
            errors.append(exc)

    with sessions.begin() as session:
        first(session)
        thread = threading.Thread(target=run_second)
        thread.start()

        def waiting() -> bool:
            if not pid:
                return False
            found = session.execute(
                text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"), {"pid": pid[0]}
            ).scalar_one()
            return bool(found)

        wait_until(waiting, timeout_s=10)
        if while_waiting is not None:
            while_waiting(session)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert not errors, errors
