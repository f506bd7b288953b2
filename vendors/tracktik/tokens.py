"""How TrackTik issues the OAuth2 token pair every worker shares (seed 000; CONTRACTS Part A item 6,
Part B §2.1).

TrackTik hands out an access token (3600 s) and a refresh token that works exactly once. Two workers
that both refresh with the same refresh token would leave one of them with an invalid grant, so the
pair is shared through ``credentials.SharedCredential`` with a Redis lock around every renewal, and
read from Redis, never from memory.

TrackTik blocks an IP for 2 h after 40 failed logins in under 2 min. A 400/401 from the token
endpoint is therefore final: the password grant is never repeated within one call, and a refusal of
these exact credentials is remembered in Redis for ``REFUSAL_MEMORY_S`` so that a storm of alarms
cannot turn bad credentials into a lockout. Changing the credentials clears that memory at once
(the key carries a fingerprint of them). An answer that cannot be read is not a refusal.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis
import structlog

from workers.clients.credentials import Issued
from workers.clients.errors import UnreadableAnswerError, UpstreamRejectedError

log = structlog.get_logger(__name__)

UPSTREAM = "tracktik"
# Refresh tokens live 30 days at TrackTik; keeping the pair a little less means a stale pair is
# dropped by Redis rather than spent on a refresh that must fail.
KEEP_PAIR_S = 25 * 24 * 3600
# How long a refusal of the configured credentials stops further password grants.
REFUSAL_MEMORY_S = 600
DEFAULT_EXPIRES_IN_S = 3600.0

# grant fields -> the token endpoint's JSON object (raises the client error family)
GrantCall = Callable[[Mapping[str, str]], Mapping[str, object]]


@dataclass(frozen=True, slots=True)
class PasswordCredentials:
    """The OAuth client and the portal user of the password grant (secrets kept out of repr)."""

    client_id: str
    client_secret: str = field(repr=False)
    username: str
    password: str = field(repr=False)

    def fingerprint(self) -> str:
        """A short digest naming these credentials in Redis keys without revealing them."""
        joined = "\x00".join((self.client_id, self.client_secret, self.username, self.password))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


class TrackTikGrants:
    """Issues a token pair: the refresh grant when a refresh token is shared, else (or when TrackTik
    refuses the refresh token) the password grant — once, and never again soon after a refusal."""

    def __init__(
        self,
        cache: redis.Redis,
        refused_key: str,
        credentials: PasswordCredentials,
        grant: GrantCall,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._refused_key = refused_key + ":" + credentials.fingerprint()
        self._credentials = credentials
        self._grant = grant
        self._clock = clock

    def __call__(self, previous: Issued | None) -> Issued:
        """A new pair replacing ``previous``.

        Raises:
            UpstreamRejectedError: TrackTik refused the configured credentials (permanent).
            UpstreamUnavailableError: the token endpoint is down or blocked (429).
        """
        renewed = None
        if previous is not None and previous.refresh_token:
            renewed = self._refresh(previous.refresh_token)
        return renewed if renewed is not None else self._password_grant()

    def _refresh(self, refresh_token: str) -> Issued | None:
        """The refresh grant; None when TrackTik refuses the refresh token (400 invalid_grant)."""
        try:
            answer = self._grant(
                {
                    "grant_type": "refresh_token",
                    "client_id": self._credentials.client_id,
                    "client_secret": self._credentials.client_secret,
                    "refresh_token": refresh_token,
                }
            )
        except UnreadableAnswerError:
            raise
        except UpstreamRejectedError as exc:
            if exc.status != 400:
                # 401 invalid_client: the client credentials are wrong; a password grant would fail too.
                self._remember_refusal()
                raise
            log.info("tracktik.refresh_refused", status=exc.status)
            return None
        return self._pair(answer)

    def _password_grant(self) -> Issued:
        if self._cache.exists(self._refused_key):
            raise UpstreamRejectedError(
                UPSTREAM, 401, "the configured credentials were refused recently; not trying again"
            )
        try:
            answer = self._grant(
                {
                    "grant_type": "password",
                    "client_id": self._credentials.client_id,
                    "client_secret": self._credentials.client_secret,
                    "username": self._credentials.username,
                    "password": self._credentials.password,
                }
            )
        except UnreadableAnswerError:
            raise
        except UpstreamRejectedError:
            self._remember_refusal()
            log.error("tracktik.credentials_refused")
            raise
        log.info("tracktik.logged_in")
        return self._pair(answer)

    def _remember_refusal(self) -> None:
        self._cache.set(self._refused_key, "1", ex=REFUSAL_MEMORY_S)

    def _pair(self, answer: Mapping[str, object]) -> Issued:
        refresh = answer.get("refresh_token")
        expires_in = answer.get("expires_in", DEFAULT_EXPIRES_IN_S)
        try:
            lifetime = (
                float(expires_in) if isinstance(expires_in, int | float | str) else DEFAULT_EXPIRES_IN_S
            )
        except ValueError:
            lifetime = DEFAULT_EXPIRES_IN_S
        return Issued(
            value=str(answer["access_token"]),  # checked when the answer was read
            keep_s=KEEP_PAIR_S,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=self._clock() + lifetime,
        )
