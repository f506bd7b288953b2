"""HTTP transport shared by every upstream client: one session, a (connect, read) timeout on every
call, error mapping into workers.clients.errors, and one log line per call (never a body).

Every step runs under a deadline of its own (``step_deadline``, set by perform()): each call's
connect and read timeouts, and its total, are cut to the time the step has left, and a call that
would start after the deadline is not sent. That is what bounds a step under the thread pool, where
Celery enforces no time limit, so a hung upstream can never hold an action's lease.

Only connection failures before sending are retried blindly. A read timeout or a dropped connection
on a non-idempotent call becomes OutcomeUnknownError: the upstream may have applied it, so the
handler must reconcile before trying again (STYLE anti-pattern 9).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import Timeout

from app import telemetry
from workers.clients.errors import OutcomeUnknownError, UpstreamRejectedError, UpstreamUnavailableError

log = structlog.get_logger(__name__)
SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_RETRY_AFTER_S = 3600.0
# Connections kept per upstream host: at least as many as the steps a worker process runs at once,
# or urllib3 would drop (and reopen) a connection after every call beyond its pool.
DEFAULT_POOL_MAXSIZE = 64
# The step's deadline on time.monotonic(), set by perform() around each handler; None: no deadline.
step_deadline: ContextVar[float | None] = ContextVar("step_deadline", default=None)
# Called once the current call's request (headers and body) has been written to the socket, before its
# answer is read: what must happen only after a request has left (the 911 request goes first).
request_sent: ContextVar[Callable[[], None] | None] = ContextVar("request_sent", default=None)


def _notify_sent() -> None:
    callback = request_sent.get()
    if callback is None:
        return
    request_sent.set(None)  # once per call, even if urllib3 sends again on a fresh connection
    try:
        callback()
    except Exception as exc:  # noqa: BLE001 - never let it fail the request that has left
        log.warning("upstream.request_sent_hook_failed", error=type(exc).__name__)


class _SentHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().request(*args, **kwargs)
        _notify_sent()


class _SentHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().request(*args, **kwargs)
        _notify_sent()


class _SentHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _SentHTTPConnection


class _SentHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _SentHTTPSConnection


class _Adapter(HTTPAdapter):
    """requests' adapter whose connections tell ``request_sent`` when a request has left."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _SentHTTPConnectionPool,
            "https": _SentHTTPSConnectionPool,
        }


@dataclass(slots=True)
class FirstRequestProbe:
    """Set by perform() while an alarm's step runs: the first request the alarm makes to each upstream
    is timed against the signal's arrival.

    ``first`` answers whether this is the alarm's first request to that upstream in the whole
    deployment (a shared SET NX in Redis), so retries, deferred steps and later steps are not counted
    twice. It is asked after the request, to keep it out of the time measured.
    """

    signal_at: datetime
    first: Callable[[str], bool]
    seen: set[str] = field(default_factory=set)

    def sending(self, upstream: str) -> float | None:
        """Seconds since the signal, when this is the step's first request to ``upstream``."""
        if upstream in self.seen:
            return None
        self.seen.add(upstream)
        return max(0.0, (datetime.now(UTC) - self.signal_at).total_seconds())

    def sent(self, upstream: str, elapsed_s: float) -> None:
        try:
            if self.first(upstream):
                telemetry.SIGNAL_TO_FIRST_REQUEST.labels(upstream).observe(elapsed_s)
        except Exception as exc:  # noqa: BLE001 - a metric must never fail the step
            log.warning("metrics.first_request_unrecorded", error=type(exc).__name__)


first_request_probe: ContextVar[FirstRequestProbe | None] = ContextVar("first_request_probe", default=None)


def retry_after_s(response: requests.Response) -> float | None:
    """Seconds the upstream asked us to wait: ``Retry-After`` (seconds or a date), else a reset epoch."""
    value = response.headers.get("Retry-After")
    if value:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                parsed = None  # an unreadable header: fall back to our own backoff
            if parsed is not None:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                return min(MAX_RETRY_AFTER_S, max(0.0, (parsed - datetime.now(UTC)).total_seconds()))
    reset = response.headers.get("X-RateLimit-Reset")
    if reset and response.status_code == 429:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(reset) - time.time()))
        except ValueError:
            return None
    return None


def excerpt(response: requests.Response, limit: int = 300) -> str:
    """The start of an error body, for the action's last_error (error bodies carry no secrets)."""
    return response.text[:limit].replace("\n", " ")


class EnvironmentOnceSession(requests.Session):
    """A ``requests.Session`` that works out the environment's proxies and CA bundle once per origin
    and settings, not on every call.

    requests scans the whole process environment for proxy variables on each request, about a third
    of its own CPU per call (measured). The environment of a running process does not change, so the
    answer for one origin (scheme and host: ``no_proxy`` is decided per host) and the same settings
    is the same every time; requests still computes it, once.
    """

    def __init__(self, pool_maxsize: int = DEFAULT_POOL_MAXSIZE) -> None:
        super().__init__()
        self._environment: dict[tuple[Any, ...], dict[str, Any]] = {}
        # One pool per host, sized for the steps in flight; retries are ours, never urllib3's.
        adapter = _Adapter(pool_connections=8, pool_maxsize=pool_maxsize, max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        if not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url if isinstance(url, str) else url.decode())
        key = (
            parts.scheme,
            parts.netloc,
            tuple(sorted((proxies or {}).items())),
            stream,
            verify,
            cert,
            tuple(sorted(self.proxies.items())),
            self.stream,
            self.verify,
            self.cert,
        )
        try:
            merged = self._environment.get(key)
        except TypeError:  # an unhashable setting: no cache for this call
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        if merged is None:
            merged = super().merge_environment_settings(url, dict(proxies or {}), stream, verify, cert)
            self._environment[key] = merged
        return {**merged, "proxies": dict(merged["proxies"])}


