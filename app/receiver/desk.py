"""What each DC-09 frame is answered, and the ledger work that must come before an ACK.

The intake rule holds at this door as at the web's: an ACK means committed. A frame that passes its
checks (``app.receiver.frames``) is recorded with ``app.domain.intake.record_event``, in one
transaction for all the events it reports (same dedupe, routing, grouping and plans as an HTTP panel
event); its due steps are handed to the workers after the commit; only then is it acknowledged. A
NULL (link test) frame records the account's link contact for supervision the same way. A ledger
that cannot commit gets a NAK, so the panel sends the frame again; a retransmission of a frame that
was committed (its ACK lost) is recognised by its dedupe key, re-stamped or not
(``reports.Retransmissions``), and acknowledged without a second event. An unknown event code is
recorded for a person and acknowledged like any other: never a DUH. A DUH answers only a frame
received correctly whose ID token the receiver does not take (say ``"XYZ-DATA"``): a NAK would have
the panel send it for ever, and a person is told by a warning that names the account and the token.

A sender can make every frame a refusal (junk costs it nothing), so the warnings that refusals and
unsupported frames log are held to a budget per reason (``LogBudget``): a few at once, then about one
a second, each written line saying how many were left out before it. The counters stay exact.

The services are built here without Flask, as the worker builds its own (``Desk.from_settings``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app import telemetry
from app.domain import intake, sia, supervision
from app.domain.actions import DueAction
from app.domain.events import Event
from app.domain.intake import IntakeRules
from app.domain.outbox import Outbox, make_producer
from app.domain.sites import Sites
from app.domain.sites_file import read_sites
from app.ledger.models import utcnow
from app.ledger.session import is_unreachable, make_engine, make_sessionmaker
from app.receiver import frames
from app.receiver.frames import NULL, UNSUPPORTED, Accounts, Frame, Reason, Refusal, Unsupported
from app.receiver.reports import Retransmissions, events_of
from config.settings import Settings

log = structlog.get_logger(__name__)

# The ledger threads take the most urgent frame first: fire before a burglary, a burglary before a
# storm of troubles (app.domain.sia.rank, the order the web's gate admits in too).
LINK_RANK = sia.rank(sia.Priority.TECHNICAL)  # a NULL frame: supervision's contact, as urgent as a trouble
LOWEST_RANK = sia.rank(sia.Priority.INFORMATIONAL)
# The refusal warnings of one kind: this many at once, then one every LOG_EVERY_S.
LOG_BURST = 10
LOG_EVERY_S = 1.0


class LogBudget:
    """How many lines of each kind may be logged now: ``burst`` at once, refilled one every ``every_s``.

    Kinds are a bounded set (refusal reasons and a few receiver events), so its memory is bounded
    whatever a sender writes. A line left out is counted, and the next line written says how many.
    """

    def __init__(
        self,
        burst: int = LOG_BURST,
        every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.every_s = every_s
        self.clock = clock
        self._kinds: dict[str, tuple[float, float, int]] = {}  # lines available, as of, left out since

    def take(self, kind: str) -> int | None:
        """The lines left out before this one when it may be logged; None when it may not."""
        now = self.clock()
        available, as_of, left_out = self._kinds.get(kind, (float(self.burst), now, 0))
        available = min(float(self.burst), available + (now - as_of) / self.every_s)
        if available < 1:
            self._kinds[kind] = (available, now, left_out + 1)
            return None
        self._kinds[kind] = (available - 1, now, 0)
        return left_out

    def warning(self, kind: str, event: str, **fields: Any) -> None:
        """``log.warning(event, **fields)`` within ``kind``'s budget, with ``left_out`` when lines were."""
        left_out = self.take(kind)
        if left_out is None:
            return
        if left_out:
            fields["left_out"] = left_out
        log.warning(event, **fields)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one frame: send ``answer`` now, or record ``frame`` first and then answer.

    ``refusal`` is set when the answer is a NAK decided without the ledger; ``response`` names an
    answer sent now (nak, or duh for a frame of an unsupported ID token).
    """

    frame_type: str
    answer: bytes | None = None
    refusal: Refusal | None = None
    response: str = "nak"
    frame: Frame | None = None
    events: tuple[Event, ...] = ()
    rank: int = LOWEST_RANK  # lower first, among frames waiting for a ledger thread
    received_at: datetime | None = None

    @property
    def needs_ledger(self) -> bool:
        """Whether the answer waits for a commit (every frame that passed its checks)."""
        return self.frame is not None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to a frame that went to the ledger: the ACK, or a NAK and why."""

    answer: bytes
    refusal: Reason | None = None


