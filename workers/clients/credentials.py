"""The credential each vendor call carries: a static secret, or one the vendor issues and renews that
every worker process of a deployment shares through Redis.

``BaseClient._authorized`` sends a call with ``Credential.current()`` and, after a 401, once more with
``Credential.renew(stale)``. ``SharedCredential`` is the one Redis cache behind the TrackTik token,
the RapidSOS token and the Alta cookie: each vendor only says how a credential is issued (``Issue``)
and sent (``header``). What it owns:

- one entry per deployment under the deployment's key prefix (``cache_key``), kept by Redis for as
  long as the vendor's answer allows, so a fleet of workers logs in once, not once per process;
- renewal at most once at a time per process (a lock), and, where renewing spends something that
  works once (TrackTik's refresh token), at most once at a time in the whole deployment (a Redis
  lock); a credential another worker renewed meanwhile is used as it is;
- Redis holds only what can be rebuilt: when it is unreachable the credential is issued anew
  (a 911 request must not wait for a cache).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import redis
import structlog

from workers.clients.errors import UpstreamRejectedError, UpstreamUnavailableError

log = structlog.get_logger(__name__)

# Renew this long before a credential the vendor dated expires, so a call never starts with a dying one.
RENEW_BEFORE_S = 60.0

# How a credential goes on the wire: the headers that carry ``value``.
Header = Callable[[str], dict[str, str]]


def bearer(value: str) -> dict[str, str]:
    """``Authorization: Bearer <value>``: every vendor but Alta."""
    return {"Authorization": f"Bearer {value}"}


class Credential(Protocol):
    """What ``BaseClient._authorized`` needs of a credential."""

    @property
    def renewable(self) -> bool:
        """False: a 401 is final (a static key); True: a 401 asks for ``renew``."""
        ...

    def current(self) -> str:
        """The value to send now."""
        ...

    def renew(self, stale: str | None) -> str:
        """A value to replace ``stale``, which the vendor refused with a 401 (or which is expiring)."""
        ...

    def refused(self, used: str) -> None:
        """The vendor refused ``used`` although it was just renewed."""
        ...

    def headers(self, value: str) -> dict[str, str]:
        """The headers that carry ``value``."""
        ...


@dataclass(frozen=True, slots=True)
class StaticCredential:
    """A secret set in the settings (CallOnAlarm's API key, the CAD token): nothing to renew."""

    secret: str = field(repr=False)
    header: Header = bearer
    renewable: ClassVar[bool] = False

    def current(self) -> str:
        """The configured secret."""
        return self.secret

    def renew(self, stale: str | None) -> str:
        """The same secret: only a person can change it."""
        return self.secret

    def refused(self, used: str) -> None:
        """Nothing to forget."""

    def headers(self, value: str) -> dict[str, str]:
        """The headers that carry ``value``."""
        return self.header(value)


@dataclass(frozen=True, slots=True)
class Issued:
    """A credential as the vendor issued it.

    ``keep_s``: how long Redis keeps it (less than 1: not kept). ``expires_at`` (epoch seconds):
    when the vendor stops taking it, for credentials kept longer than they live (TrackTik keeps its
    single-use refresh token with the access token); None: good for as long as Redis keeps it.
    """

    value: str = field(repr=False)
    keep_s: float
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None


# The previously shared credential (None when there is none) -> a new one. Raises the client error
# family: UpstreamRejectedError when the vendor refuses the configured secrets (permanent).
Issue = Callable[[Issued | None], Issued]


class SharedCredential:
    """A vendor-issued credential shared by every worker process of a deployment through Redis.

    ``with_refresh``: the entry is the JSON record ``{access_token, refresh_token, expires_at}``
    (TrackTik's token pair); otherwise it is the bare value (the RapidSOS token, the Alta cookie).
    ``lock_timeout_s``: renew under a Redis lock held at most that long (needed when renewing spends
    a single-use refresh token); None: a per-process lock is enough, because issuing twice is
    harmless (older tokens and cookies stay valid). ``forget_refused``: drop the entry when the vendor
    refuses a just-renewed value, so the next call does not start with it.
    """

    renewable: ClassVar[bool] = True

    def __init__(
        self,
        upstream: str,
        name: str,
        cache: redis.Redis,
        key: str,
        issue: Issue,
        *,
        header: Header = bearer,
        with_refresh: bool = False,
        lock_timeout_s: float | None = None,
        forget_refused: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstream = upstream
        self.name = name  # "token", "cookie": in log events
        self.key = key
        self._cache = cache
        self._issue = issue
        self._header = header
        self._with_refresh = with_refresh
        self._lock_timeout_s = lock_timeout_s
        self._forget_refused = forget_refused
        self._clock = clock
        # One renewal per process however many steps need the credential at once (the thread pool).
        self._process_lock = threading.Lock()

    def current(self) -> str:
        """The shared credential, or a new one when there is none or it is about to expire.

        Raises:
            UpstreamRejectedError: the vendor refused the configured secrets (permanent).
            UpstreamUnavailableError: the vendor could not issue one now, or another worker's
                renewal did not finish in time.
        """
        cached = self._load()
        if cached is not None and self._fresh(cached):
            return cached.value
        return self.renew(stale=cached.value if cached is not None else None)

    def renew(self, stale: str | None) -> str:
        """Replace ``stale`` (refused with a 401, expiring, or None: none yet).

        When another worker already replaced it while this one waited for the lock, that credential
        is used and nothing is spent. When the vendor refuses to issue one, the shared entry is
        dropped: it was stale, and the next call must not start from it.

        Raises:
            UpstreamRejectedError, UpstreamUnavailableError: as ``current``.
        """
        with self._locked():
            cached = self._load()
            if cached is not None and cached.value != stale and self._fresh(cached):
                return cached.value
            try:
                issued = self._issue(cached)
            except UpstreamRejectedError:
                self.forget()
                raise
            self._store(issued)
            return issued.value

    def refused(self, used: str) -> None:
        """The vendor refused ``used`` right after renewing: drop it if asked to and still shared."""
        if self._forget_refused:
            self.drop(used)

    def headers(self, value: str) -> dict[str, str]:
        """The headers that carry ``value``."""
        return self._header(value)

    def drop(self, used: str) -> None:
        """Forget the shared credential, unless another worker already replaced ``used``."""
        cached = self._load()
        if cached is not None and cached.value == used:
            self.forget()

    def forget(self) -> None:
        """Drop the shared credential (tests and operators; the next call asks the vendor)."""
        with self._tolerated("forget"):
            self._cache.delete(self.key)

    def _fresh(self, issued: Issued) -> bool:
        return issued.expires_at is None or issued.expires_at - RENEW_BEFORE_S > self._clock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        timeout_s = self._lock_timeout_s
        if timeout_s is None:
            with self._process_lock:
                yield
            return
        if not self._process_lock.acquire(timeout=timeout_s):
            raise self._still_renewing()
        try:
            lock = self._cache.lock(self.key + ":lock", timeout=timeout_s, blocking_timeout=timeout_s)
            if not lock.acquire():
                raise self._still_renewing()
            try:
                yield
            finally:
                try:
                    lock.release()
                except redis.exceptions.LockError:
                    # The lock expired during a very slow renewal; the credential is stored either way.
                    log.warning(f"{self.upstream}.{self.name}_lock_expired")
        finally:
            self._process_lock.release()

    def _still_renewing(self) -> UpstreamUnavailableError:
        return UpstreamUnavailableError(
            self.upstream, f"{self.name} renewal by another worker did not finish", retry_after_s=5.0
        )

    @contextlib.contextmanager
    def _tolerated(self, operation: str) -> Iterator[None]:
        """Redis holds only what can be rebuilt: a failure costs a new credential, never the call."""
        try:
            yield
        except redis.RedisError as exc:
            log.warning(
                f"{self.upstream}.{self.name}_cache_unavailable",
                operation=operation,
                error=type(exc).__name__,
            )

    def _load(self) -> Issued | None:
        raw: object = None
        with self._tolerated("read"):
            raw = self._cache.get(self.key)
        if isinstance(raw, bytes):
            raw = raw.decode()
        if not isinstance(raw, str) or not raw:
            return None
        if not self._with_refresh:
            return Issued(raw, keep_s=0)
        try:
            record = json.loads(raw)
            refresh = record.get("refresh_token")
            return Issued(
                value=str(record["access_token"]),
                keep_s=0,
                refresh_token=refresh if isinstance(refresh, str) and refresh else None,
                expires_at=float(record["expires_at"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable: treated as absent, a new credential overwrites it

    def _store(self, issued: Issued) -> None:
        if issued.keep_s < 1:
            return
        if self._with_refresh:
            raw = json.dumps(
                {
                    "access_token": issued.value,
                    "refresh_token": issued.refresh_token,
                    "expires_at": issued.expires_at,
                }
            )
        else:
            raw = issued.value
        with self._tolerated("write"):
            self._cache.set(self.key, raw, ex=int(issued.keep_s))
