"""CallOnAlarm public API v1 client: trigger a phone alert, follow its status, acknowledge it (seed
001; CONTRACTS Part A items 10-12, Part B §3).

Auth is a static Bearer API key (``StaticCredential``: no renewal, a 401 is permanent). Every
request, status polls included, first takes a unit of the deployment's shared hourly budget
(budget.py); the vendor's ``X-RateLimit-*`` headers and 429 ``Retry-After`` feed the same
budget (``_answered``, which sees every answer), and the 429 itself is mapped by BaseClient to
``UpstreamUnavailableError(retry_after_s=...)``.

CallOnAlarm has no idempotency key and no way to look an alert up by anything but its id, so a
trigger whose answer was lost cannot be reconciled: the caller decides (vendors/callonalarm/tasks.py
triggers again — a second phone call is safer than none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Self

import redis
import requests
import structlog

from config.settings import Settings
from vendors.callonalarm.budget import HourlyBudget
from vendors.callonalarm.settings import CallOnAlarmSettings
from workers.clients import VendorClient
from workers.clients.base import BaseClient, excerpt, retry_after_s, timeouts
from workers.clients.cache import cache_key
from workers.clients.credentials import StaticCredential
from workers.clients.errors import UpstreamRejectedError


class InvalidEventCodeError(UpstreamRejectedError):
    """CallOnAlarm's 400 "Invalid eventCode": the code is neither SIA (its catalogue) nor one of the
    connection's custom codes (Part A item 10). Nothing was created."""


UPSTREAM = "callonalarm"
log = structlog.get_logger(__name__)

# The status answer's times (CONTRACTS Part A item 12), read by ``status_time``.
STATUS_TIME_FIELDS = ("createdAt", "callsStartAt", "acknowledgedAt", "cancelledAt")
EPOCH_MS_THRESHOLD = 10**12  # an epoch above this is milliseconds (Part A items 5 and 13)
MAX_EPOCH_S = 32503680000  # year 3000: a larger number is not a time
_EPOCH_TEXT = re.compile(r"[+-]?\d+(\.\d*)?")  # an epoch sent as text: digits, maybe a fraction

# Seed 001's trigger statuses that end the procedure at once, and the webhook page's final statuses
# (CONTRACTS Part A item 12). Anything else — call_delayed, call_immediate, a status CallOnAlarm adds
# later — is still running: followed, never taken as an end.
FINAL_STATUSES = frozenset(
    {
        "acknowledged",
        "timeout",
        "failed",
        "cancelled",
        "cancelled_during_calls",
        "ignored",
        "technical_only",
        "logged_inactive",
    }
)
ALREADY_ACKNOWLEDGED = "Alert Already Acknowledged"
INVALID_EVENT_CODE = "Invalid eventCode"


def is_final(status: str) -> bool:
    """True when the procedure of an alert in ``status`` has ended (unknown statuses have not)."""
    return status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Trigger:
    """The answer to ``POST /v1/alert/trigger`` (seed 001 "Response Fields")."""

    alert_id: str
    status: str
    delay_seconds: int
    requires_calls: bool
    contacts_to_call: int
    language: str | None
    technical_email_sent: bool

    @property
    def is_final(self) -> bool:
        """True when no call will follow (ignored, technical_only, logged_inactive)."""
        return is_final(self.status)


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """The answer to ``GET /v1/alert/{id}/status`` (CONTRACTS Part A item 12).

    The ``*_at`` times are aware UTC, or None when absent or unreadable (``status_time``).
    """

    alert_id: str
    status: str
    account_number: str | None
    event_code: str | None
    zone: str | None
    created_at: datetime | None
    calls_start_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cancelled_at: datetime | None
    calls_made: int

    @property
    def is_final(self) -> bool:
        """True when the procedure has ended; a status we do not know is not an end."""
        return is_final(self.status)


@dataclass(frozen=True, slots=True)
class ConnectionTest:
    """The answer to ``GET /v1/connection/test``."""

    valid: bool
    account_numbers: tuple[str, ...]


