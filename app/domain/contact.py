"""Recording that a supervised account was heard from: its deadlines move, its outage is restored.

Supervision (``app.domain.supervision``) keeps, per supervised account, the deadline by which it
must be heard from again. This module is the contact half, called inside the transaction that records
the contact — intake for every event of a supervised account, a delivery sent again (a duplicate)
included, ``supervision.note_link`` for a DC-09 link frame — so a deadline moves exactly when the
contact is committed, never before. The common case is one upsert that returns whether an outage
was open; restoring it is the rare path.

A restore follows the SIA restore rule (intake's ``_restore``): the trouble alarm gets its
``restored_at`` and a timeline line, and stays for a person to end; nothing is stood down.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, event, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app import telemetry
from app.domain.sites import SupervisedAccount
from app.ledger.models import AccountSupervision, Alarm, AlarmState, TimelineEntry, UTCDateTime

LINK = "link"  # any contact (an event or a DC-09 link frame) within link_supervision
TEST = "test"  # an automatic test within test_interval + test_grace
# The SIA codes of a panel's periodic test: RP (Automatic Test), and RY (Test Off Normal), which a
# panel sends instead while a trouble is present (Contact ID 1608, "periodic test report with trouble
# present"). Either proves its test timer and its path; a manual test (RX) or an unspecified test
# report (TX) does not.
AUTOMATIC_TEST_CODES = frozenset({"RP", "RY"})
# In the details of the trouble event the tick records: it is the bridge speaking, not the account.
TROUBLE_DETAIL = "supervision"

_TABLE = AccountSupervision.__table__
_C = _TABLE.c
_METRICS_KEY = "alarm_bridge.supervision_metrics"


def period_s(period: timedelta | None) -> int | None:
    """A supervision period as the ledger stores it (whole seconds), None when switched off."""
    return None if period is None else int(period.total_seconds())


def record_contact(
    session: Session,
    supervised: SupervisedAccount,
    *,
    at: datetime,
    what: str,
    link_frame: bool = False,
    test: bool = False,
    event_id: int | None = None,
) -> None:
    """Note that ``supervised`` was heard from at ``at``; restore its outage if one was open.

    Any contact re-arms the link deadline and ends a link outage; only an automatic test
    (``test``) re-arms the test deadline and ends a test outage. ``what`` names the contact on the
    restored alarm's timeline. The caller holds the account's lock (intake's advisory lock on
    PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite).
    """
    supervision = supervised.supervision
    link_period, test_period = supervision.link, supervision.test_period
    link_deadline = at + link_period if link_period is not None else None
    test_deadline = at + test_period if test_period is not None else None
    at_bound = stamp(at)
    values: dict[str, Any] = {
        "source_key": supervised.source_key,
        "account": supervised.account,
        "site_key": supervised.site_key,
        "supervised_since": at,
        "last_contact_at": at,
        "last_link_at": at if link_frame else None,
        "last_test_at": at if test else None,
        "link_period_s": period_s(link_period),
        "test_period_s": period_s(test_period),
        "link_deadline_at": link_deadline,
        "test_deadline_at": test_deadline,
        "updated_at": at,
    }
    changes: dict[str, Any] = {
        "site_key": supervised.site_key,
        "last_contact_at": later(_C.last_contact_at, at_bound),
        "link_period_s": values["link_period_s"],
        "test_period_s": values["test_period_s"],
        # Any contact re-arms the link from itself, in trouble or not (a period changed in the file
        # applies at once); only a contact older than the last one leaves the deadline alone.
        "link_deadline_at": None
        if link_deadline is None
        else _rearmed(_C.link_deadline_at, _C.last_contact_at, at_bound, stamp(link_deadline)),
        "updated_at": at_bound,
    }
    if link_frame:
        changes["last_link_at"] = later(_C.last_link_at, at_bound)
    if test_deadline is None:
        changes["test_deadline_at"] = None
    elif test:
        changes["last_test_at"] = later(_C.last_test_at, at_bound)
        changes["test_deadline_at"] = _rearmed(
            _C.test_deadline_at, _C.last_test_at, at_bound, stamp(test_deadline)
        )
    else:
        # Only a test re-arms a test deadline; an unarmed one (supervision just declared) starts now,
        # one cleared by an open outage stays cleared until the next test.
        changes["test_deadline_at"] = case(
            (_C.test_deadline_at.is_(None) & _C.test_alarm_id.is_(None), stamp(test_deadline)),
            else_=_C.test_deadline_at,
        )
    insert_ = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert_(_TABLE)
        .values(values)
        .on_conflict_do_update(index_elements=[_C.source_key, _C.account], set_=changes)
        .returning(_C.id, _C.link_alarm_id, _C.test_alarm_id)
    )
    row = session.execute(statement).one()
    outages = [(LINK, row.link_alarm_id)] if row.link_alarm_id is not None else []
    if test and row.test_alarm_id is not None:
        outages.append((TEST, row.test_alarm_id))
    if not outages:
        return
    session.execute(
        update(_TABLE).where(_C.id == row.id).values({f"{kind}_alarm_id": None for kind, _ in outages})
    )
    for kind, alarm_id in outages:
        _restore(session, supervised, kind, alarm_id, at=at, what=what, event_id=event_id)


def _restore(
    session: Session,
    supervised: SupervisedAccount,
    kind: str,
    alarm_id: int,
    *,
    at: datetime,
    what: str,
    event_id: int | None,
) -> None:
    """The restore rule on the outage's trouble alarm: restored, on the timeline, left for a person."""
    count_after_commit(session, telemetry.SUPERVISION_RESTORED.labels(kind))
    alarm = session.execute(select(Alarm).where(Alarm.id == alarm_id).with_for_update()).scalar_one_or_none()
    if alarm is None or alarm.state == AlarmState.ENDED:
        return  # a person ended it (or it was archived): the deadline is re-armed all the same
    if alarm.restored_at is None:
        alarm.restored_at = at
    back = "the link is back" if kind == LINK else "automatic tests are back"
    message = f"{what} from account {supervised.account}: {back}; the trouble stays until a person ends it"
    session.add(
        TimelineEntry(
            alarm_id=alarm.id,
            event_id=event_id,
            at=at,
            kind="alarm.zone_restored",
            message=message,
            data={"supervision": kind},
        )
    )


