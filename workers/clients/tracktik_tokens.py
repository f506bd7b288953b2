"""TrackTik's OAuth2 tokens, shared by every worker process through Redis (seed 000; CONTRACTS Part A
item 6, Part B §2.1).

TrackTik hands out an access token (3600 s) and a refresh token that works exactly once. Two workers
that both refresh with the same refresh token would leave one of them with an invalid grant, so
renewal happens under a Redis lock and every worker reads the pair from Redis, never from memory.

TrackTik blocks an IP for 2 h after 40 failed logins in under 2 min. A 400/401 from the token
endpoint is therefore final: the password grant is never repeated within one call, and a refusal of
these exact credentials is remembered in Redis for ``REFUSAL_MEMORY_S`` so that a storm of alarms
cannot turn bad credentials into a lockout. Changing the credentials clears that memory at once
(the key carries a fingerprint of them).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from workers.clients.errors import UpstreamRejectedError, UpstreamUnavailableError

log = structlog.get_logger(__name__)

UPSTREAM = "tracktik"
# Renew this long before the access token expires, so a call never starts with a dying token.
RENEW_BEFORE_S = 60.0
# Refresh tokens live 30 days at TrackTik; keeping the pair a little less means a stale pair is
# dropped by Redis rather than spent on a refresh that must fail.
KEEP_PAIR_S = 25 * 24 * 3600
# How long a refusal of the configured credentials stops further password grants.
REFUSAL_MEMORY_S = 600

# grant fields -> the token endpoint's JSON answer (raises the client error family)
GrantCall = Callable[[Mapping[str, str]], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class TokenPair:
    """An access token, the single-use refresh token issued with it, and when the access token dies."""

    access_token: str
    refresh_token: str | None
    expires_at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class PasswordCredentials:
    """The OAuth client and the portal user of the password grant (secrets kept out of repr)."""

    client_id: str
    client_secret: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"PasswordCredentials(client_id={self.client_id!r}, username={self.username!r})"

    def fingerprint(self) -> str:
        """A short digest naming these credentials in Redis keys without revealing them."""
        joined = "\x00".join((self.client_id, self.client_secret, self.username, self.password))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


class TokenCache:
    """Gives out a live access token, renewing it at most once at a time across all workers."""

    def __init__(
        self,
        cache: redis.Redis[Any],
        key: str,
        credentials: PasswordCredentials,
        grant: GrantCall,
        *,
        lock_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._key = key
        self._lock_key = key + ":lock"
        self._refused_key = key + ":refused:" + credentials.fingerprint()
        self._credentials = credentials
        self._grant = grant
        # The lock outlives two token calls (refresh, then password) even at their full timeouts.
        self._lock_timeout_s = lock_timeout_s
        self._clock = clock

    def access_token(self) -> str:
        """A live access token: the shared one, or a new one when it is missing or about to expire.

        Raises:
            UpstreamRejectedError: TrackTik refused the configured credentials (permanent).
            UpstreamUnavailableError: the token endpoint is down, blocked (429) or another worker's
                renewal did not finish in time.
        """
        pair = self._load()
        if pair is not None and self._is_fresh(pair):
            return pair.access_token
        return self.renew(stale=pair.access_token if pair is not None else None)

    def renew(self, *, stale: str | None) -> str:
        """Replace the access token ``stale`` (refused with a 401, or expiring), under the shared lock.

        When another worker already replaced it while we waited for the lock, its token is used and
        nothing is spent. Otherwise the refresh grant is tried first; if TrackTik refuses the refresh
        token (spent, expired), the password grant follows — once.

        Raises:
            UpstreamRejectedError: TrackTik refused the configured credentials (permanent).
            UpstreamUnavailableError: as for ``access_token``.
        """
        lock = self._cache.lock(
            self._lock_key, timeout=self._lock_timeout_s, blocking_timeout=self._lock_timeout_s
        )
        if not lock.acquire():
            raise UpstreamUnavailableError(
                UPSTREAM, "token renewal by another worker did not finish", retry_after_s=5.0
            )
        try:
            pair = self._load()
            if pair is not None and pair.access_token != stale and self._is_fresh(pair):
                return pair.access_token
            renewed = self._refresh(pair) if pair is not None and pair.refresh_token else None
            if renewed is None:
                renewed = self._password_grant()
            self._store(renewed)
            return renewed.access_token
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                # The lock expired during a very slow renewal; the pair is stored either way.
                log.warning("tracktik.token_lock_expired")

    def forget(self) -> None:
        """Drop the shared pair (tests and operators; the next call logs in again)."""
        self._cache.delete(self._key)

    def _is_fresh(self, pair: TokenPair) -> bool:
        return pair.expires_at - RENEW_BEFORE_S > self._clock()

    def _refresh(self, pair: TokenPair) -> TokenPair | None:
        """The refresh grant; None when TrackTik refuses the refresh token (400 invalid_grant)."""
        assert pair.refresh_token is not None
        try:
            answer = self._grant(
                {
                    "grant_type": "refresh_token",
                    "client_id": self._credentials.client_id,
                    "client_secret": self._credentials.client_secret,
                    "refresh_token": pair.refresh_token,
                }
            )
        except UpstreamRejectedError as exc:
            if exc.status != 400:
                # 401 invalid_client: the client credentials are wrong; a password grant would fail too.
                self._remember_refusal()
                raise
            log.info("tracktik.refresh_refused", status=exc.status)
            return None
        return self._pair(answer)

    def _password_grant(self) -> TokenPair:
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
        except UpstreamRejectedError:
            self._remember_refusal()
            self.forget()
            log.error("tracktik.credentials_refused")
            raise
        log.info("tracktik.logged_in")
        return self._pair(answer)

    def _remember_refusal(self) -> None:
        self._cache.set(self._refused_key, "1", ex=REFUSAL_MEMORY_S)

    def _pair(self, answer: Mapping[str, Any]) -> TokenPair:
        access = answer.get("access_token")
        if not isinstance(access, str) or not access:
            raise UpstreamUnavailableError(UPSTREAM, "token endpoint answered without an access_token")
        refresh = answer.get("refresh_token")
        try:
            expires_in = float(answer.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        return TokenPair(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=self._clock() + expires_in,
        )

    def _load(self) -> TokenPair | None:
        raw = self._cache.get(self._key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return TokenPair(
                access_token=str(data["access_token"]),
                refresh_token=data.get("refresh_token"),
                expires_at=float(data["expires_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: treated as absent, a new login overwrites it

    def _store(self, pair: TokenPair) -> None:
        record = {
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "expires_at": pair.expires_at,
        }
        self._cache.set(self._key, json.dumps(record), ex=KEEP_PAIR_S)