class CallOnAlarmClient(BaseClient):
    """The CallOnAlarm API for one API key, within the deployment's shared hourly budget."""

    upstream = UPSTREAM
    default_headers = {"Accept": "application/json"}

    def __init__(
        self,
        base_url: str,
        timeout: tuple[float, float],
        *,
        api_key: str,
        budget: HourlyBudget,
        reserve: int = 0,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url, timeout, session, credential=StaticCredential(api_key))
        self.budget = budget
        self.reserve = reserve  # units of the hour only urgent requests may take

    @classmethod
    def from_settings(
        cls, settings: Settings, cache: redis.Redis, *, session: requests.Session | None = None
    ) -> Self:
        """The client for this deployment; ``cache`` is the shared Redis that holds the budget."""
        callonalarm = settings.vendor(CallOnAlarmSettings)
        budget = HourlyBudget.from_redis(
            cache, cache_key(settings, "callonalarm", "budget"), callonalarm.hourly_budget
        )
        return cls(
            callonalarm.base_url,
            timeouts(settings),
            api_key=callonalarm.api_key,
            budget=budget,
            reserve=callonalarm.life_safety_reserve,
            session=session,
        )

    def trigger(
        self,
        account_number: str,
        event_code: str,
        zone: str | None = None,
        message: str | None = None,
        *,
        urgent: bool = True,
    ) -> Trigger:
        """Start the account's procedure for ``event_code`` (seed 001 "Trigger Alert").

        Every trigger creates a new alert; a Cancel-ticked code (restores, cancels, disarms in the usual
        rules) also cancels the account's pending alerts, whatever their zone. ``urgent`` (a
        life-safety alarm, a fallback, a restore) may take the hour's reserved units; others may not.

        Raises:
            BudgetExhaustedError: the hourly budget is spent; nothing was sent.
            UpstreamUnavailableError: not sent, 5xx, or 429 (``retry_after_s`` from ``Retry-After``).
            OutcomeUnknownError: sent but no (readable) answer: the alert may exist.
            InvalidEventCodeError: 400 "Invalid eventCode" (neither SIA nor a custom code).
            UpstreamRejectedError: 400 (missing field), 401 (bad or expired key), 404 (connection not
                found).
        """
        body: dict[str, str] = {"accountNumber": account_number, "eventCode": event_code}
        if zone:
            body["zone"] = zone
        if message:
            body["message"] = message
        response = self._call("POST", "/v1/alert/trigger", urgent=urgent, expected=(400,), json=body)
        if response.status_code == 400:
            title = self._decode(response, _error_title, optional=True)
            error = InvalidEventCodeError if title == INVALID_EVENT_CODE else UpstreamRejectedError
            raise error(UPSTREAM, 400, excerpt(response))
        # The vendor answered 2xx, so the alert exists; without its id we cannot follow it.
        return self._decode(response, _trigger, creates=True)

    def status(self, alert_id: str) -> AlertStatus:
        """The alert's procedure as of now (seed 001 "Get Alert Status").

        Raises:
            BudgetExhaustedError: the hourly budget is spent; nothing was sent.
            UpstreamUnavailableError: not answered, 5xx, 429, or an unreadable answer.
            UpstreamRejectedError: 401, or 404 (unknown alert, or another key's).
        """
        # A poll only learns what the calls did: it leaves the reserve to the calls themselves.
        response = self._call("GET", f"/v1/alert/{alert_id}/status", urgent=False)
        return self._decode(response, _alert_status)

    def acknowledge(self, alert_id: str, phone_number: str) -> AlertStatus:
        """End a running procedure as acknowledged by ``phone_number`` (seed 001 "Acknowledge Alert").

        Acknowledging twice is not an error for us: the vendor's 400 "Alert Already Acknowledged"
        (the answer to a retry whose first answer was lost) is read as done, and the status returned.

        Raises:
            BudgetExhaustedError: the hourly budget is spent; nothing was sent.
            UpstreamUnavailableError: not answered, 5xx, 429.
            UpstreamRejectedError: 400 (the alert ended otherwise), 401, 404.
        """
        response = self._call(
            "POST",
            f"/v1/alert/{alert_id}/acknowledge",
            urgent=True,
            idempotent=True,
            expected=(400,),
            json={"phoneNumber": phone_number},
        )
        if response.status_code == 400:
            if self._decode(response, _error_title, optional=True) == ALREADY_ACKNOWLEDGED:
                return self.status(alert_id)
            raise UpstreamRejectedError(UPSTREAM, 400, excerpt(response))
        return self._decode(response, _alert_status)

    def test_connection(self) -> ConnectionTest:
        """Check the API key and list its account numbers (seed 001 "Test Connection").

        Raises:
            BudgetExhaustedError: the hourly budget is spent; nothing was sent.
            UpstreamUnavailableError: not answered, 5xx, 429.
            UpstreamRejectedError: 401 (missing, invalid or expired key).
        """
        return self._decode(self._call("GET", "/v1/connection/test", urgent=False), _connection_test)

    def _call(
        self,
        method: str,
        path: str,
        *,
        urgent: bool,
        idempotent: bool = False,
        expected: tuple[int, ...] = (),
        json: object = None,
    ) -> requests.Response:
        """Take a budget unit (an ``urgent`` request may take the reserved ones), then send with the
        API key."""
        self.budget.take(reserve=0 if urgent else self.reserve)
        return self._authorized(method, path, idempotent=idempotent, expected=expected, json=json)

    def _answered(self, response: requests.Response) -> None:
        """Every answer: when the vendor says the window is full, every worker waits for it."""
        if response.status_code == 429:
            self.budget.note_vendor_exhausted(retry_after_s(response) or 60.0)
            return
        if response.headers.get("X-RateLimit-Remaining", "").strip() == "0":
            reset = retry_after_from_reset(response.headers.get("X-RateLimit-Reset"), self.budget.clock())
            if reset is not None:
                self.budget.note_vendor_exhausted(reset)


