"""Life-safety first at the door (issue 14): the Procfile's `web` line with one gevent process whose
gate lets two non-life-safety events be recorded at once (WEB_INTAKE_CONCURRENCY=2), on PostgreSQL.

The test holds the advisory lock that serialises one account's signals, so two troubles of that
account are admitted and then stay in their transactions: the gate is full. Then:
- a trouble and a burglary of other accounts wait at the gate (the metric says so), and the burglary,
  though it came second, is recorded first once slots free (property before technical);
- a fire alarm is answered 202 at once, through the full gate;
- once the lock goes, every event is answered 202, and nothing was lost.
A gate that does not bound, does not rank, or holds a fire back fails one of these.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from app.domain.intake import account_lock_id
from tests.polling import wait_until
from tests.processes import procfile_web
from tests.sites_fixture import EXAMPLE_SITES, PANEL_TOKEN, SOURCE_ENV

pytestmark = pytest.mark.integration
SOURCE = "acme-panels"  # the example sites file's panel source, whose token is PANEL_TOKEN
HEADERS = {"Authorization": f"Bearer {PANEL_TOKEN}"}


@pytest.fixture
def web(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[str]:
    with procfile_web(
        database_url=postgres_url,
        redis_url=redis_url,
        tmp_path=tmp_path,
        tag="abdoor",
        sites=EXAMPLE_SITES,
        WEB_CONCURRENCY="1",  # one process: its gate governs every request below
        WEB_INTAKE_CONCURRENCY="2",
        **SOURCE_ENV,
    ) as base:
        yield base


def _event(account: str, code: str, zone: str) -> dict[str, str]:
    return {"account": account, "code": code, "zone": zone, "occurred_at": datetime.now(UTC).isoformat()}


def _waiting_at_gate(base: str) -> float:
    text = requests.Session().get(f"{base}/metrics", timeout=10).text
    line = next((x for x in text.splitlines() if x.startswith("alarm_bridge_intake_gate_waiting ")), None)
    return float(line.split()[1]) if line else 0.0  # no process has had a waiter yet


def _lock_waiters(conn: psycopg.Connection, lock_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND ((classid::bigint << 32) | objid::bigint) = %s",
        (lock_id & 0xFFFFFFFFFFFFFFFF,),
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_fire_passes_a_full_gate_and_property_is_admitted_before_technical(
    web: str, postgres_url: str
) -> None:
    blocked_account = "door-blocked"
    lock_id = account_lock_id(SOURCE, blocked_account)
    holder = psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    pool = ThreadPoolExecutor(max_workers=8)

    def post(body: dict[str, str]) -> Future[requests.Response]:
        return pool.submit(
            requests.Session().post, f"{web}/v1/events", json=body, headers=HEADERS, timeout=60
        )

    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
        blockers = [post(_event(blocked_account, "AT", f"b{i}")) for i in range(2)]
        # Both troubles were admitted and now wait for the account's lock inside their transactions.
        wait_until(lambda: _lock_waiters(holder, lock_id) == 2, timeout_s=20, interval_s=0.05)

        trouble = post(_event("door-trouble", "AT", "t1"))
        wait_until(lambda: _waiting_at_gate(web) == 1, timeout_s=20, interval_s=0.05)
        burglary = post(_event("door-burglary", "BA", "z1"))
        wait_until(lambda: _waiting_at_gate(web) == 2, timeout_s=20, interval_s=0.05)

        fire = requests.Session().post(
            f"{web}/v1/events", json=_event("door-fire", "FA", "f1"), headers=HEADERS, timeout=10
        )
        assert fire.status_code == 202, fire.text  # answered while the gate is full
        assert not trouble.done() and not burglary.done()
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
        holder.close()

    answers = [f.result(timeout=30) for f in (*blockers, trouble, burglary)]
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    pool.shutdown()
    # Admission order is recording order: the burglary's event was written before the trouble's.
    burglary_event, trouble_event = answers[3].json()["event_id"], answers[2].json()["event_id"]
    assert burglary_event < trouble_event
    assert fire.json()["event_id"] < burglary_event  # the fire was recorded while both waited
    assert _waiting_at_gate(web) == 0


def test_a_batch_records_life_safety_first_but_never_ahead_of_its_own_account(web: str) -> None:
    events = [
        _event("batch-a", "AT", "1"),
        _event("batch-b", "BA", "1"),
        _event("batch-b", "FA", "2"),  # behind batch-b's burglary: keeps its place
        _event("batch-c", "FA", "1"),  # nothing of batch-c before it: recorded first
        _event("batch-d", "ZZ", "1"),  # an unknown code is treated as life-safety too
    ]
    answer = requests.Session().post(
        f"{web}/v1/events:batch", json={"events": events}, headers=HEADERS, timeout=30
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]  # answered in the batch's order
    assert [r["status"] for r in results] == [202] * 5
    ids = [r["event_id"] for r in results]
    recorded = sorted(range(5), key=lambda i: ids[i])
    assert recorded == [3, 4, 0, 1, 2]


def test_a_batch_reads_each_account_as_intake_does_before_putting_life_safety_first(web: str) -> None:
    """An account sent as a number, or in a CallOnAlarm body (accountNumber, eventCode), is the same
    account as its string elsewhere in the batch: its fire keeps its place behind the account's
    burglary, and a CallOnAlarm-shaped fire of another account goes first."""
    events: list[dict[str, Any]] = [
        {**_event("batch-x", "AT", "1")},
        {**_event("7301", "BA", "1"), "account": 7301},  # a number: the account 7301
        _event("7301", "FA", "2"),  # behind 7301's burglary: keeps its place
        {"accountNumber": "7302", "eventCode": "BA", "zone": "1"},
        {"accountNumber": "7302", "eventCode": "FA", "zone": "2"},  # behind 7302's burglary
        {"accountNumber": "7303", "eventCode": "fa", "zone": "1"},  # nothing of 7303 before it: first
    ]
    answer = requests.Session().post(
        f"{web}/v1/events:batch", json={"events": events}, headers=HEADERS, timeout=30
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [202] * 6, results
    ids = [r["event_id"] for r in results]
    assert sorted(range(6), key=lambda i: ids[i]) == [5, 0, 1, 2, 3, 4]
