"""Supervision of each account's link: a silent panel protects nobody (issue 18).

A site (or a source, for every account routed through it) may declare how often each account must
be heard from: any contact — an event, or a DC-09 link frame such as ``NULL`` — within
``link_supervision``, and an automatic test (SIA ``RP``, or ``RY`` with a trouble present) within
``test_interval`` plus ``test_grace``. An account is supervised once for its site, whichever of
the site's sources brings its signals (one row, ``SupervisedAccount.source_key``): a contact through
any path counts. The deadlines live in the ledger (``account_supervision``), so a restart loses none:

- ``arm`` (the first tick of each process) gives every declared account a row: one never heard from
  trips its interval after supervision began, not never.
- Contact moves the deadlines forward inside the transaction that records it (``app.domain.contact``:
  intake for every event, ``note_link`` here for link frames).
- ``check`` (the watchdog's tick) opens a trouble alarm for each deadline passed, through intake's
  own machinery — a synthetic ``YC`` (communications fail) or ``XX`` (fail to test) event, so the
  site's ``trouble`` plan, grouping and timeline apply — flags it for a person with the reason, and
  clears the deadline: one outage opens one alarm, however many ticks pass. The account's next
  message restores that alarm and re-arms the deadline. An outage within the grouping window of the
  last one joins its alarm, which is then no longer restored (and is restored again by the next
  message); its plan is not run a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, null, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app import telemetry
from app.domain import contact
from app.domain.actions import DueAction
from app.domain.alarms import note
from app.domain.contact import LINK, TEST, period_s
from app.domain.events import Event
from app.domain.intake import IntakeRules, account_lock_id, record_event
from app.domain.plans import format_duration
from app.domain.sites import Sites, SupervisedAccount
from app.ledger.models import AccountSupervision, Alarm

# The SIA codes of the trouble alarms a missed deadline opens (both "trouble", so the site's
# "trouble" plan list runs): communications fail for a silent link, fail to test for a missing test.
TROUBLE_CODES = {LINK: "YC", TEST: "XX"}
# Per kind and tick: a mass outage (a carrier down) is raised over a few ticks instead of holding
# the watchdog's tick, and the accounts' locks, for thousands of alarms at once.
MAX_TROUBLES_PER_CHECK = 200
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:id)")
_DEADLINES = {LINK: AccountSupervision.link_deadline_at, TEST: AccountSupervision.test_deadline_at}
_COLUMNS = AccountSupervision.__table__.c
_AGAIN = {LINK: "link silent again", TEST: "automatic tests missing again"}


@dataclass(frozen=True, slots=True)
class Trouble:
    """A deadline missed: the trouble alarm it opened and why."""

    kind: str  # LINK or TEST
    source_key: str
    account: str
    site_key: str
    alarm_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Checked:
    """What one tick did: the troubles it opened, and the steps to publish once it commits."""

    troubles: list[Trouble] = field(default_factory=list)
    due_actions: list[DueAction] = field(default_factory=list)


def note_link(
    session: Session, *, sites: Sites, source_key: str, account: str, at: datetime
) -> list[DueAction]:
    """Record that a DC-09 link frame (a ``NULL`` link test or any frame) arrived from an account.

    Re-arms its link deadline and restores a link outage; the caller commits, then publishes what is
    returned (nothing today: a restore starts no step). An unsupervised account costs nothing: the
    decision is taken from the in-memory Sites, before any statement.
    """
    supervised = sites.supervision_for(source_key, account)
    if supervised is None:
        return []
    _lock_account(session, sites, source_key, account)
    contact.record_contact(session, supervised, at=at, what="a DC-09 link frame", link_frame=True)
    return []


def arm(session: Session, *, sites: Sites, now: datetime) -> int:
    """Give every account the sites file supervises a row, and bring rows in line with the file.

    A new account is armed from ``now`` (a declared account never heard from trips then). A changed
    period re-arms its deadline from ``now``, unless an outage is open (its next message re-arms it).
    A row the file no longer supervises is disarmed: a stale deadline never trips. Idempotent: every
    process's first tick runs it, concurrently with the others. Returns the accounts supervised.
    """
    declared = {(s.source_key, s.account): s for s in sites.supervised_accounts}
    new_rows = [
        {
            "source_key": supervised.source_key,
            "account": supervised.account,
            "site_key": supervised.site_key,
            "supervised_since": now,
            "link_period_s": period_s(link),
            "test_period_s": period_s(test),
            "link_deadline_at": now + link if link is not None else None,
            "test_deadline_at": now + test if test is not None else None,
            "updated_at": now,
        }
        for supervised in declared.values()
        for link, test in [(supervised.supervision.link, supervised.supervision.test_period)]
    ]
    if new_rows:  # an account with a row already keeps it (and its deadlines): a restart loses none
        insert_ = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = insert_(AccountSupervision.__table__).on_conflict_do_nothing(
            index_elements=["source_key", "account"]
        )
        session.execute(statement, new_rows)
    _fold_other_paths(session, sites=sites, declared=declared, now=now)
    rows = session.execute(select(AccountSupervision)).scalars()
    for row in rows:
        found = declared.get((row.source_key, row.account))
        if found is not None:
            row.site_key = found.site_key
        periods = {
            LINK: found.supervision.link if found else None,
            TEST: found.supervision.test_period if found else None,
        }
        for kind, period in periods.items():
            if getattr(row, f"{kind}_period_s") == period_s(period):
                continue
            setattr(row, f"{kind}_period_s", period_s(period))
            if getattr(row, f"{kind}_alarm_id") is None:
                setattr(row, f"{kind}_deadline_at", now + period if period is not None else None)
            row.updated_at = now
    session.flush()
    return len(declared)


def _fold_other_paths(
    session: Session,
    *,
    sites: Sites,
    declared: dict[tuple[str, str], SupervisedAccount],
    now: datetime,
) -> None:
    """Fold a row kept for another path of an account into the account's row, and drop it.

    An account was once supervised per (source, account): a dual-path panel had a row per source,
    and each tripped on its own. It is now supervised once per site (``SupervisedAccount``), under
    one row; another path's row gives that row its later contacts (moving its deadline on, unless an
    outage is open) and its open outage, when the account's row has none, so the next contact
    restores that alarm. SQL expressions, not values read here: a contact committed meanwhile (or
    another process's ``arm``) is never overwritten, and folding twice changes nothing.
    """
    rows = session.execute(select(*_COLUMNS.values())).all()
    for found in rows:
        if (found.source_key, found.account) in declared:
            continue
        supervised = sites.supervision_for(found.source_key, found.account)
        if supervised is None or supervised.source_key == found.source_key:
            continue  # no longer supervised: disarmed below, as before
        # Under the account's lock, as intake and the tick write it, and read again: another process
        # folding it at the same moment (or a contact restoring an outage meanwhile) is not undone.
        _lock_account(session, sites, supervised.source_key, supervised.account)
        other = session.execute(
            select(*_COLUMNS.values()).where(AccountSupervision.id == found.id).with_for_update()
        ).one_or_none()
        if other is None:
            continue  # folded by another process already
        values: dict[str, Any] = {}
        for name in ("last_contact_at", "last_link_at", "last_test_at"):
            if getattr(other, name) is not None:
                values[name] = contact.later(_COLUMNS[name], contact.stamp(getattr(other, name)))
        checks = (
            (LINK, other.last_contact_at, supervised.supervision.link),
            (TEST, other.last_test_at, supervised.supervision.test_period),
        )
        for kind, last, period in checks:
            alarm_id, deadline = _COLUMNS[f"{kind}_alarm_id"], _COLUMNS[f"{kind}_deadline_at"]
            if getattr(other, f"{kind}_alarm_id") is not None:
                values[alarm_id.name] = case(
                    (alarm_id.is_(None), getattr(other, f"{kind}_alarm_id")), else_=alarm_id
                )
                values[deadline.name] = case((alarm_id.is_(None), null()), else_=deadline)
            elif last is not None and period is not None:
                moved = contact.stamp(last + period)
                values[deadline.name] = case(
                    (alarm_id.is_(None) & deadline.is_not(None) & (deadline < moved), moved),
                    else_=deadline,
                )
        if values:
            values["updated_at"] = now
            session.execute(
                update(AccountSupervision)
                .where(
                    AccountSupervision.source_key == supervised.source_key,
                    AccountSupervision.account == supervised.account,
                )
                .values(values)
            )
        session.execute(delete(AccountSupervision).where(AccountSupervision.id == other.id))


def check(
    session: Session, *, sites: Sites, now: datetime, rules: IntakeRules, limit: int = MAX_TROUBLES_PER_CHECK
) -> Checked:
    """Open one trouble alarm for each supervision deadline passed; the caller commits, then publishes.

    Each due account is taken under its lock (the one intake takes, so a message arriving at the
    same moment either lands first and re-arms the deadline, or restores the alarm just opened),
    and its row read again: a deadline moved or cleared meanwhile is not a trouble.
    """
    checked = Checked()
    for kind, deadline_column in _DEADLINES.items():
        due = session.execute(
            select(AccountSupervision.id, AccountSupervision.source_key, AccountSupervision.account)
            .where(deadline_column <= now)
            .order_by(deadline_column)
            .limit(limit)
        ).all()
        for found in due:
            _lock_account(session, sites, found.source_key, found.account)
            row = session.execute(
                select(AccountSupervision).where(AccountSupervision.id == found.id).with_for_update()
            ).scalar_one()
            deadline = getattr(row, f"{kind}_deadline_at")
            if deadline is None or deadline > now:
                continue  # heard from, or raised by another tick, since the search
            trouble = _trip(session, row, kind, deadline, sites=sites, now=now, rules=rules, checked=checked)
            if trouble is not None:
                checked.troubles.append(trouble)
    return checked


def _trip(
    session: Session,
    row: AccountSupervision,
    kind: str,
    deadline: datetime,
    *,
    sites: Sites,
    now: datetime,
    rules: IntakeRules,
    checked: Checked,
) -> Trouble | None:
    supervised = sites.supervision_for(row.source_key, row.account)
    if supervised is not None and supervised.source_key != row.source_key:
        supervised = None  # another path's row, from before an account had one row per site
    period = None
    if supervised is not None:
        period = supervised.supervision.link if kind == LINK else supervised.supervision.test_period
    if supervised is None or period is None:
        # The sites file this process read no longer supervises it: disarm, never trip on a stale row.
        setattr(row, f"{kind}_deadline_at", None)
        setattr(row, f"{kind}_period_s", None)
        row.updated_at = now
        session.flush()
        return None
    reason = _reason(row, kind, period, supervised.paths)
    setattr(row, f"{kind}_deadline_at", None)  # cleared for the outage: no second alarm
    row.updated_at = now
    session.flush()
    receipt = record_event(
        session, _trouble_event(supervised, kind, deadline, reason, now), sites=sites, rules=rules
    )
    assert receipt.alarm_id is not None  # a trouble always opens (or joins) an alarm
    setattr(row, f"{kind}_alarm_id", receipt.alarm_id)
    alarm = session.execute(
        select(Alarm)
        .where(Alarm.id == receipt.alarm_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    if receipt.opened is None and alarm.restored_at is not None:
        # A link that drops again within the grouping window joins the alarm of its last outage,
        # which that outage's end restored: a person must see it is not restored any more, and the
        # next contact restores it again. Its trouble plan ran when it opened and is not run again
        # (the contacts it rang are not rung twice within the window); the person is asked again.
        alarm.restored_at = None
        note(
            session,
            alarm.id,
            now,
            "alarm.restore_withdrawn",
            f"{_AGAIN[kind]} for account {row.account}: the alarm is no longer restored "
            "(its trouble plan ran when it opened and is not run again)",
            raised_by="supervision",
            reason=kind,
        )
    alarm.flag_for_person(reason)
    note(session, alarm.id, now, "alarm.needs_person", reason, raised_by="supervision", reason=kind)
    session.flush()
    checked.due_actions.extend(receipt.due_actions)
    contact.count_after_commit(session, telemetry.SUPERVISION_TROUBLES.labels(kind))
    return Trouble(kind, row.source_key, row.account, row.site_key, receipt.alarm_id, reason)


def _reason(row: AccountSupervision, kind: str, period: timedelta, paths: tuple[str, ...] = ()) -> str:
    """What a person reads: which account (through which sources, when several), silent since when,
    and the rule it broke."""
    account = f"account {row.account}"
    if len(paths) > 1:
        account = f"{account} (through {' or '.join(paths)})"
    if kind == LINK:
        heard, subject, rule = (
            row.last_contact_at,
            f"link to {account} silent",
            "link_supervision",
        )
    else:
        heard, subject, rule = (
            row.last_test_at,
            f"no automatic test (RP or RY) from {account}",
            "test_interval",
        )
        rule = f"{rule} + test_grace"
    if heard is None:
        since = f"since supervision began at {_shown(row.supervised_since)} (never heard from)"
    else:
        since = f"since {_shown(heard)}"
    return f"{subject} {since}: {rule} is {format_duration(period)}"


def _shown(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _trouble_event(
    supervised: SupervisedAccount, kind: str, deadline: datetime, reason: str, now: datetime
) -> Event:
    """The trouble as intake records it; its id names the outage, so it is recorded once."""
    payload: dict[str, Any] = {
        "message": reason,
        "supervision": kind,
        "deadline_at": deadline.isoformat(),
    }
    return Event(
        source_key=supervised.source_key,
        source_kind="panel",
        received_at=now,
        account=supervised.account,
        code=TROUBLE_CODES[kind],
        message=reason,
        sender_event_id=f"supervision:{kind}:{supervised.account}:{deadline.isoformat()}",
        details={contact.TROUBLE_DETAIL: kind},
        payload=payload,
    )


def _lock_account(session: Session, sites: Sites, source_key: str, account: str) -> None:
    """Intake's per-account lock (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers)."""
    if session.get_bind().dialect.name == "postgresql":
        # The lock of the site's account, as intake takes it for a routed signal.
        site = sites.site_for_account(source_key, account)
        lock_id = account_lock_id(source_key, account, site.key if site else None)
        session.execute(_ADVISORY_LOCK, {"id": lock_id})
