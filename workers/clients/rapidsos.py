"""RapidSOSClient: the Alert Management API for Tech Partners (seed 004; CONTRACTS Part A 13-15, §4).

Authentication is OAuth2 client credentials (seed 004 "Getting an authentication token"). The token
lives an hour and is shared by every worker process through Redis, under
``cache_key(settings, "rapidsos", "token")``, with a TTL that ends a minute before the token does, so a
worker never starts a call with a token about to lapse. Several workers may fetch a token at the same
moment; RapidSOS issues a new one each time and the older ones stay valid, so no lock is needed.
A 401 on an API call drops the cached token (if it is still the one we used) and the call is tried
once more with a new one; a second 401, or a 401 from the token endpoint itself (wrong credentials),
is permanent — the client never loops on bad credentials.

Create answers 201, **216** (Unsupported Location) or **217** (Supplemental Support Only). All three
create the alert (Part A 14), and ``requests`` calls all three success, so the client returns the
exact status in ``CreatedAlert`` and the caller branches on it (CONTRACTS §7.4). RapidSOS has no
idempotency key and no lookup by ``source_id``: a create whose answer is lost cannot be reconciled
here, it raises ``OutcomeUnknownError`` and the task decides (workers/tasks/rapidsos.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import requests

from config.settings import Settings
from workers.clients.base import BaseClient, excerpt
from workers.clients.cache import cache_key
from workers.clients.errors import UpstreamRejectedError

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path, not a secret)
ALERTS_PATH = "/v1/alerts/"
CREATED, UNSUPPORTED_LOCATION, SUPPLEMENTAL_ONLY = 201, 216, 217
FALLBACK_STATUSES = frozenset({UNSUPPORTED_LOCATION, SUPPLEMENTAL_ONLY})
CANCELED = "CANCELED"
DEFAULT_TOKEN_LIFETIME_S = 3600.0  # seed 004: "defaults to 3600 seconds"
RENEW_BEFORE_S = 60.0  # renew a minute before expiry (Part A 13)
MIN_CACHE_TTL_S = 1
MS_THRESHOLD = 10**12  # an epoch value above this is milliseconds (Part A 13)


@dataclass(frozen=True, slots=True)
class CreatedAlert:
    """The answer to a create: the exact status (201, 216 or 217) and the alert RapidSOS made.

    ``alert_id`` is None only when RapidSOS did not say (``blocking: false``, or an odd body).
    """

    status_code: int
    alert_id: str | None
    body: dict[str, Any] = field(default_factory=dict)

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
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Token:
    """An access token and how long it may be cached (seconds, already a minute short of expiry)."""

    access_token: str
    cache_ttl_s: int


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
        cache: redis.Redis[Any],
        token_key: str,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url, timeout, session)
        self._client_id = client_id
        self._client_secret = client_secret
        self._cache = cache
        self._token_key = token_key
        self._token_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, cache: redis.Redis[Any]) -> RapidSOSClient:
        """The client for this deployment; `cache` is the shared Redis (tokens, cookies, budgets)."""

        return cls(
            settings.rapidsos_base_url,
            (settings.http_connect_timeout_s, settings.http_read_timeout_s),
            client_id=settings.rapidsos_client_id,
            client_secret=settings.rapidsos_client_secret,
            cache=cache,
            token_key=cache_key(settings, "rapidsos", "token"),
        )

    # --- alerts -------------------------------------------------------------------------------------

    def create_alert(
        self, body: dict[str, Any], *, on_sent: Callable[[], None] | None = None
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
        """
        response = self._authorized(
            "POST", ALERTS_PATH, json=body, headers={"Accept": "application/json"}, on_sent=on_sent
        )
        data = _json_object(response)
        alert_id = data.get("alert_id")
        return CreatedAlert(
            status_code=response.status_code,
            alert_id=str(alert_id) if alert_id not in (None, "") else None,
            body=data,
        )

    def get_alert(self, alert_id: str) -> AlertState:
        """Read an alert as it stands (``GET /v1/alerts/{alert_id}``, Part A 15; kept 12 h, seed 004).

        Raises:
            UpstreamRejectedError: 404 (unknown, another partner's, or older than 12 h), 401 twice.
            UpstreamUnavailableError: 429, 5xx, connection or read failure (a GET is safe to repeat).
        """
        response = self._authorized("GET", ALERTS_PATH + alert_id, headers={"Accept": "application/json"})
        return _alert_state(_json_object(response))

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
            headers={"Accept": "application/json"},
        )
        if response.status_code == 404:
            return None
        return _alert_state(_json_object(response))

    # --- token --------------------------------------------------------------------------------------

    def access_token(self) -> str:
        """The shared token from Redis, or a new one (seed 004 ``POST /OAUTH/TOKEN/``) cached for all.

        Raises:
            UpstreamRejectedError: the token endpoint refused the credentials (400/401): permanent.
            UpstreamUnavailableError: 429, 5xx, connection or read failure (a token request creates
                nothing that matters, so a lost answer is just "unavailable").
        """
        cached = self._cached_token()
        if cached:
            return cached
        # One fetch per process however many steps need a token at once (the thread pool): the
        # others wait for it and read it from Redis.
        with self._token_lock:
            cached = self._cached_token()
            if cached:
                return cached
            token = self._fetch_token()
            # Redis holds only what may be rebuilt: without it each call fetches its own token.
            with contextlib.suppress(redis.RedisError):
                self._cache.set(self._token_key, token.access_token, ex=token.cache_ttl_s)
            return token.access_token

    def _cached_token(self) -> str | None:
        """The shared token, or None (also when Redis is unreachable: a 911 request must not wait)."""
        try:
            cached = self._cache.get(self._token_key)
        except redis.RedisError:
            return None
        if not cached:
            return None
        return cached.decode() if isinstance(cached, bytes) else str(cached)

    def _fetch_token(self) -> Token:
        response = self._request(
            "POST",
            TOKEN_PATH,
            idempotent=True,
            data={
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                "grant_type": "client_credentials",
            },
            headers={"Accept": "application/json"},
        )
        data = _json_object(response)
        access_token = data.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise UpstreamRejectedError(
                self.upstream, response.status_code, "token answer has no access_token"
            )
        return Token(
            access_token, token_cache_ttl_s(data.get("issued_at"), data.get("expires_in"), time.time())
        )

    def _drop_token(self, used: str) -> None:
        """Forget the cached token, unless another worker already replaced it with a fresh one."""
        if self._cached_token() == used:
            with contextlib.suppress(redis.RedisError):
                self._cache.delete(self._token_key)

    def _authorized(
        self, method: str, path: str, *, expected: tuple[int, ...] = (), **kwargs: Any
    ) -> requests.Response:
        """One API call with ``Authorization: Bearer`` (seed 004 says Bearer, whatever token_type says).

        On a 401 the token is renewed and the call sent once more; a 401 proves the call was refused,
        so repeating even a create cannot duplicate it.
        """
        headers = dict(kwargs.pop("headers", {}))
        for attempt in (1, 2):
            token = self.access_token()
            headers["Authorization"] = f"Bearer {token}"
            response = self._request(method, path, expected=(401, *expected), headers=headers, **kwargs)
            if response.status_code != 401:
                return response
            self._drop_token(token)
            if attempt == 2:
                raise UpstreamRejectedError(self.upstream, 401, excerpt(response))
        raise AssertionError("unreachable")  # pragma: no cover


def epoch_s(value: Any) -> float | None:
    """An epoch time given as a number or a numeric string, in seconds or ms, as seconds (None if not)."""
    number = _number(value)
    if number is None:
        return None
    return number / 1000.0 if number > MS_THRESHOLD else number


def token_cache_ttl_s(issued_at: Any, expires_in: Any, now_s: float) -> int:
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


def _number(value: Any) -> float | None:
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


def _json_object(response: requests.Response) -> dict[str, Any]:
    """The body as a JSON object; anything else (empty, text, a list) is an empty dict."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _name(value: Any) -> str | None:
    """A ``{name, display_name}`` object's name (or a bare string)."""
    if isinstance(value, dict):
        name = value.get("name")
        return str(name) if name is not None else None
    return str(value) if isinstance(value, str) else None


def _alert_state(data: dict[str, Any]) -> AlertState:
    updated = data.get("last_updated_time")
    return AlertState(
        status=_name(data.get("status")),
        disposition=_name(data.get("disposition")),
        last_updated_time=updated if isinstance(updated, int) and not isinstance(updated, bool) else None,
        body=data,
    )
