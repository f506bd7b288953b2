"""record_event(): one signal into the ledger, in ONE transaction, exactly once.

Everything that makes a signal an alarm happens here, without Flask and before the sender hears
"accepted": recognise a retried delivery (the dedupe key: unique in the database, and for events
without an id or a time of their own a sliding-window lookup under the account's lock), route it to a
site (or record it as unrouted for a person), group repeats into the open alarm, apply restore and
cancel rules, materialise the site's plan as action rows with their due times, and write the
timeline. The caller commits, then hands ``Receipt.due_actions`` to the outbox.

Rules (DESIGN.md, CONTRACTS §6.4):
- A restore is not a cancel: it records that the zone is normal again and stops nothing. A restore
  that arrives before its alarm is kept and matched when the alarm opens; one that arrives after its
  zone's alarm ended is that ended alarm's, never the next alarm's.
- A cancel (BC, OC, an opening by a user) within the site's cancel window stands the response down
  as an operator's End with outcome cancelled does: every step not started stops (those marked
  cancellable, held for the window, and the others). Fire, medical, holdup, panic (and the other
  never-held families) are never held: their steps cannot be cancellable and their alarms are not
  cancelled. The window holds by receive times and, when both the alarm's event and the cancel
  carry the sender's own time, by those too. An alarm an operator verified valid is never stood
  down by a panel's cancel (a disarm after that verdict may be coerced): the cancel is recorded and
  the alarm goes to a person.
- Nothing that could be a real alarm is dropped: an unknown code or an unclaimed account opens an
  alarm flagged for a person.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, text, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.domain import contact, operations, sia
from app.domain.actions import DueAction, action_values
from app.domain.alarms import note
from app.domain.events import Classification, DedupeKey, Event
from app.domain.plans import ALARM_KINDS, TROUBLE_KINDS, UNROUTED_PLAN, Step
from app.domain.site_tables import normalise
from app.domain.sites import Site, Sites
from app.domain.stand_down import engaged_by_hand, stand_down
from app.ledger.models import (
    ACTIVE_ALARM_STATES,
    WAITING_FOR_911,
    Action,
    ActionState,
    Alarm,
    AlarmState,
    Outcome,
    TimelineEntry,
)
from app.ledger.models import Event as EventRow
from config.settings import Settings
from vendors import BY_API, BY_HAND_CREATES, EMERGENCY_REQUESTS, RESPONDER_STEPS, acts_on_source, vendor_of
from vendors.base import ByApi

OPENING_KINDS = ALARM_KINDS | TROUBLE_KINDS
# Alarms a person could act on: a plan for one that sends no responder puts it in front of a person.
_ANSWERED = frozenset({sia.Priority.LIFE_SAFETY, sia.Priority.PROPERTY})
# A life-safety alarm's 911 request (``vendors.EMERGENCY_REQUESTS``) leaves first: its other immediate
# steps wait until the request has been written to the socket (its task releases them), and never
# longer than this, so a guard is not kept waiting by a 911 step that cannot start (the dispatcher
# sends them then).
HOLD_FOR_911 = timedelta(seconds=3)
RESTORE_KINDS = frozenset({sia.Kind.RESTORE, sia.Kind.TROUBLE_RESTORE, sia.Kind.UNBYPASS})

# The common path (a new event that opens or joins an alarm) runs as a handful of prepared Core
# statements, built once: at alarm rates the ORM's per-statement work was most of intake's CPU.
EVENTS, ALARMS = EventRow.__table__, Alarm.__table__
ACTIONS, TIMELINE = Action.__table__, TimelineEntry.__table__
OWN, THEIRS = EVENTS.alias("own"), EVENTS.alias("theirs")
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:id)")

# A panel's zone 3 arrives as "3", "03" or "003": Contact ID pads it to three digits, a gateway
# posting JSON often sends the number. Intake takes them for one zone when it groups, restores and
# adopts early restores, so a dual-path panel whose two paths spell it differently opens one alarm,
# not two that would each dispatch. Each row keeps the zone as its sender wrote it; a statement
# compares the column with each spelling (the zone without its leading zeros, then with one to
# ZONE_PADDING more, and the zone as sent, which a longer padding is not among), so the indexes on
# the zone column still serve it.
ZONE_PADDING = 5
_ZONE_PARAMS = (*(f"p_zone{n}" for n in range(ZONE_PADDING + 1)), "p_zone_as_sent")


def zone_spellings(zone: str) -> dict[str, str]:
    """The statements' parameters for ``zone``: each spelling of it with leading zeros."""
    bare = zone.lstrip("0")
    return {**{name: "0" * n + bare for n, name in enumerate(_ZONE_PARAMS[:-1])}, _ZONE_PARAMS[-1]: zone}


def same_zone(column: Any, zone: str | None) -> Any:
    """``column`` holds ``zone`` in any of its spellings (None: no zone), with the values bound."""
    return column.is_(None) if zone is None else column.in_(list(zone_spellings(zone).values()))


def _zone_matches(column: Any) -> Any:
    # A fixed list of bound values, not an expanding IN: the statement's text stays the same, and
    # PostgreSQL takes "IN (...)" as "= ANY", which its btree indexes serve (an OR of equalities,
    # before PostgreSQL 18, they do not).
    return column.in_([bindparam(name) for name in _ZONE_PARAMS])


