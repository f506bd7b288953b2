"""RapidSOSClient: the Alert Management API for Tech Partners (seed 004; CONTRACTS Part A 13-15, §4).

Authentication is OAuth2 client credentials (seed 004 "Getting an authentication token"). The token
lives an hour and is shared by every worker process through Redis, under
``cache_key(settings, "rapidsos", "token")`` (a ``credentials.SharedCredential``), with a TTL that ends
a minute before the token does, so a worker never starts a call with a token about to lapse. Several
workers may fetch a token at the same moment; RapidSOS issues a new one each time and the older ones
stay valid, so no shared lock is needed. A 401 on an API call replaces the cached token (if it is
still the one we used) and the call is tried once more with a new one (``BaseClient._authorized``); a
second 401 drops the token and is permanent, as is a 401 from the token endpoint itself (wrong
credentials) — the client never loops on bad credentials.

Create answers 201, **216** (Unsupported Location) or **217** (Supplemental Support Only). All three
create the alert (Part A 14), and ``requests`` calls all three success, so the client returns the
exact status in ``CreatedAlert`` and the caller branches on it (CONTRACTS §7.4). The status is the
answer: the body is read leniently (``blocking: false`` answers without an ``alert_id``). RapidSOS has no
idempotency key and no lookup by ``source_id``: a create whose answer is lost cannot be reconciled
here, it raises ``OutcomeUnknownError`` and the task decides (vendors/rapidsos/tasks.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Self

import redis
import requests

from config.settings import Settings
from vendors.rapidsos.settings import RapidSOSSettings
from workers.clients import VendorClient
from workers.clients.base import BaseClient, timeouts
from workers.clients.cache import cache_key
from workers.clients.credentials import Issued, SharedCredential

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path, not a secret)
ALERTS_PATH = "/v1/alerts/"
CREATED, UNSUPPORTED_LOCATION, SUPPLEMENTAL_ONLY = 201, 216, 217
FALLBACK_STATUSES = frozenset({UNSUPPORTED_LOCATION, SUPPLEMENTAL_ONLY})
CANCELED = "CANCELED"
DEFAULT_TOKEN_LIFETIME_S = 3600.0  # seed 004: "defaults to 3600 seconds"
RENEW_BEFORE_S = 60.0  # renew a minute before expiry (Part A 13)
MIN_CACHE_TTL_S = 1
JSON_HEADERS = {"Accept": "application/json"}
MS_THRESHOLD = 10**12  # an epoch value above this is milliseconds (Part A 13)


@dataclass(frozen=True, slots=True)
class CreatedAlert:
    """The answer to a create: the exact status (201, 216 or 217) and the alert RapidSOS made.

    ``alert_id`` is None only when RapidSOS did not say (``blocking: false``, or an odd body).
    """

    status_code: int
    alert_id: str | None
    body: dict[str, object] = field(default_factory=dict)

    @property
    def needs_phone_call(self) -> bool:
        """216 (no PSAP takes RapidSOS alerts there) or 217 (supplemental only): call the PSAP."""
        return self.status_code in FALLBACK_STATUSES


@dataclass(frozen=True, slots=True)
class AlertState:
    """An alert's status and disposition names (``RECEIVED``, ``DISPATCHED``, ``CANCELED``...)."""

    status: str | None
    disposition: str | None
    last_updated_time: int | None
    body: dict[str, object] = field(default_factory=dict)