def retry_after_from_reset(reset: str | None, now: float) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (epoch seconds), or None when absent or unreadable."""
    if not reset:
        return None
    try:
        return float(reset) - now
    except ValueError:
        return None


def _trigger(data: object) -> Trigger:
    if not isinstance(data, dict):
        raise TypeError("trigger answer is not a JSON object")
    language = data.get("language")
    return Trigger(
        alert_id=str(data["alertId"]),
        status=str(data["status"]),
        delay_seconds=int(data.get("delaySeconds") or 0),
        requires_calls=bool(data.get("requiresCalls")),
        contacts_to_call=int(data.get("contactsToCall") or 0),
        language=language if isinstance(language, str) else None,
        technical_email_sent=bool(data.get("technicalEmailSent")),
    )


def _connection_test(data: object) -> ConnectionTest:
    if not isinstance(data, dict):
        raise TypeError("connection test answer is not a JSON object")
    accounts = data.get("accountNumbers") or []
    return ConnectionTest(valid=bool(data.get("valid")), account_numbers=tuple(str(a) for a in accounts))


def _error_title(data: object) -> str | None:
    title = data.get("error") if isinstance(data, dict) else None
    return title if isinstance(title, str) else None


def _alert_status(data: object) -> AlertStatus:
    """The status answer. ``alertId`` and ``status`` are what the bridge needs, so only they must be
    readable: a time it cannot read is None, and one warning per answer names those fields."""
    if not isinstance(data, dict):
        raise TypeError("status answer is not a JSON object")
    times: dict[str, datetime | None] = {}
    unreadable: list[str] = []
    for name in STATUS_TIME_FIELDS:
        try:
            times[name] = status_time(data.get(name))
        except ValueError:
            times[name] = None
            unreadable.append(name)
    if unreadable:
        log.warning(
            "callonalarm.status_time_unreadable", fields=unreadable, alert_id=_text(data.get("alertId"))
        )
    return AlertStatus(
        alert_id=str(data["alertId"]),
        status=str(data["status"]),
        account_number=_text(data.get("accountNumber")),
        event_code=_text(data.get("eventCode")),
        zone=_text(data.get("zone")),
        created_at=times["createdAt"],
        calls_start_at=times["callsStartAt"],
        acknowledged_at=times["acknowledgedAt"],
        acknowledged_by=_text(data.get("acknowledgedBy")),
        cancelled_at=times["cancelledAt"],
        calls_made=int(data.get("callsMade") or 0),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def status_time(value: object) -> datetime | None:
    """A time of the status answer as an aware UTC datetime; absent, null, empty or 0 is None.

    Part A item 12 names the fields but no format, so this reads any of: ISO 8601 (``Z`` or an
    offset; without one the time is taken as UTC, the vendor's zone), or epoch seconds or milliseconds
    as a number or a numeric string (above 10^12 is ms, as Part A items 5 and 13 read epochs).

    Raises:
        ValueError: none of those forms, or a time before 1970 or after the year 3000.
    """
    if value is None or value in ("", 0):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"a {type(value).__name__} is not a time")
    if isinstance(value, str) and not _EPOCH_TEXT.fullmatch(value.strip()):
        return _iso_time(value)  # "20260106" is read as an epoch, "2026-01-06" as a date
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        raise ValueError("an epoch time out of range") from None
    if number > EPOCH_MS_THRESHOLD:
        number /= 1000
    if not 0 < number < MAX_EPOCH_S:  # NaN and infinities fail this too
        raise ValueError(f"{value!r} is out of range for an epoch time")
    return datetime.fromtimestamp(number, UTC)


def _iso_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 at +14:00, year 9999 at -14:00
        raise ValueError(f"{text!r} is out of range in UTC") from None


# The registry finds each vendor's client under this name (workers.clients.Clients).
CLIENT: Final[VendorClient] = CallOnAlarmClient