class BaseClient:
    """One upstream: its base URL, session and timeout; subclasses add the vendor's verbs."""

    upstream: ClassVar[str]

    def __init__(
        self, base_url: str, timeout: tuple[float, float], session: requests.Session | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or EnvironmentOnceSession()

    def _timeout(self, method: str, path: str) -> tuple[float, float] | Timeout:
        """This call's timeouts: the client's, cut to what is left of the step's deadline.

        Raises:
            UpstreamUnavailableError: the deadline has passed; nothing was sent.
        """
        deadline = step_deadline.get()
        if deadline is None:
            return self.timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise UpstreamUnavailableError(self.upstream, f"{method} {path}: step deadline reached, not sent")
        connect, read = self.timeout
        return Timeout(connect=min(connect, left), read=min(read, left), total=left)

    def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = False,
        expected: tuple[int, ...] = (),
        on_sent: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; map failures to the error family.

        ``idempotent``: repeating the call cannot create a second effect (GET, a PUT keyed by sysId),
        so a lost answer is merely "unavailable". ``expected``: statuses >= 400 the caller handles.
        ``on_sent``: called once the request has been written to the socket, before its answer.
        """
        timeout = self._timeout(method, path)
        probe = first_request_probe.get()
        since_signal_s = probe.sending(self.upstream) if probe is not None else None
        started = time.monotonic()
        status: int | str = "error"
        sent = False

        def left() -> None:  # the adapter's connection wrote the whole request to the socket
            nonlocal sent
            sent = True
            if on_sent is not None:
                on_sent()

        url = self.base_url + path
        # Only our adapter's connections report a request that left; with another (a session a test
        # passes in) every failure after connecting counts as possibly sent.
        reports = isinstance(self.session.get_adapter(url), _Adapter)
        sent_token = request_sent.set(left)
        try:
            response = self.session.request(method, url, timeout=timeout, **kwargs)
            status = response.status_code
        except requests.ConnectionError as exc:
            # Refused, unresolvable, reset while connecting or while writing: the vendor never had the
            # whole request, so repeating it cannot make a second effect.
            never_sent = not sent if reports else isinstance(exc, requests.ConnectTimeout)
            if never_sent or method in SAFE_METHODS or idempotent:
                raise UpstreamUnavailableError(
                    self.upstream, f"{method} {path}: {type(exc).__name__}"
                ) from exc
            raise OutcomeUnknownError(self.upstream, f"{method} {path}: connection lost after send") from exc
        except requests.Timeout as exc:
            never_sent = not sent if reports else isinstance(exc, requests.ConnectTimeout)
            if never_sent or method in SAFE_METHODS or idempotent:
                raise UpstreamUnavailableError(self.upstream, f"{method} {path}: timeout") from exc
            raise OutcomeUnknownError(
                self.upstream, f"{method} {path}: no answer within the timeout"
            ) from exc
        except requests.RequestException as exc:
            if method in SAFE_METHODS or idempotent:
                raise UpstreamUnavailableError(
                    self.upstream, f"{method} {path}: {type(exc).__name__}"
                ) from exc
            # Failed while reading the answer (e.g. a broken chunked body): the request was sent.
            raise OutcomeUnknownError(
                self.upstream, f"{method} {path}: {type(exc).__name__} after send"
            ) from exc
        finally:
            request_sent.reset(sent_token)
            elapsed = time.monotonic() - started
            telemetry.UPSTREAM_CALLS.labels(self.upstream, method, str(status)).observe(elapsed)
            if probe is not None and since_signal_s is not None:
                probe.sent(self.upstream, since_signal_s)
            log.info(
                "upstream.call",
                upstream=self.upstream,
                method=method,
                path=path.split("?", 1)[0],
                status=status,
                duration_ms=round(elapsed * 1000, 1),
            )
        if response.status_code in expected:
            return response
        if response.status_code in (502, 504) and method not in SAFE_METHODS and not idempotent:
            # A gateway gave up waiting for the vendor, which may still have applied the request.
            raise OutcomeUnknownError(
                self.upstream, f"{method} {path}: HTTP {response.status_code} from a gateway"
            )
        if response.status_code == 429 or response.status_code >= 500:
            wait_s = retry_after_s(response)
            if response.status_code == 429:
                telemetry.RATE_LIMIT_WAITS.labels(self.upstream, "429").inc()
                telemetry.RATE_LIMIT_WAIT_SECONDS.labels(self.upstream, "429").inc(wait_s or 0.0)
            raise UpstreamUnavailableError(
                self.upstream, f"HTTP {response.status_code}: {excerpt(response)}", retry_after_s=wait_s
            )
        if response.status_code >= 400:
            raise UpstreamRejectedError(self.upstream, response.status_code, excerpt(response))
        return response
