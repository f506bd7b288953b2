"""CallOnAlarm's state: the alerts with their clock-driven lifecycle, and the rate-limit windows.

Everything here is plain Python, separate from the HTTP layer in `sandbox.callonalarm.app`, so that the
lifecycle arithmetic reads in one place: an alert's status and `callsMade` are pure functions of the
simulated time and of the two things that can happen to it later (an acknowledge, a cancel), each
recorded with the time it happened. Nothing runs in the background; the clock moving forward is enough.
"""

import math
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.callonalarm.settings import DELAYED, INSTANT, Account, Contact, Rule

# Seed 001's five trigger statuses.
CALL_IMMEDIATE, CALL_DELAYED = "call_immediate", "call_delayed"
IGNORED, TECHNICAL_ONLY, LOGGED_INACTIVE = "ignored", "technical_only", "logged_inactive"
# Final statuses of a calling procedure (CONTRACTS Part A item 12).
ACKNOWLEDGED, TIMEOUT, FAILED = "acknowledged", "timeout", "failed"
CANCELLED, CANCELLED_DURING_CALLS = "cancelled", "cancelled_during_calls"


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call of the procedure: who, in which round, and how long after calls start it is placed."""

    contact: Contact
    round: int
    offset_s: float


@dataclass(slots=True)
class Alert:
    """One triggered event. `trigger_status` is the answer of the trigger; the rest follows the clock."""

    alert_id: str
    account: Account
    event_code: str
    zone: str | None
    message: str | None
    created_at: float
    trigger_status: str
    delay_s: int
    technical_email_sent: bool
    calls: tuple[PlannedCall, ...] = ()
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    cancelled_at: float | None = None

    @property
    def requires_calls(self) -> bool:
        """Whether the trigger started a calling procedure."""
        return self.trigger_status in (CALL_IMMEDIATE, CALL_DELAYED)

    @property
    def calls_start_at(self) -> float | None:
        """When the first call is placed (None: no procedure)."""
        return self.created_at + self.delay_s if self.requires_calls else None

    @property
    def timeout_at(self) -> float | None:
        """When the last call of the last round stops ringing unanswered (None: no procedure)."""
        start = self.calls_start_at
        if start is None:
            return None
        last = self.calls[-1]
        return start + last.offset_s + last.contact.ring_s

    def status(self, now: float) -> str:
        """The status at `now` (CONTRACTS Part A item 12)."""
        start, timeout_at = self.calls_start_at, self.timeout_at
        if start is None or timeout_at is None:
            return self.trigger_status
        if self.acknowledged_at is not None:
            return ACKNOWLEDGED
        if self.cancelled_at is not None:
            return CANCELLED if self.cancelled_at < start else CANCELLED_DURING_CALLS
        if now < start:
            return CALL_DELAYED
        if self.account.out_of_credits:
            return FAILED
        return CALL_IMMEDIATE if now < timeout_at else TIMEOUT

    def pending(self, now: float) -> bool:
        """Whether the procedure is still running (delay or calls) at `now`."""
        return self.status(now) in (CALL_DELAYED, CALL_IMMEDIATE)

    def placed_calls(self, now: float) -> list[PlannedCall]:
        """The calls placed by `now`: none before calls start, none after an ack or cancel stopped it."""
        start = self.calls_start_at
        if start is None or self.account.out_of_credits:
            return []
        stopped = min(t for t in (now, self.acknowledged_at, self.cancelled_at) if t is not None)
        return [call for call in self.calls if start + call.offset_s <= stopped]

    def trigger_body(self) -> dict[str, Any]:
        """The 201 answer of `POST /v1/alert/trigger` (exactly the fields of seed 001's table)."""
        return {
            "alertId": self.alert_id,
            "requiresCalls": self.requires_calls,
            "contactsToCall": len(self.account.contacts) if self.requires_calls else 0,
            "language": self.account.language,
            "delaySeconds": self.delay_s,
            "status": self.trigger_status,
            "technicalEmailSent": self.technical_email_sent,
        }

    def status_body(self, now: float) -> dict[str, Any]:
        """The answer of `GET /v1/alert/{id}/status` and of the acknowledge."""
        return {
            "alertId": self.alert_id,
            "accountNumber": self.account.number,
            "eventCode": self.event_code,
            "zone": self.zone,
            "status": self.status(now),
            "createdAt": iso_utc(self.created_at),
            "callsStartAt": _iso_or_none(self.calls_start_at),
            "acknowledgedAt": _iso_or_none(self.acknowledged_at),
            "acknowledgedBy": self.acknowledged_by,
            "cancelledAt": _iso_or_none(self.cancelled_at),
            "callsMade": len(self.placed_calls(now)),
        }

    def sandbox_view(self, now: float) -> dict[str, Any]:
        """Everything a test or the dashboard demo may want: the status body, the trigger and the calls."""
        start = self.calls_start_at
        return {
            **self.status_body(now),
            "message": self.message,
            "trigger": self.trigger_body(),
            "timeoutAt": _iso_or_none(self.timeout_at),
            "calls": [
                {
                    "round": call.round,
                    "contact": call.contact.name,
                    "phoneNumber": call.contact.phone,
                    "language": call.contact.language,
                    "placedAt": iso_utc(start + call.offset_s) if start is not None else None,
                }
                for call in self.placed_calls(now)
            ],
        }


class AlertError(Exception):
    """An acknowledge the alert's state refuses; `title` is the vendor's error title."""

    def __init__(self, title: str, message: str) -> None:
        super().__init__(message)
        self.title = title
        self.message = message


class AlertStore:
    """Every alert triggered since the last reset, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alerts: dict[str, Alert] = {}

    def reset(self) -> None:
        """Forget every alert."""
        with self._lock:
            self._alerts = {}

    def trigger(
        self, account: Account, code: str, rule: Rule, zone: str | None, message: str | None, now: float
    ) -> Alert:
        """Apply `rule` to a new event: cancel the connection's pending alerts if Cancel is ticked, then
        record the new alert with its trigger status."""
        with self._lock:
            if not account.active:
                status, delay_s, technical_sent = LOGGED_INACTIVE, 0, False
            else:
                if rule.cancel:
                    for alert in self._alerts.values():
                        if alert.account.number == account.number and alert.pending(now):
                            alert.cancelled_at = now
                technical_sent = rule.technical and account.technical_email is not None
                status, delay_s = _trigger_status(rule), rule.delay_s if rule.action == DELAYED else 0
            alert = Alert(
                alert_id=f"alt_{uuid.uuid4().hex[:20]}",
                account=account,
                event_code=code,
                zone=zone,
                message=message,
                created_at=now,
                trigger_status=status,
                delay_s=delay_s,
                technical_email_sent=technical_sent,
                calls=_plan_calls(account) if status in (CALL_IMMEDIATE, CALL_DELAYED) else (),
            )
            self._alerts[alert.alert_id] = alert
            return alert

    def get(self, alert_id: str) -> Alert | None:
        """The alert with that id, if any."""
        with self._lock:
            return self._alerts.get(alert_id)

    def acknowledge(self, alert_id: str, phone: str, now: float) -> Alert:
        """Stop a running procedure as acknowledged by `phone`.

        Raises:
            AlertError: the alert was acknowledged already, or has ended (or never called anyone).
        """
        with self._lock:
            alert = self._alerts[alert_id]
            status = alert.status(now)
            if status == ACKNOWLEDGED:
                raise AlertError(
                    "Alert Already Acknowledged",
                    f"Alert {alert_id} was already acknowledged by {alert.acknowledged_by} "
                    f"at {_iso_or_none(alert.acknowledged_at)}",
                )
            if not alert.pending(now):
                raise AlertError(
                    "Bad Request",
                    f"Alert {alert_id} has ended with status '{status}' and cannot be acknowledged",
                )
            alert.acknowledged_at, alert.acknowledged_by = now, phone
            return alert

    def alerts(self) -> list[Alert]:
        """Every alert, oldest first."""
        with self._lock:
            return list(self._alerts.values())


@dataclass(frozen=True, slots=True)
class RateState:
    """A bucket's budget after (or without) a request: the `X-RateLimit-*` values and the verdict."""

    limit: int
    remaining: int
    reset_at: int
    allowed: bool = True
    retry_after_s: int = 0

    def headers(self) -> dict[str, str]:
        """`X-RateLimit-Limit/Remaining/Reset`, plus `Retry-After` on a refusal."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


@dataclass(slots=True)
class RateLimiter:
    """A sliding-window log per bucket: at most `limit` admitted requests in any `window_s` seconds."""

    limit: int
    window_s: float
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _windows: dict[str, deque[float]] = field(default_factory=dict)

    def admit(self, bucket: str, now: float) -> RateState:
        """Count a request if the bucket has budget left; a refused request is not counted."""
        with self._lock:
            window = self._window(bucket, now)
            if len(window) >= self.limit:
                return self._state(window, now, allowed=False)
            window.append(now)
            return self._state(window, now)

    def peek(self, bucket: str, now: float) -> RateState:
        """The bucket's budget without counting anything."""
        with self._lock:
            return self._state(self._window(bucket, now), now)

    def usage(self, now: float) -> dict[str, RateState]:
        """Every bucket that has requests in its window."""
        with self._lock:
            return {
                bucket: self._state(window, now)
                for bucket in list(self._windows)
                if (window := self._window(bucket, now))
            }

    def reset(self) -> None:
        """Empty every window."""
        with self._lock:
            self._windows = {}

    def _window(self, bucket: str, now: float) -> deque[float]:
        window = self._windows.setdefault(bucket, deque())
        while window and window[0] <= now - self.window_s:
            window.popleft()
        return window

    def _state(self, window: deque[float], now: float, *, allowed: bool = True) -> RateState:
        # Reset: when the oldest counted request leaves the window, i.e. when Remaining next goes up.
        frees_at = window[0] + self.window_s if window else now
        return RateState(
            limit=self.limit,
            remaining=max(0, self.limit - len(window)),
            reset_at=math.ceil(frees_at),
            allowed=allowed,
            retry_after_s=max(1, math.ceil(frees_at - now)),
        )


def iso_utc(epoch: float) -> str:
    """An epoch time as ISO 8601 UTC with milliseconds and `Z` (JavaScript's `toISOString()`)."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_or_none(epoch: float | None) -> str | None:
    return None if epoch is None else iso_utc(epoch)


def _trigger_status(rule: Rule) -> str:
    if rule.action == INSTANT:
        return CALL_IMMEDIATE
    if rule.action == DELAYED:
        return CALL_DELAYED
    return TECHNICAL_ONLY if rule.technical else IGNORED


def _plan_calls(account: Account) -> tuple[PlannedCall, ...]:
    """Each contact in order, round after round; a call is placed when the previous one stops ringing."""
    calls: list[PlannedCall] = []
    offset = 0.0
    for round_number in range(1, account.rounds + 1):
        for contact in account.contacts:
            calls.append(PlannedCall(contact=contact, round=round_number, offset_s=offset))
            offset += contact.ring_s
    return tuple(calls)