class Desk:
    """Reads frames, records what they report, and says what to answer."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        sites: Sites,
        outbox: Outbox,
        rules: IntakeRules,
        engine: Engine | None = None,
    ) -> None:
        self.sessions = sessions
        self.sites = sites
        self.outbox = outbox
        self.rules = rules
        self.engine = engine
        self.accounts = Accounts(sites)
        self.retransmissions = Retransmissions(timedelta(seconds=rules.dedupe_window_s))
        self.log_budget = LogBudget()
        # A wrong length field is logged within its own budget, like a refusal.
        self._warn_length = functools.partial(self.log_budget.warning, "length_mismatch")

    @classmethod
    def from_settings(cls, settings: Settings) -> Desk:
        """The receiver's services from the settings, as the worker builds its own (no Flask).

        The ledger pool holds a connection per ledger thread; the sites file is read and validated
        here, and a bad one stops the process with one line per problem.
        """
        threads = settings.sia_receiver_concurrency
        pool = {"pool_size": threads, "max_overflow": 2, "pool_timeout": 10}
        # No pre-ping, as at the web's intake: a connection a database restart left stale fails one
        # frame (NAK: the panel sends it again) and the pool is replaced.
        engine = make_engine(
            settings.database_url,
            pre_ping=False,
            **({} if ":memory:" in settings.database_url else pool),
        )
        sessions = make_sessionmaker(engine)
        sites = read_sites(settings.sites_file, settings.environ)
        return cls(
            sessions=sessions,
            sites=sites,
            outbox=Outbox(make_producer(settings), sessions),
            rules=IntakeRules.from_settings(settings),
            engine=engine,
        )

    def close(self) -> None:
        """Release the ledger's connections."""
        if self.engine is not None:
            self.engine.dispose()

    def examine(self, raw: bytes, peer: str = "") -> Verdict | None:
        """Check one frame and decide: a refusal now, or a frame to record. None: an empty line.

        Cheap (no ledger): it runs on the connection loop.
        """
        received_at = utcnow()
        read = frames.read_frame(raw, self.accounts, self._warn_length)
        if read is None:
            return None
        if isinstance(read, Refusal):
            # Another account's data under this account's key is a frame this key does not prove.
            if read.reason in (Reason.DECRYPT_FAILED, Reason.ACCOUNT_MISMATCH):
                telemetry.DC09_DECRYPT_FAILURES.labels(read.source_key or "").inc()
            self.log_budget.warning(
                read.reason.value,
                "receiver.refused",
                reason=read.reason.value,
                frame=read.frame_type,
                account=read.account,
                source=read.source_key,
                peer=peer,
                **({"data_account": read.data_account} if read.data_account is not None else {}),
            )
            return Verdict(read.frame_type, answer=read.answer, refusal=read)
        if isinstance(read, Unsupported):
            # Answered DUH, so the panel stops sending it; a person sees a panel reporting what we
            # cannot process (a protocol the panel is set to that the receiver does not take).
            self.log_budget.warning(
                UNSUPPORTED,
                "receiver.unsupported",
                token=read.token,
                encrypted=read.encrypted,
                account=read.account,
                source=read.source_key,
                peer=peer,
            )
            return Verdict(UNSUPPORTED, answer=read.answer, response="duh")
        if read.message_type == NULL:
            events: tuple[Event, ...] = ()
            rank = LINK_RANK
        else:
            first = self.retransmissions.first_timestamp(read, received_at)
            events = tuple(events_of(read, received_at, first))
            rank = min((sia.rank(e.classify().priority) for e in events), default=LOWEST_RANK)
        return Verdict(read.message_type, frame=read, events=events, rank=rank, received_at=received_at)

    def commit(self, verdict: Verdict) -> Outcome:
        """Record what the frame reports in one transaction, publish after the commit, then ACK.

        Blocking (SQLAlchemy): the server runs it on a ledger thread. Never raises: whatever stops
        the commit is a NAK, so the panel sends the frame again.
        """
        frame = verdict.frame
        assert frame is not None, "only a frame that passed its checks goes to the ledger"
        started = time.perf_counter()
        try:
            due, receipts = self._record(frame, verdict)
        except Exception as exc:  # no commit, no ACK: the panel sends it again, and the listener lives on
            reason = Reason.LEDGER_UNAVAILABLE if is_unreachable(exc) else Reason.INTERNAL_ERROR
            fields = {"frame": frame.message_type, "account": frame.account, "source": frame.source.key}
            if reason == Reason.LEDGER_UNAVAILABLE:
                cause = getattr(exc, "orig", None) or exc
                log.warning("receiver.ledger_unavailable", error_type=type(cause).__name__, **fields)
            else:
                log.exception("receiver.record_failed", error_type=type(exc).__name__, **fields)
            return Outcome(frame.nak(), reason)
        telemetry.LEDGER_WRITES.labels("dc09").observe(time.perf_counter() - started)
        self.outbox.publish(due)
        for event, receipt in zip(verdict.events, receipts, strict=True):
            telemetry.count_recorded(event.source_key, duplicate=receipt.duplicate, opened=receipt.opened)
            log.info(
                "receiver.duplicate" if receipt.duplicate else "receiver.recorded",
                source=event.source_key,
                account=frame.account,
                code=event.code,
                event_id=receipt.event_id,
                alarm_id=receipt.alarm_id,
            )
        return Outcome(frame.ack())

    def _record(self, frame: Frame, verdict: Verdict) -> tuple[list[DueAction], list[intake.Receipt]]:
        due: list[DueAction] = []
        receipts: list[intake.Receipt] = []
        with self.sessions.begin() as session:
            for event in verdict.events:
                receipt = intake.record_event(session, event, sites=self.sites, rules=self.rules)
                receipts.append(receipt)
                due.extend(receipt.due_actions)
            if frame.message_type == NULL:
                at = verdict.received_at if verdict.received_at is not None else utcnow()
                due.extend(
                    supervision.note_link(
                        session, sites=self.sites, source_key=frame.source.key, account=frame.account, at=at
                    )
                )
        return due, receipts