class RapidSOSClient(BaseClient):
    """Create, read and cancel RapidSOS alerts with a client-credentials token shared via Redis."""

    upstream = "rapidsos"

    def __init__(
        self,
        base_url: str,
        timeout: tuple[float, float],
        *,
        client_id: str,
        client_secret: str,
        cache: redis.Redis,
        token_key: str,
        session: requests.Session | None = None,
        create_read_timeout_s: float | None = None,
    ) -> None:
        super().__init__(base_url, timeout, session)
        self.create_read_timeout_s = create_read_timeout_s or timeout[1]
        self._client_id = client_id
        self._client_secret = client_secret
        self.tokens = SharedCredential(
            self.upstream, "token", cache, token_key, self._issue_token, forget_refused=True
        )
        self.credential = self.tokens

    @classmethod
    def from_settings(
        cls, settings: Settings, cache: redis.Redis, *, session: requests.Session | None = None
    ) -> Self:
        """The client for this deployment; `cache` is the shared Redis (tokens, cookies, budgets)."""
        rapidsos = settings.vendor(RapidSOSSettings)
        return cls(
            rapidsos.base_url,
            timeouts(settings),
            client_id=rapidsos.client_id,
            client_secret=rapidsos.client_secret,
            cache=cache,
            token_key=cache_key(settings, "rapidsos", "token"),
            session=session,
            create_read_timeout_s=rapidsos.create_read_timeout_s,
        )

    # --- alerts -------------------------------------------------------------------------------------

    def create_alert(
        self, body: Mapping[str, object], *, on_sent: Callable[[], None] | None = None
    ) -> CreatedAlert:
        """Create an alert (seed 004 "Create an Alert", ``POST /v1/alerts/``) and return the exact status.

        201, 216 and 217 are all returned, never raised: each created an alert; 216/217 mean a person
        must still call the PSAP. Not idempotent: RapidSOS promises no dedupe on ``source_id``.

        Raises:
            UpstreamRejectedError: 400 (the body breaks a documented constraint), 401 twice or bad
                client credentials, another 4xx.
            UpstreamUnavailableError: 429 (with ``retry_after_s``), 5xx, connection refused.
            OutcomeUnknownError: the request was sent but no answer came (the alert may exist).

        ``on_sent``: called once the create has been written to the socket (not for the token call).
        The create is blocking, so its answer waits ``create_read_timeout_s`` (``_read_timeout_s``).
        """
        response = self._authorized("POST", ALERTS_PATH, json=body, headers=JSON_HEADERS, on_sent=on_sent)
        data = self._decode(response, _object_or_empty, optional=True)
        alert_id = data.get("alert_id")
        return CreatedAlert(
            status_code=response.status_code,
            alert_id=str(alert_id) if alert_id not in (None, "") else None,
            body=data,
        )

    def _read_timeout_s(self, method: str, path: str) -> float:
        """A create is sent ``blocking: true``: its answer waits for RapidSOS's create job, which can
        take seconds (seed 004), and one given up is sent again, a second 911 alert
        (``RAPIDSOS_CREATE_READ_TIMEOUT_S``; the step's deadline still cuts it). Every other call,
        the token's included, keeps the general read timeout."""
        if method == "POST" and path == ALERTS_PATH:
            return max(self.timeout[1], self.create_read_timeout_s)
        return self.timeout[1]

    def get_alert(self, alert_id: str) -> AlertState:
        """Read an alert as it stands (``GET /v1/alerts/{alert_id}``, Part A 15; kept 12 h, seed 004).

        Raises:
            UpstreamRejectedError: 404 (unknown, another partner's, or older than 12 h), 401 twice.
            UpstreamUnavailableError: 429, 5xx, connection or read failure (a GET is safe to repeat).
        """
        response = self._authorized("GET", ALERTS_PATH + alert_id, headers=JSON_HEADERS)
        return self._decode(response, _alert_state)

    def cancel_alert(self, alert_id: str) -> AlertState | None:
        """Cancel an alert: ``PATCH /v1/alerts/{alert_id}`` ``{"status": "CANCELED"}`` (Part A 15, §4.3).

        Idempotent: cancelling a cancelled alert is 200, so a lost answer is simply retried. Returns
        None on a 404: RapidSOS keeps alerts 12 hours (seed 004), after which there is nothing left
        to cancel — not an error a person could act on.

        Raises:
            UpstreamRejectedError: 400 (the status may not change), 401 twice, another 4xx.
            UpstreamUnavailableError: 429, 5xx, connection or read failure.
        """
        response = self._authorized(
            "PATCH",
            ALERTS_PATH + alert_id,
            idempotent=True,
            expected=(404,),
            json={"status": CANCELED},
            headers=JSON_HEADERS,
        )
        if response.status_code == 404:
            return None
        # The 200 is the answer (cancelling twice is fine): the body is read leniently.
        return _alert_state(self._decode(response, _object_or_empty, optional=True))

    # --- token --------------------------------------------------------------------------------------

    def access_token(self) -> str:
        """The shared token from Redis, or a new one (seed 004 ``POST /OAUTH/TOKEN/``) cached for all.

        Raises:
            UpstreamRejectedError: the token endpoint refused the credentials (400/401): permanent.
            UpstreamUnavailableError: 429, 5xx, connection or read failure (a token request creates
                nothing that matters, so a lost answer is just "unavailable").
        """
        return self.tokens.current()

    def _issue_token(self, previous: Issued | None) -> Issued:
        response = self._request(
            "POST",
            TOKEN_PATH,
            idempotent=True,
            data={
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                "grant_type": "client_credentials",
            },
            headers=JSON_HEADERS,
        )
        data = self._decode(response, _token_answer)
        ttl_s = token_cache_ttl_s(data.get("issued_at"), data.get("expires_in"), time.time())
        return Issued(str(data["access_token"]), keep_s=ttl_s)


def epoch_s(value: object) -> float | None:
    """An epoch time given as a number or a numeric string, in seconds or ms, as seconds (None if not)."""
    number = _number(value)
    if number is None:
        return None
    return number / 1000.0 if number > MS_THRESHOLD else number


def token_cache_ttl_s(issued_at: object, expires_in: object, now_s: float) -> int:
    """How long to cache a token: its lifetime less a minute, less its age when it reached us.

    ``expires_in`` counts from ``issued_at`` (seed 004). The age is only trusted when it is plausible
    (0 up to the lifetime): a future ``issued_at`` or one older than the lifetime means the clocks
    disagree, and then the lifetime alone is the safer measure.
    """
    lifetime = _number(expires_in)
    if lifetime is None or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME_S
    issued = epoch_s(issued_at)
    age = now_s - issued if issued is not None else 0.0
    if not 0.0 <= age < lifetime:
        age = 0.0
    return max(MIN_CACHE_TTL_S, int(lifetime - age - RENEW_BEFORE_S))


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _object_or_empty(body: object) -> dict[str, object]:
    """The body as a JSON object; anything else (absent, text, a list) is an empty one."""
    return body if isinstance(body, dict) else {}


def _token_answer(body: object) -> dict[str, object]:
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("access_token"), str)
        or not body["access_token"]
    ):
        raise ValueError("token answer has no access_token")
    return body


def _name(value: object) -> str | None:
    """A ``{name, display_name}`` object's name (or a bare string)."""
    if isinstance(value, dict):
        name = value.get("name")
        return str(name) if name is not None else None
    return str(value) if isinstance(value, str) else None


def _alert_state(body: object) -> AlertState:
    """An alert's state. Raises TypeError when the body is not a JSON object."""
    if not isinstance(body, dict):
        raise TypeError("alert answer is not a JSON object")
    data: dict[str, object] = body
    updated = data.get("last_updated_time")
    return AlertState(
        status=_name(data.get("status")),
        disposition=_name(data.get("disposition")),
        last_updated_time=updated if isinstance(updated, int) and not isinstance(updated, bool) else None,
        body=data,
    )


# The registry finds each vendor's client under this name (workers.clients.Clients).
CLIENT: Final[VendorClient] = RapidSOSClient