def count_after_commit(session: Session, counter: Any) -> None:
    """Count ``counter`` once the transaction commits (a rolled-back trouble or restore never happened)."""
    pending: list[Any] | None = session.info.get(_METRICS_KEY)
    if pending is None:
        pending = session.info[_METRICS_KEY] = []
        event.listen(session, "after_commit", _count_pending)
        event.listen(session, "after_rollback", _drop_pending)
    pending.append(counter)


def _count_pending(session: Session) -> None:
    for counter in session.info.get(_METRICS_KEY, ()):
        counter.inc()
    session.info[_METRICS_KEY] = []


def _drop_pending(session: Session) -> None:
    session.info[_METRICS_KEY] = []


def stamp(value: datetime) -> Any:
    """A time as a bound value of the ledger's type (aware UTC in, naive on SQLite)."""
    return literal(value, UTCDateTime())


def later(column: Any, value: Any) -> Any:
    """The later of a nullable column and ``value``."""
    return case((column.is_(None) | (column < value), value), else_=column)


def _rearmed(deadline: Any, last: Any, at: Any, new_deadline: Any) -> Any:
    """``new_deadline``, unless the row has a deadline armed by a contact later than ``at``.

    (Every SET expression of an UPDATE reads the row as it was, so ``last`` is the previous contact.)
    """
    return case(
        (deadline.is_(None) | last.is_(None) | (last <= at), new_deadline),
        else_=deadline,
    )