_FIND_EVENT = select(EVENTS.c.id, EVENTS.c.alarm_id, EVENTS.c.account).where(
    EVENTS.c.dedupe_key == bindparam("key")
)
# The sliding window: the events of this content received within the window either side of this one
# (a clock stepped back is still within it). One range read of ix_events_content_key.
_IN_WINDOW = (
    EVENTS.c.content_key == bindparam("content"),
    EVENTS.c.received_at >= bindparam("since", type_=EVENTS.c.received_at.type),
    EVENTS.c.received_at <= bindparam("until", type_=EVENTS.c.received_at.type),
)
_FIND_RECENT = (
    select(EVENTS.c.id, EVENTS.c.alarm_id).where(*_IN_WINDOW).order_by(EVENTS.c.received_at.desc()).limit(1)
)
_EVENT_COLUMNS = (
    "dedupe_key",
    "content_key",
    "source",
    "sender_event_id",
    "received_at",
    "occurred_at",
    "clock_skew_s",
    "account",
    "zone",
    "code",
    "site_key",
    "payload",
)
# Both inserts of an event take these columns (``_insert_event`` binds each by name): neither can drop one.
_EVENT_VALUES = [bindparam(name, type_=EVENTS.c[name].type) for name in _EVENT_COLUMNS]
_INSERT_EVENT = {
    dialect: insert_(EVENTS)
    .values(dict(zip(_EVENT_COLUMNS, _EVENT_VALUES, strict=True)))
    .on_conflict_do_nothing(index_elements=["dedupe_key"])
    .returning(EVENTS.c.id)
    for dialect, insert_ in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
# An event with a content key is inserted only when no event of its content is in the window: the
# window's test rides in the insert, so a new event costs no round trip of its own for it (a lookup
# before the insert cost the DC-09 receiver a fifth of its frames a second).
_NONE_IN_WINDOW = ~select(EVENTS.c.id).where(*_IN_WINDOW).exists()
_INSERT_EVENT_UNLESS_RECENT = {
    dialect: insert_(EVENTS)
    .from_select(_EVENT_COLUMNS, select(*_EVENT_VALUES).where(_NONE_IN_WINDOW))
    .on_conflict_do_nothing(index_elements=["dedupe_key"])
    .returning(EVENTS.c.id)
    for dialect, insert_ in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_ACTIVE = [state.value for state in ACTIVE_ALARM_STATES]
_INSERT_ALARM = insert(ALARMS).returning(ALARMS.c.id)
_INSERT_ACTIONS = insert(ACTIONS).returning(ACTIONS.c.id, sort_by_parameter_order=True)
_INSERT_TIMELINE = insert(TIMELINE)
_ATTACH_EVENT = (
    update(EVENTS).where(EVENTS.c.id == bindparam("p_event_id")).values(alarm_id=bindparam("p_alarm_id"))
)


# The priorities of the alarms an event may join: its own and higher. A fire alarm that follows a
# fire trouble of its zone (a detector's fault, then the fire) must not join the trouble's alarm, which
# runs the trouble's plan on the bulk queue: it opens a fire alarm with the fire plan. A trouble that
# follows a fire alarm joins it: the fire's response is already more than the trouble's.
_PRIORITY_ORDER = (
    sia.Priority.LIFE_SAFETY,
    sia.Priority.PROPERTY,
    sia.Priority.TECHNICAL,
    sia.Priority.INFORMATIONAL,
)
_JOINABLE = {
    priority.value: [p.value for p in _PRIORITY_ORDER[: index + 1]]
    for index, priority in enumerate(_PRIORITY_ORDER)
}


@functools.cache
def _trouble_codes(family: str, priority: str) -> tuple[str, ...]:
    """The codes of ``family`` whose alarms run the trouble plan at a priority an alarm may join.

    Priority alone keeps most alarms out of a trouble's alarm (a fire trouble is technical, the fire
    life-safety), but some supervisory signals rank with their family's alarms: a "fail to close" (CI)
    is an access supervisory at property priority, like a door forced (DF). An alarm must not be
    absorbed by such an alarm, whose plan is the trouble's: it opens its own, with its own response.
    """
    joinable = set(_JOINABLE[priority])
    return tuple(
        sorted(
            code
            for code, entry in sia.CATALOGUE.items()
            if entry.family.value == family
            and entry.kind.value in TROUBLE_KINDS
            and entry.priority.value in joinable
        )
    )


@functools.cache
def _join_statement(routed: bool, zoned: bool, priority: str, not_codes: tuple[str, ...] = ()) -> Any:
    """Find and join the open alarm of this place, zone and family in one statement.

    Only an alarm of the event's priority or a higher one is joined (``_JOINABLE``), not one a
    panel's cancel stood down, and not one opened by a code of ``not_codes`` (an alarm's event and a
    trouble's alarm: ``_trouble_codes``). The outer state test is evaluated again on the row the
    UPDATE locks, so an alarm an operator ends meanwhile is not joined: a new one opens instead.
    """
    place = [ALARMS.c.account == bindparam("p_account")]
    if routed:
        place.append(ALARMS.c.site_key == bindparam("p_site_key"))
    else:
        place += [ALARMS.c.site_key.is_(None), ALARMS.c.source_key == bindparam("p_source_key")]
    place.append(_zone_matches(ALARMS.c.zone) if zoned else ALARMS.c.zone.is_(None))
    latest = (
        select(ALARMS.c.id)
        .where(
            *place,
            ALARMS.c.family == bindparam("p_family"),
            # Plain bound values, not IN (...): an IN list is expanded again at every execution.
            or_(*(ALARMS.c.priority == value for value in _JOINABLE[priority])),
            ALARMS.c.state.in_(_ACTIVE),
            # A cancel at the panel stood its response down (it only waits for a person to recall a
            # responder): a new signal opens an alarm of its own, as it would after an End.
            ALARMS.c.panel_cancelled_at.is_(None),
            ALARMS.c.last_event_at >= bindparam("p_since", type_=ALARMS.c.last_event_at.type),
            *(
                [or_(ALARMS.c.code.is_(None), and_(*(ALARMS.c.code != code for code in not_codes)))]
                if not_codes
                else []
            ),
        )
        .order_by(ALARMS.c.id.desc())
        .limit(1)
        .correlate(None)  # its own FROM alarms, not the UPDATE's row
        .scalar_subquery()
    )
    return (
        update(ALARMS)
        .where(ALARMS.c.id == latest, ALARMS.c.state.in_(_ACTIVE))
        .values(
            event_count=ALARMS.c.event_count + 1,
            last_event_at=bindparam("p_now", type_=ALARMS.c.last_event_at.type),
        )
        .returning(
            ALARMS.c.id,
            ALARMS.c.event_count,
            ALARMS.c.family,
            ALARMS.c.priority,
            ALARMS.c.restored_at,
            ALARMS.c.code,
        )
    )


@functools.cache
def _attach_with_restores_statement(zoned: bool) -> Any:
    """Attach the event to its new alarm, and adopt restores of its zone that came first."""
    early = (
        EVENTS.c.alarm_id.is_(None)
        & EVENTS.c.source.in_(bindparam("p_sources", expanding=True))
        & (EVENTS.c.account == bindparam("p_account"))
        & (_zone_matches(EVENTS.c.zone) if zoned else EVENTS.c.zone.is_(None))
        & EVENTS.c.code.in_(bindparam("p_codes", expanding=True))
        & (EVENTS.c.received_at >= bindparam("p_since", type_=EVENTS.c.received_at.type))
    )
    return (
        update(EVENTS)
        .where((EVENTS.c.id == bindparam("p_event_id")) | early)
        .values(alarm_id=bindparam("p_alarm_id"))
        .returning(
            EVENTS.c.id,
            EVENTS.c.code,
            EVENTS.c.received_at,
            (EVENTS.c.id != bindparam("p_event_id")).label("early"),
        )
    )


@dataclass(frozen=True, slots=True)
class IntakeRules:
    """The windows intake applies; from Settings, fixed for a process."""

    grouping_window: timedelta = timedelta(minutes=5)
    dedupe_window_s: float = 300.0
    clock_skew_tolerance: timedelta = timedelta(minutes=5)
    max_attempts: int = 8
    # DUAL_PATH_COPIES: late copies of openings recognised (_copy_through_another_path).
    path_copies: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeRules:
        """The windows every intake door applies (the web process and the DC-09 receiver alike)."""
        return cls(
            grouping_window=timedelta(seconds=settings.grouping_window_s),
            dedupe_window_s=settings.dedupe_window_s,
            clock_skew_tolerance=timedelta(seconds=settings.clock_skew_tolerance_s),
            max_attempts=settings.action_max_attempts,
            path_copies=settings.dual_path_copies,
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the sender is told, and what the outbox must send once the transaction commits."""

    event_id: int
    alarm_id: int | None
    duplicate: bool
    due_actions: tuple[DueAction, ...] = field(default=())
    opened: tuple[str, str] | None = None  # (family, priority) when this event opened the alarm

    def as_json(self) -> dict[str, Any]:
        """The intake answer body."""
        return {"alarm_id": self.alarm_id, "event_id": self.event_id, "duplicate": self.duplicate}


def route(event: Event, sites: Sites) -> Site | None:
    """The site that claims this event through its source, or None (unrouted)."""
    if event.source_kind == "alta":
        return sites.site_for_alta_zone(event.source_key, event.account)
    return sites.site_for_account(event.source_key, event.account)


def record_event(session: Session, event: Event, *, sites: Sites, rules: IntakeRules) -> Receipt:
    """Record one event and everything it implies; the caller's transaction makes it atomic."""
    dialect = session.get_bind().dialect.name
    site = route(event, sites)
    _serialise_per_account(session, event, site, dialect)
    key = event.dedupe_key()
    window = timedelta(seconds=rules.dedupe_window_s)
    skew_s = (event.received_at - event.occurred_at).total_seconds() if event.occurred_at else None
    # A routed event keeps its account as the site lists it (the body keeps the sender's spelling):
    # the early restores attach_event looks for are found however each signal spelled it.
    account = (
        sites.as_listed(site, event.account, alta=event.source_kind == "alta") if site else event.account
    )
    # The unique dedupe key, and the window of a content key, answer "seen before?" in the insert
    # itself: no lookup on the common path.
    event_id = _insert_event(session, dialect, event, key, site, skew_s, account, window)
    row: Any = None
    if event_id is None:  # a retried delivery (or a concurrent writer, without the advisory lock)
        row = session.execute(_FIND_EVENT, {"key": key.unique}).first()
        if _another_accounts_id(event, row, account):
            # The sender's id names another account's event (panels behind one source number their
            # events each): this one is new, recognised from now on by its id and its account.
            key = event.dedupe_key(per_account=True)
            event_id = _insert_event(session, dialect, event, key, site, skew_s, account, window)
            row = session.execute(_FIND_EVENT, {"key": key.unique}).first() if event_id is None else None
    if event_id is None:
        if row is None:  # not the same key: the same content within the window
            row = session.execute(_FIND_RECENT, _window(key, event, window)).one()
        # A delivery sent again is the account heard from now: a panel posting the same id-less
        # heartbeat every minute is recorded once per dedupe window, yet its link is alive.
        _note_contact(session, event, sites, row.id, again=True)
        return Receipt(row.id, row.alarm_id, duplicate=True)

    cls = event.classify()
    recorder = _Recorder(session, event, event_id, site, cls, rules, account, sites)
    alarm, due = recorder.apply()
    if alarm is not None:
        recorder.attach_event(alarm)
        if skew_s is not None and abs(skew_s) > rules.clock_skew_tolerance.total_seconds():
            recorder.note(
                alarm.id,
                "event.clock_skew",
                f"sender clock differs from ours by {skew_s:+.0f}s",
                skew_s=skew_s,
            )
        if event.unusable_time is not None:
            recorder.note(
                alarm.id,
                "event.sender_time_dropped",
                f"the sender's time {event.unusable_time!r} is not a usable time: the receive time stands",
                sender_time=event.unusable_time,
            )
    recorder.write_notes()
    _note_contact(session, event, sites, event_id, again=False)
    return Receipt(
        event_id,
        alarm.id if alarm else None,
        duplicate=False,
        due_actions=tuple(due),
        opened=(alarm.family, alarm.priority) if alarm is not None and recorder.opened else None,
    )


def _note_contact(session: Session, event: Event, sites: Sites, event_id: int, *, again: bool) -> None:
    """Supervision: the account was heard from (``again``: a delivery already recorded, sent anew).

    Decided from the in-memory Sites, so an unsupervised account costs no round trip; the tick's own
    trouble event is the bridge speaking, not the account, and is no contact.
    """
    supervised = sites.supervision_for(event.source_key, event.account)
    if supervised is None or contact.TROUBLE_DETAIL in event.details:
        return
    what = f"event {event.code}" if event.code else "an event"
    contact.record_contact(
        session,
        supervised,
        at=event.received_at,
        what=f"{what} (sent again)" if again else what,
        link_frame=supervised.dc09,
        # A test sent again is a test sent now: the panel's test timer and its path work.
        test=event.code in contact.AUTOMATIC_TEST_CODES,
        event_id=event_id,
    )


def _another_accounts_id(event: Event, found: Any, account: str) -> bool:
    """Whether the event its id found (``found``) is another account's: not this event's retry."""
    return (
        found is not None
        and event.sender_event_id is not None
        and found.account is not None
        and normalise(found.account) != normalise(account)
    )


@dataclass(slots=True)
class _AlarmRef:
    """The alarm an event opened or joined, as far as intake needs it (no ORM object on this path)."""

    id: int
    family: str
    priority: str


def _serialise_per_account(session: Session, event: Event, site: Site | None, dialect: str) -> None:
    """One writer at a time per account on PostgreSQL: grouping, cancels and dedupe stay exact.

    SQLite needs nothing: every ledger transaction there starts with BEGIN IMMEDIATE.
    """
    if dialect != "postgresql":
        return
    lock_id = account_lock_id(event.source_key, event.account, site.key if site else None)
    session.execute(_ADVISORY_LOCK, {"id": lock_id})


def account_lock_id(source_key: str, account: str, site_key: str | None = None) -> int:
    """The PostgreSQL advisory lock that serialises one account's signals (a bigint from its key).

    A routed signal takes its site's lock for the account, whichever of the site's sources brought
    it: grouping, cancels and restores find an open alarm by site and account, and a panel that
    reports over two paths (a DC-09 link and a gateway posting over HTTP) sends the same alarm through
    two sources at once. Locked per source, both would open an alarm and dispatch twice. An unrouted
    signal's alarm is found by source and account, so that is its lock. The account is compared as
    routing compares it (``site_tables.normalise``: any case, no surrounding spaces).
    """
    place = source_key if site_key is None else f"site:{site_key}"  # a source key has no ":"
    digest = hashlib.sha256(f"{place}\x00{normalise(account)}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _insert_event(
    session: Session,
    dialect: str,
    event: Event,
    key: DedupeKey,
    site: Site | None,
    skew_s: float | None,
    account: str | None,
    window: timedelta,
) -> int | None:
    values: dict[str, Any] = {
        "dedupe_key": key.unique,
        "content_key": key.content,
        "source": event.source_key,
        "sender_event_id": event.sender_event_id,
        "received_at": event.received_at,
        "occurred_at": event.occurred_at,
        "clock_skew_s": skew_s,
        "account": account,
        "zone": event.zone,
        "code": event.code,
        "site_key": site.key if site else None,
        "payload": event.payload,
    }
    if key.content is not None:  # no id, no time of its own: not if recorded within the window
        statement = _INSERT_EVENT_UNLESS_RECENT["postgresql" if dialect == "postgresql" else "sqlite"]
        values.update(_window(key, event, window))
    else:
        statement = _INSERT_EVENT["postgresql" if dialect == "postgresql" else "sqlite"]
    return session.execute(statement, values).scalar_one_or_none()


def _window(key: DedupeKey, event: Event, window: timedelta) -> dict[str, Any]:
    """The parameters of the window a content key is looked for in."""
    return {"content": key.content, "since": event.received_at - window, "until": event.received_at + window}


class _Recorder:
    """The rules for one new event, applied inside the intake transaction."""

    def __init__(
        self,
        session: Session,
        event: Event,
        event_id: int,
        site: Site | None,
        cls: Classification,
        rules: IntakeRules,
        account: str,
        sites: Sites,
    ) -> None:
        self.session = session
        self.sites = sites
        self.event = event
        self.account = account  # as the site lists it (Sites.as_listed): the alarm's account
        self.event_id = event_id
        self.site = site
        self.opened = False
        self.cls = cls
        self.rules = rules
        self.now = event.received_at
        self.notes: list[dict[str, Any]] = []  # written in one statement by write_notes()

    def apply(self) -> tuple[Alarm | _AlarmRef | None, list[DueAction]]:
        kind = self.cls.kind
        if self.site is None or kind in OPENING_KINDS:
            return self._open_or_join()
        if self.event.code and sia.is_cancel(self.event.code):
            return self._cancel()
        if kind in RESTORE_KINDS:
            return self._restore(), []
        return None, []  # openings, closings, bypasses, tests, status: recorded as events only

    # -- alarms --------------------------------------------------------------------------------

    def _same_place(self) -> list[Any]:
        """Conditions selecting alarms of this site (or, unrouted, this source) and account."""
        conditions: list[Any] = [Alarm.account == self.account]
        if self.site is not None:
            conditions.append(Alarm.site_key == self.site.key)
        else:
            conditions += [Alarm.site_key.is_(None), Alarm.source_key == self.event.source_key]
        return conditions

    def _zone_is(self, zone: str | None) -> Any:
        return same_zone(Alarm.zone, zone)

    def _zone_params(self) -> dict[str, str | None]:
        if self.event.zone is None:
            return dict.fromkeys(_ZONE_PARAMS)
        return dict(zone_spellings(self.event.zone))

    def _open_or_join(self) -> tuple[_AlarmRef, list[DueAction]]:
        routed, zoned = self.site is not None, self.event.zone is not None
        joined = self.session.execute(
            _join_statement(
                routed,
                zoned,
                self.cls.priority,
                _trouble_codes(self.cls.family, self.cls.priority) if self.cls.kind in ALARM_KINDS else (),
            ),
            {
                "p_account": self.account,
                "p_site_key": self.site.key if self.site is not None else None,
                "p_source_key": self.event.source_key,
                **self._zone_params(),
                "p_family": self.cls.family,
                "p_since": self.now - self.rules.grouping_window,
                "p_now": self.now,
            },
        ).first()
        if joined is not None:
            alarm = _AlarmRef(joined.id, joined.family, joined.priority)
            self.note(alarm.id, "alarm.repeated", f"{self._what()} again ({joined.event_count} events)")
            if joined.restored_at is not None and self._trips_again(joined.code, joined.id):
                self._withdraw_restore(alarm.id)
            if not self.cls.known:
                self._raise_another_unknown(alarm.id)
            return alarm, []
        copy = self._copy_through_another_path() if self.rules.path_copies else None
        if copy is not None:
            return copy, []
        return self._open()

    def _copy_through_another_path(self) -> _AlarmRef | None:
        """The alarm this event already reached through another of the site's sources, if it did.

        A dual-path panel sends each signal through both paths, and one may be late by minutes: by
        then the alarm may be over (the user's cancel, an operator's End) or quiet for longer than the
        grouping window, and the late copy would open an alarm of its own and dispatch again. A copy
        says the same (code, zone) at the same instant by the panel's clock: an event of the same
        account, code and zone, stamped at exactly the same time, recorded through another source of
        the site within the dedupe window, is this signal. A new trip has a time of its own, so it
        opens its alarm as ever; an event without a time of its sender's, or stamped on a whole
        minute, is never taken for a copy. Looked for only when the event would open an alarm, at a
        site another panel path (a source that is not Alta) reports to.
        """
        event, site, stamp, other_paths = self.event, self.site, self._copy_stamp(), self._other_paths()
        if site is None or stamp is None or event.code is None or not other_paths:
            return None
        found = self.session.execute(
            select(ALARMS.c.id, ALARMS.c.family, ALARMS.c.priority, ALARMS.c.state, EVENTS.c.source)
            .join(EVENTS, EVENTS.c.alarm_id == ALARMS.c.id)
            .where(
                ALARMS.c.site_key == site.key,
                ALARMS.c.opened_at >= self.now - timedelta(seconds=self.rules.dedupe_window_s),
                ALARMS.c.account == self.account,
                EVENTS.c.code == event.code,
                EVENTS.c.occurred_at == stamp,
                EVENTS.c.source.in_(other_paths),
                same_zone(EVENTS.c.zone, event.zone),
                ~select(OWN.c.id)
                .where(
                    OWN.c.alarm_id == ALARMS.c.id,
                    OWN.c.code == event.code,
                    OWN.c.occurred_at == stamp,
                    OWN.c.source == event.source_key,
                    OWN.c.id != self.event_id,
                )
                .exists(),
                # This path's clock is not the other's: it brought this code to the alarm at a
                # stamp no other path's event of the alarm carries (a backup path whose clock runs
                # behind stamps a new trip like the first path's old one: never a copy).
                ~select(OWN.c.id)
                .where(
                    OWN.c.alarm_id == ALARMS.c.id,
                    OWN.c.code == event.code,
                    OWN.c.source == event.source_key,
                    OWN.c.id != self.event_id,
                    # Whatever this path brought, before the original too: a slow clock's path
                    # may deliver first. (A trip this path alone brought, the other path down a
                    # moment, then makes its true late copy a new alarm: sent twice, never lost.)
                    ~select(THEIRS.c.id)
                    .where(
                        # OWN's alarm, not ALARMS: SQLAlchemy correlates a select with the one
                        # directly around it only, and ALARMS is not in OWN's FROM.
                        THEIRS.c.alarm_id == OWN.c.alarm_id,
                        THEIRS.c.code == event.code,
                        THEIRS.c.source.in_(other_paths),
                        THEIRS.c.occurred_at == OWN.c.occurred_at,
                    )
                    .exists(),
                )
                .exists(),
            )
            .order_by(ALARMS.c.id.desc())
            .limit(1)
        ).first()
        if found is None:
            return None
        self.session.execute(
            update(ALARMS).where(ALARMS.c.id == found.id).values(event_count=ALARMS.c.event_count + 1)
        )
        self.note(
            found.id,
            "alarm.path_copy",
            f"{self._what()} through {event.source_key}: the signal {found.source} brought, sent at the "
            f"same instant; the alarm ({found.state}) keeps its response, nothing is run again",
            source=event.source_key,
            first_source=found.source,
        )
        return _AlarmRef(found.id, found.family, found.priority)

    def _other_paths(self) -> list[str]:
        """The site's other sources that send coded signals (a panel's paths: not Alta's webhooks)."""
        if self.site is None:
            return []
        return [
            key
            for key in self.site.sources
            if key != self.event.source_key
            and (source := self.sites.source(key)) is not None
            and source.kind != "alta"
        ]

    def _a_copy_in(self, alarm_id: int) -> bool:
        """Whether this event is the other path's copy of a signal the alarm already holds: another
        path brought this code at this stamp, and this path has not (when it has, this is a second
        signal its coarse clock stamped alike)."""
        stamp = self._copy_stamp()
        if stamp is None or self.event.code is None or not self._other_paths():
            return False
        return self._stamped_in(alarm_id, stamp, this_source=False) and not self._stamped_in(
            alarm_id, stamp, this_source=True
        )

    def _copy_stamp(self) -> datetime | None:
        """The sender's time a copy of this event through another path would carry, or None when it
        cannot tell a copy: no time of the sender's, or a whole minute (a clock that writes minutes
        only stamps a new trip after a cancel with its first one's time; a real copy stamped on the
        minute is then taken for a new signal, as before copies were looked for)."""
        stamp = self.event.occurred_at
        if stamp is None or (stamp.second == 0 and stamp.microsecond == 0):
            return None
        return stamp

    def _stamped_in(self, alarm_id: int, stamp: datetime, *, this_source: bool) -> bool:
        """Whether the alarm holds an event of this code stamped ``stamp``, through this event's
        source (``this_source``) or through another."""
        source = EVENTS.c.source
        found = self.session.execute(
            select(EVENTS.c.id)
            .where(
                EVENTS.c.alarm_id == alarm_id,
                EVENTS.c.code == self.event.code,
                EVENTS.c.occurred_at == stamp,
                source == self.event.source_key if this_source else source != self.event.source_key,
                EVENTS.c.id != self.event_id,
            )
            .limit(1)
        ).first()
        return found is not None

    def _trips_again(self, alarm_code: str | None, alarm_id: int) -> bool:
        """Whether this event, joining a restored alarm, is its zone in alarm again: a condition the
        alarm's restore clears (a trouble joining a fire alarm is not: its own restore would never
        clear the fire's), not a dual-path copy of a signal the alarm holds, and not the supervision
        tick's own trouble (which withdraws its outage's restore itself, saying which link and why;
        contact.TROUBLE_DETAIL marks the bridge speaking)."""
        code = self.event.code
        if code is None or alarm_code is None or contact.TROUBLE_DETAIL in self.event.details:
            return False
        if sia.lookup(alarm_code).kind != self.cls.kind:  # an alarm's trouble, or a trouble's alarm
            return False
        if not set(sia.restore_codes_for(code)) & set(sia.restore_codes_for(alarm_code)):
            return False
        return not self._a_copy_in(alarm_id)

    def _withdraw_restore(self, alarm_id: int) -> None:
        """The zone reported normal, then in alarm again (a detector that trips again, a door opened
        again): the alarm is live on it, and a person must not read "restored" beside it. Its next
        restore restores it again. (A dual-path panel's copy of the first alarm arriving after the
        restore withdraws nothing: ``_trips_again``.)"""
        self.session.execute(update(ALARMS).where(ALARMS.c.id == alarm_id).values(restored_at=None))
        self.note(
            alarm_id,
            "alarm.restore_withdrawn",
            f"{self._what()} after the zone's restore: the zone is in alarm again, no longer restored",
        )

    def _raise_another_unknown(self, alarm_id: int) -> None:
        """Every unknown code shares the family "unknown", so a different one joins an open unknown
        alarm; the bridge knows no more about it than about the first, so a person reads it too (an
        acknowledged alarm comes back to the list). The same code again is only a repeat."""
        seen = self.session.execute(
            select(EventRow.id)
            .where(EventRow.alarm_id == alarm_id, EventRow.code == self.event.code)
            .limit(1)
        ).first()
        if seen is not None:
            return
        text = f" with text {self.event.message!r}" if self.event.message else ""
        reason = (
            f"unknown event code {self.event.code!r}{text} joined the alarm: nothing is dispatched on a guess"
        )
        alarm = self.session.execute(
            select(Alarm).where(Alarm.id == alarm_id).execution_options(populate_existing=True)
        ).scalar_one()
        alarm.flag_for_person(reason, now=self.now)
        self.note(alarm_id, "alarm.needs_person", reason)

    def _open(self) -> tuple[_AlarmRef, list[DueAction]]:
        reasons = []
        if self.site is None:
            reasons.append(
                f"unrouted: no site claims {self.event.account!r} through source {self.event.source_key!r}"
            )
        plan = self.site.plan if self.site else UNROUTED_PLAN
        steps: Sequence[Step] = plan.steps_for(self.cls.family, self.cls.kind)
        if not self.cls.known:
            # The bridge cannot know what the code means: a person reads it, raw, at the top of the queue.
            text = f" with text {self.event.message!r}" if self.event.message else ""
            runs = (
                f'plan {plan.key!r} runs its "unknown" list' if steps else "nothing is dispatched on a guess"
            )
            reasons.append(f"unknown event code {self.event.code!r}{text}: {runs}")
        elif not steps and self.cls.kind in ALARM_KINDS and self.site is not None:
            reasons.append(f"plan {plan.key!r} has no steps for a {self.cls.family} alarm")
        elif self.cls.kind in ALARM_KINDS and self.site is not None and self.cls.priority in _ANSWERED:
            # Steps that send nobody (the CAD's record, Alta's video), or that act on another source's
            # alert and are skipped (Alta's, for a panel's signal): nobody is on the way.
            applied = [step.kind for step in steps if self._applies(step)]
            if not any(kind in RESPONDER_STEPS for kind in applied):
                what = ", ".join(applied) if applied else "none applies to this signal"
                reasons.append(f"plan {plan.key!r} sends no responder for a {self.cls.family} alarm ({what})")
        alarm_id = self.session.execute(
            _INSERT_ALARM,
            {
                "site_key": self.site.key if self.site else None,
                "source_key": self.event.source_key,
                "account": self.account,
                "zone": self.event.zone,
                "code": self.event.code,
                "description": self.cls.description,
                "family": self.cls.family,
                "priority": self.cls.priority,
                "state": AlarmState.NEEDS_PERSON.value if reasons else AlarmState.OPEN.value,
                "needs_person_reason": "; ".join(reasons)[:2000] or None,
                "event_count": 1,
                "opened_at": self.now,
                "last_event_at": self.now,
                "refs": {},
            },
        ).scalar_one()
        alarm = _AlarmRef(alarm_id, self.cls.family, self.cls.priority)
        self.opened = True
        where = f"site {self.site.key}" if self.site else "no site (unrouted)"
        self.note(
            alarm.id,
            "alarm.opened",
            f"{self._what()} at {where}",
            family=alarm.family,
            priority=alarm.priority,
        )
        for reason in reasons:
            self.note(alarm.id, "alarm.needs_person", reason)
        due = self._plan(alarm, steps)
        return alarm, due

    def _applies(self, step: Step) -> bool:
        """False for a step that acts on the alert a signal of another source came with."""
        vendor = vendor_of(step.kind)
        return vendor is None or vendor.source_kind in (None, self.event.source_kind)

    def _plan(self, alarm: _AlarmRef, steps: Sequence[Step]) -> list[DueAction]:
        queue = sia.queue_for(self.cls.priority)
        planned: list[tuple[dict[str, Any], str]] = []
        hold_for_911 = self.cls.priority == sia.Priority.LIFE_SAFETY and any(
            s.kind in EMERGENCY_REQUESTS and s.after <= timedelta(0) for s in steps
        )
        for index, step in enumerate(steps):
            vendor = vendor_of(step.kind)
            if vendor is not None and not self._applies(step):
                # The step acts on the alert a signal of that source came with; this alarm has none.
                self.note(
                    alarm.id,
                    "plan.step_skipped",
                    f"{step.kind} skipped: the alarm did not come from {vendor.name}",
                )
                continue
            immediate = step.after <= timedelta(0)
            kind = step.kind
            params: dict[str, Any] = {"step": index, "event_id": self.event_id}
            first = vendor.prerequisites.get(kind) if vendor is not None else None
            if first is not None:
                # E.g. a video belongs to the ongoing alert of its source, which must be found first.
                kind, params = first, {**params, "then": step.kind}
            held = hold_for_911 and immediate and kind not in EMERGENCY_REQUESTS and not acts_on_source(kind)
            row = action_values(
                kind=kind,
                target=kind.split(".", 1)[0],
                queue=queue,
                due_at=self.now + (HOLD_FOR_911 if held else step.after),
                max_attempts=self.rules.max_attempts,
                alarm_id=alarm.id,
                cancellable=step.cancellable,
                params=params,
                enqueued=immediate and not held,
                now=self.now,
                waiting_on=WAITING_FOR_911 if held else None,
            )
            when = "now" if immediate else f"in {step.after.total_seconds():g}s"
            when = "as soon as the 911 request leaves" if held else when
            hold = " (a cancel in time stops it)" if step.cancellable else ""
            planned.append((row, f"{kind} {when}{hold}"))
        if not planned:
            return []
        ids = self.session.execute(_INSERT_ACTIONS, [row for row, _ in planned]).scalars().all()
        due: list[DueAction] = []
        for action_id, (row, message) in zip(ids, planned, strict=True):
            self.note(alarm.id, "action.planned", message, action_id=action_id)
            if row["state"] == ActionState.QUEUED:
                due.append(DueAction(id=action_id, task_name=row["kind"], queue=row["queue"]))
        return due

    def attach_event(self, alarm: Any) -> None:
        """Point the event at its alarm, and adopt restores that arrived before the alarm opened."""
        restores = sia.restore_codes_for(self.event.code or "") if self.opened else ()
        if not restores:
            self.session.execute(_ATTACH_EVENT, {"p_event_id": self.event_id, "p_alarm_id": alarm.id})
            return
        # One statement for both: this event, and any early restore of this zone (usually none).
        rows = self.session.execute(
            _attach_with_restores_statement(self.event.zone is not None),
            {
                "p_event_id": self.event_id,
                "p_alarm_id": alarm.id,
                # A routed alarm's restore may have come through any of its site's sources (a
                # dual-path panel); an unrouted one's only through its own.
                "p_sources": list(self.site.sources) if self.site is not None else [self.event.source_key],
                "p_account": self.account,
                **self._zone_params(),
                "p_codes": list(restores),
                "p_since": self.now - self.rules.grouping_window,
            },
        ).all()
        restored = sorted((r for r in rows if r.early), key=lambda r: r.id)
        if not restored:
            return
        self.session.execute(
            update(ALARMS)
            .where(ALARMS.c.id == alarm.id)
            .values(restored_at=func.coalesce(ALARMS.c.restored_at, restored[0].received_at))
        )
        for restore in restored:
            self.note(
                alarm.id,
                "alarm.zone_restored",
                f"restore {restore.code} had arrived before the alarm; the response goes on",
                restore_event_id=restore.id,
            )

    # -- restores --------------------------------------------------------------------------------

    def _restore(self) -> Alarm | None:
        cleared = sia.conditions_cleared_by(self.event.code or "")
        alarm = self.session.execute(
            select(Alarm)
            .where(
                *self._same_place(),
                self._zone_is(self.event.zone),
                Alarm.code.in_(cleared),
                Alarm.state.in_(ACTIVE_ALARM_STATES),
            )
            .order_by(Alarm.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if alarm is None:
            # Kept unattached unless it is an ended alarm's, matched if its alarm arrives late
            # (attach_event).
            return self._restore_after_end(cleared)
        if self._a_copy_in(alarm.id):
            # The other path's late copy of a restore the alarm holds: the zone may have tripped
            # again since (its restore withdrawn), so the copy restores nothing.
            self.note(
                alarm.id,
                "alarm.path_copy",
                f"{self._what()} through {self.event.source_key}: the restore another path brought, "
                "sent at the same instant; the zone's state stands",
                source=self.event.source_key,
            )
            return alarm
        if alarm.restored_at is None:
            alarm.restored_at = self.now
        self.note(
            alarm.id, "alarm.zone_restored", f"{self._what()}: the zone is normal again; the response goes on"
        )
        return alarm

    def _restore_after_end(self, cleared: Sequence[str]) -> Alarm | None:
        """The zone's last alarm ended before its restore came: the restore is that alarm's.

        Left unattached, it would be adopted by the zone's next alarm as a restore that came before
        it: that alarm would read "restored" while live. It belongs to the ended alarm when that
        alarm still waited for its restore, or got it within the grouping window (the same restore
        again, e.g. through a dual-path panel's other path).
        """
        ended = self.session.execute(
            select(Alarm)
            .where(
                *self._same_place(),
                self._zone_is(self.event.zone),
                Alarm.code.in_(cleared),
                Alarm.state == AlarmState.ENDED,
            )
            .order_by(Alarm.id.desc())
            .limit(1)
            .with_for_update()
        ).scalar_one_or_none()
        if ended is None:
            return None
        if ended.restored_at is not None and ended.restored_at < self.now - self.rules.grouping_window:
            return None
        if ended.restored_at is None:
            ended.restored_at = self.now
        self.note(
            ended.id,
            "alarm.zone_restored",
            f"{self._what()} after the alarm ended ({ended.outcome}): the zone is normal again",
        )
        return ended

    # -- cancels ---------------------------------------------------------------------------------

    def _cancel(self) -> tuple[Alarm | None, list[DueAction]]:
        """Act on the account's live alarms of the families this cancel names, whatever their zone.

        A live alarm of a never-held family (a holdup, a panic, a fire...) gets a line saying the
        cancel was received and ignored, whichever families the cancel names: a user's disarm right
        after a duress is something the operator must see on the duress alarm itself.
        """
        assert self.site is not None
        families = sia.families_cancelled_by(self.event.code or "")
        if not families:
            return None, []
        original = self._cancel_through_another_path()
        if original is not None:
            return self._cancel_copy(original), []
        alarms = (
            self.session.execute(
                select(Alarm)
                .where(
                    *self._same_place(),
                    Alarm.state.in_(ACTIVE_ALARM_STATES),
                    Alarm.family.in_((*families, *sia.NEVER_HELD_FAMILIES)),
                )
                .order_by(Alarm.id.desc())
                .with_for_update()
            )
            .scalars()
            .all()
        )
        named = [alarm for alarm in alarms if alarm.family in families]
        if not alarms:
            return None, []  # recorded as an event: nothing of its families is live
        due: list[DueAction] = []
        window_start = self.now - self.site.cancel_window
        window_s = self.site.cancel_window.total_seconds()
        for alarm in alarms:
            if sia.never_held_for_cancel(alarm.family):
                self.note(
                    alarm.id,
                    "alarm.cancel_ignored",
                    f"{self._what()}: {alarm.family} is never held; it goes on",
                )
            elif alarm.verification == "valid":
                self._keep_verified(alarm)
            elif alarm.opened_at < window_start:
                self.note(
                    alarm.id,
                    "alarm.cancel_too_late",
                    f"{self._what()} came after the {window_s:g}s cancel window; the response goes on",
                )
            elif (refused := self._outside_window_by_sender(alarm, window_s)) is not None:
                self.note(alarm.id, *refused)
            elif alarm.panel_cancelled_at is None:
                due += self._stand_down(alarm)
        return (named[0] if named else None), due

    def _cancel_through_another_path(self) -> Any:
        """The cancel this one copies, if another of the site's panel paths brought it already: the
        same code and zone at the same sender instant (a whole minute too), within the dedupe window,
        attached to an alarm of the account live now or ended within the window (the alarm it
        stood down), or left unattached (nothing was live). None otherwise.

        A copy acts on nothing: its original stood down what was live when it came. Judged anew, a
        late copy of the user's disarm would stand down the alarm that opened since (another area
        still armed), as its receive time falls in that alarm's cancel window and another path's
        clock is never compared with the alarm's. Taken for a copy wrongly (two clocks stamping two
        cancels alike), a real cancel is ignored and the response goes on: never an alarm lost.
        """
        # Any stamp of the sender's, a whole minute too: taken for a copy wrongly, a cancel is
        # ignored (the tolerable direction), unlike an opening (``_copy_stamp``).
        stamp, other_paths, site = self.event.occurred_at, self._other_paths(), self.site
        if stamp is None or not other_paths or site is None:
            return None
        since = self.now - timedelta(seconds=self.rules.dedupe_window_s)
        said = [
            EVENTS.c.code == self.event.code,
            EVENTS.c.occurred_at == stamp,
            EVENTS.c.source.in_(other_paths),
            EVENTS.c.received_at >= since,
            same_zone(EVENTS.c.zone, self.event.zone),
        ]
        # The site through coalesce(): SQLite, never ANALYZEd, would otherwise walk the site's whole
        # history by ix_alarms_site_opened_at instead of the account's live alarms.
        place = (func.coalesce(ALARMS.c.site_key, "") == site.key, ALARMS.c.account == self.account)
        alarms = union_all(  # each through its index: the account's live alarms, those just ended
            select(ALARMS.c.id).where(*place, ALARMS.c.state.in_(_ACTIVE)),
            select(ALARMS.c.id).where(
                *place, ALARMS.c.state == AlarmState.ENDED.value, ALARMS.c.ended_at >= since
            ),
        )
        attached = select(EVENTS.c.alarm_id, EVENTS.c.source).where(EVENTS.c.alarm_id.in_(alarms), *said)
        unattached = select(EVENTS.c.alarm_id, EVENTS.c.source).where(
            EVENTS.c.alarm_id.is_(None), EVENTS.c.account == self.account, *said
        )
        return self.session.execute(union_all(attached, unattached).limit(1)).first()

    def _cancel_copy(self, original: Any) -> Alarm | None:
        """Record a cancel's copy where its original is (its alarm, or unattached), acting on nothing."""
        if original.alarm_id is None:
            return None
        alarm = self.session.get_one(Alarm, original.alarm_id)
        self.note(
            alarm.id,
            "alarm.path_copy",
            f"{self._what()} through {self.event.source_key}: the cancel {original.source} brought, "
            "sent at the same instant; it stands nothing down again",
            source=self.event.source_key,
            first_source=original.source,
        )
        return alarm

    def _outside_window_by_sender(self, alarm: Alarm, window_s: float) -> tuple[str, str] | None:
        """Why the cancel does not apply by the sender's own times, or None when it may.

        Receive times alone let a stale cancel stand a burglary down: a buffered burst (the alarm
        and, two minutes later by the panel's clock, the user's opening, delivered in one second) or
        an opening from before the alarm delivered after it. Only a time the sender gave counts
        (``occurred_at`` is None otherwise, never our receive time), and only one sender's clock is
        compared with itself: a dual-path site's two communicators may disagree by more than the
        window, which would keep a response going against a cancel in time.
        """
        cancel_at = self.event.occurred_at
        if cancel_at is None:
            return None
        opening = self.session.execute(
            select(EventRow.occurred_at, EventRow.source)
            .where(EventRow.alarm_id == alarm.id, EventRow.code.is_not_distinct_from(alarm.code))
            .order_by(EventRow.id)
            .limit(1)
        ).first()
        if opening is None or opening.occurred_at is None or opening.source != self.event.source_key:
            return None  # no time of the sender's, or another sender's clock (a dual-path site's other path)
        opened_at = opening.occurred_at
        if cancel_at < opened_at:
            return (
                "alarm.cancel_before_alarm",
                f"{self._what()} happened {(opened_at - cancel_at).total_seconds():g}s before the "
                "alarm by the sender's clock: it does not cancel it; the response goes on",
            )
        if cancel_at - opened_at > timedelta(seconds=window_s):
            return (
                "alarm.cancel_too_late",
                f"{self._what()} happened {(cancel_at - opened_at).total_seconds():g}s after the "
                f"alarm by the sender's clock, after the {window_s:g}s cancel window; the response "
                "goes on",
            )
        return None

    def _keep_verified(self, alarm: Alarm) -> None:
        """An operator judged the alarm real: a panel's cancel never overrides that verdict.

        A disarm after a verified alarm may be coerced (the intruder makes the user open), so nothing
        is stood down, in the window or not; the alarm goes in front of a person, who decides.
        """
        reason = (
            f"{self._what()} came after an operator verified the alarm valid: nothing was stood "
            "down; check with the site whether the opening is genuine"
        )
        self.note(
            alarm.id,
            "alarm.cancel_after_verified",
            f"{self._what()}: the opening came after an operator judged the alarm real; nothing was "
            "stood down",
        )
        alarm.flag_for_person(reason, now=self.now)
        self.note(alarm.id, "alarm.needs_person", reason)

    def _stand_down(self, alarm: Alarm) -> list[DueAction]:
        """A cancel in time: the response stands down as an operator's End with outcome cancelled.

        Every step not started stops, and every responder that can be stood down by API is (a 911
        request cancelled, a call still held restored). The alarm then ends as cancelled, unless a
        responder only a person can recall (``vendors.BY_HAND``) is or may be engaged: then it waits
        for a person, whose acknowledge or End ends it as cancelled.
        """
        code = self.event.code or ""
        self.write_notes()  # the helpers below write their own lines: keep the timeline in order
        steps = self.session.execute(select(Action).where(Action.alarm_id == alarm.id)).scalars().all()
        # A create that tried, runs or ran may be engaged before its ref is recorded (a phone call held
        # in the vendor's own delay): its by-API stand-down runs all the same.
        maybe_engaged = {
            a.kind
            for a in steps
            for entry in BY_API
            if a.kind == entry.maybe_engaged_by
            and (
                a.state in (ActionState.RUNNING, ActionState.SUCCEEDED) or a.attempts > 0 or a.outcome_unknown
            )
        }
        # A by-hand create running, or one that tried and lost its answer, may have dispatched a guard.
        by_hand_in_flight = sorted(
            {
                vendor
                for a in steps
                for kind, vendor in BY_HAND_CREATES.items()
                if a.kind == kind
                and (
                    a.state == ActionState.RUNNING or (a.state != ActionState.SUCCEEDED and a.outcome_unknown)
                )
            }
        )
        refs = alarm.refs or {}
        # A create stood down by API whose answer was lost (a 911 request, a call) may be live with no
        # id to stand it down by: only a person can check it there, so the alarm waits for one too.
        unknown_by_api = any(
            a.outcome_unknown
            and a.state != ActionState.SUCCEEDED
            and (owner := vendor_of(a.kind)) is not None
            and a.kind in owner.plan_steps  # a create, not a follow-up or a stand-down
            and isinstance(owner.stand_down, ByApi)
            and not refs.get(owner.stand_down.ref)
            for a in steps
        )
        waits_for_person = engaged_by_hand(refs) or bool(by_hand_in_flight) or unknown_by_api
        if not waits_for_person:
            note(
                self.session,
                alarm.id,
                self.now,
                "alarm.cancelled_by_user",
                f"{self._what()} within the cancel window: the response stands down",
            )
            # The operator's End does the stand-down of what the refs show; what is left below is a
            # call that may be held without an alert id yet.
            due = operations.end(
                self.session, alarm.id, Outcome.CANCELLED, now=self.now, max_attempts=self.rules.max_attempts
            )
            refs = {}
        else:
            stopped, uncertain = operations.stop_not_started(
                self.session, alarm, now=self.now, why=f"cancelled by {code} within the cancel window"
            )
            alarm.panel_cancelled_at = self.now
            note(
                self.session,
                alarm.id,
                self.now,
                "alarm.cancelled_by_user",
                f"{self._what()} within the cancel window: {stopped} step(s) not started were stopped; "
                "a responder must be recalled by a person",
            )
            operations.flag_uncertain(self.session, alarm, uncertain, now=self.now, when="was cancelled")
            due = []
        due += stand_down(
            self.session,
            alarm,
            refs,
            why="cancelled at the panel",
            now=self.now,
            max_attempts=self.rules.max_attempts,
            raise_to_person=True,
            maybe_engaged=maybe_engaged,
            cancelled_by=code,
        )
        for vendor in by_hand_in_flight:
            reason = (
                f"cancelled at the panel — a {vendor} dispatch was being created: check {vendor} and "
                "cancel it there"
            )
            alarm.flag_for_person(reason)
            note(self.session, alarm.id, self.now, f"{vendor.lower()}.cancel_by_hand", reason)
        self.session.flush()
        return due

    # -- timeline --------------------------------------------------------------------------------

    def _what(self) -> str:
        code = f"{self.event.code} " if self.event.code else ""
        zone = f" zone {self.event.zone}" if self.event.zone else ""
        return f"{code}{self.cls.description}{zone}".strip()

    def note(self, alarm_id: int, kind: str, message: str, **data: Any) -> None:
        self.notes.append(
            {
                "alarm_id": alarm_id,
                "event_id": self.event_id,
                "action_id": data.pop("action_id", None),
                "at": self.now,
                "kind": kind,
                "message": message,
                "data": data,
            }
        )

    def write_notes(self) -> None:
        """Write the buffered timeline lines, in order, in one statement."""
        if self.notes:
            self.session.execute(_INSERT_TIMELINE, self.notes)
            self.notes = []
