"""HTTP transport shared by every upstream client: one session, a (connect, read) timeout on every
call, error mapping into workers.clients.errors, one log line per call (never a body), our
User-Agent and the credential every vendor call carries, and the one reading of a JSON answer.

Every step runs under a deadline of its own (``step_deadline``, set by perform()): each call's
connect and read timeouts, and its total, are cut to the time the step has left, and a call that
would start after the deadline is not sent. Those bound each socket operation; the whole exchange is
bounded by the deadline too (``transport.call_cutoff``: its connection is shut down then), so an
answer that trickles in a byte at a time ends with the step as well. That is what bounds a step under
the thread pool, where Celery enforces no time limit, so a hung upstream can never hold an action's
lease.

Only connection failures before sending are retried blindly. A read timeout or a dropped connection
on a non-idempotent call becomes OutcomeUnknownError: the upstream may have applied it, so the
handler must reconcile before trying again (STYLE anti-pattern 9). Whether a request left is told by
the adapter's report (``transport.request_sent``) and the exception's type, never by its text.
"""

from __future__ import annotations

import email.utils
import importlib.metadata
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, TypedDict, TypeVar, Unpack
from urllib.parse import urlsplit

import requests
import structlog
from urllib3.util import Timeout

from app import telemetry
from workers.clients.credentials import Credential
from workers.clients.errors import (
    OutcomeUnknownError,
    UnreadableAnswerError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from workers.clients.transport import (
    DEFAULT_POOL_MAXSIZE,
    Cutoff,
    EnvironmentOnceSession,
    call_cutoff,
    reports_sent,
    request_sent,
)

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = [
    "DEFAULT_POOL_MAXSIZE",
    "USER_AGENT",
    "BaseClient",
    "EnvironmentOnceSession",
    "FirstRequestProbe",
    "RequestOptions",
    "excerpt",
    "first_request_probe",
    "retry_after_s",
    "step_deadline",
    "timeouts",
]

log = structlog.get_logger(__name__)
SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_RETRY_AFTER_S = 3600.0
# The step's deadline on time.monotonic(), set by perform() around each handler; None: no deadline.
step_deadline: ContextVar[float | None] = ContextVar("step_deadline", default=None)
T = TypeVar("T")
# When the distribution is not installed (a source checkout run without `pip install`).
FALLBACK_VERSION = "0.0.0+unknown"


def _version() -> str:
    try:
        return importlib.metadata.version("alarm-bridge")
    except importlib.metadata.PackageNotFoundError:
        return FALLBACK_VERSION


# Sent on every upstream call: requests' default ``python-requests/x`` is refused with a 401 by some
# Alta cloud hosts (CONTRACTS Part B §1.2), and a name of our own tells a vendor's support who called.
USER_AGENT = f"alarm-bridge/{_version()}"


class RequestOptions(TypedDict, total=False):
    """What a client passes on to requests besides the method, URL and timeout."""

    params: Mapping[str, str]
    json: object
    data: Mapping[str, str] | bytes
    headers: Mapping[str, str]
    # False: a 3xx is the answer (Alta's login may set its cookie on a 302); requests follows by default.
    allow_redirects: bool


def timeouts(settings: Settings) -> tuple[float, float]:
    """Every client's (connect, read) timeout, from the one pair of settings."""
    return (settings.http_connect_timeout_s, settings.http_read_timeout_s)


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


class BaseClient:
    """One upstream: its base URL, session, timeout and credential; subclasses add the vendor's verbs."""

    upstream: ClassVar[str]
    # Sent with every call (per-call headers win): most vendors want ``Accept: application/json``.
    default_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        base_url: str,
        timeout: tuple[float, float],
        session: requests.Session | None = None,
        *,
        credential: Credential | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or EnvironmentOnceSession()
        # requests' own session default, set once: every call of this client (its token calls too)
        # carries it, a session a caller passes in included.
        self.session.headers["User-Agent"] = USER_AGENT
        self.credential = credential

    def _timeout(self, method: str, path: str) -> tuple[float, float] | Timeout:
        """This call's timeouts: the client's, cut to what is left of the step's deadline.

        Raises:
            UpstreamUnavailableError: the deadline has passed; nothing was sent.
        """
        connect, read = self.timeout[0], self._read_timeout_s(method, path)
        deadline = step_deadline.get()
        if deadline is None:
            return (connect, read)
        left = deadline - time.monotonic()
        if left <= 0:
            raise UpstreamUnavailableError(self.upstream, f"{method} {path}: step deadline reached, not sent")
        return Timeout(connect=min(connect, left), read=min(read, left), total=left)

    def _read_timeout_s(self, method: str, path: str) -> float:
        """How long this call may wait for its answer: the client's read timeout, unless a vendor
        is known to take longer on one call (a subclass says so)."""
        del method, path
        return self.timeout[1]

    def _answered(self, response: requests.Response) -> None:
        """Called with every answer before it is classified (a vendor's rate-limit headers)."""

    def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = False,
        expected: tuple[int, ...] = (),
        on_sent: Callable[[], None] | None = None,
        **options: Unpack[RequestOptions],
    ) -> requests.Response:
        """Send one request; map failures to the error family.

        ``idempotent``: repeating the call cannot create a second effect (GET, a PUT keyed by sysId),
        so a lost answer is merely "unavailable". ``expected``: statuses >= 400 the caller handles.
        ``on_sent``: called once the request has been written to the socket, before its answer.
        """
        timeout = self._timeout(method, path)
        if self.default_headers:
            options["headers"] = {**self.default_headers, **options.get("headers", {})}
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
        reports = reports_sent(self.session, url)
        sent_token = request_sent.set(left)
        deadline = step_deadline.get()
        cutoff = Cutoff(deadline) if deadline is not None else None
        cutoff_token = call_cutoff.set(cutoff)
        try:
            try:
                # requests takes a urllib3 Timeout as it is (adapters.py); types-requests does not say so.
                response = self.session.request(method, url, timeout=timeout, **options)  # type: ignore[arg-type]
            except requests.RequestException as exc:
                if cutoff is not None and cutoff.fired and not isinstance(exc, requests.Timeout):
                    # Cut at the step's deadline (a reset, a short body...): a timeout, told as one.
                    raise requests.ReadTimeout(f"cut at the step's deadline: {exc}") from exc
                raise
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
            call_cutoff.reset(cutoff_token)
            if cutoff is not None:
                cutoff.release()
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
        self._answered(response)
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

    def _authorized(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = False,
        expected: tuple[int, ...] = (),
        on_sent: Callable[[], None] | None = None,
        **options: Unpack[RequestOptions],
    ) -> requests.Response:
        """Send one vendor call with the client's credential: the one "retry once after a 401" loop.

        A 401 means the upstream refused the credential before acting on the request, so the request
        is sent once more with a renewed credential — a POST that creates included: the first one
        created nothing, so the second cannot create twice (TrackTik, RapidSOS and Alta all answer an
        expired token or cookie this way; CONTRACTS Part A items 1, 6, 13). A 401 to the renewed
        credential is a refusal (UpstreamRejectedError), never a loop. A credential that cannot be
        renewed (a static API key) makes the first 401 final, as any other 4xx.

        Raises:
            UpstreamRejectedError: a 401 twice, or the vendor refused to renew the credential.
            UpstreamUnavailableError, OutcomeUnknownError: as ``_request``.
        """
        credential = self.credential
        if credential is None:
            raise TypeError(f"{type(self).__name__} has no credential to authorize with")
        caller_headers = dict(options.get("headers", {}))
        value = credential.current()
        renewable = credential.renewable
        options["headers"] = {**caller_headers, **credential.headers(value)}
        response = self._request(
            method,
            path,
            idempotent=idempotent,
            expected=(*expected, 401) if renewable else expected,
            on_sent=on_sent,
            **options,
        )
        if not renewable or response.status_code != 401:
            return response
        log.info("upstream.credential_refused", upstream=self.upstream, path=path.split("?", 1)[0])
        value = credential.renew(stale=value)
        options["headers"] = {**caller_headers, **credential.headers(value)}
        response = self._request(
            method, path, idempotent=idempotent, expected=(*expected, 401), on_sent=on_sent, **options
        )
        if response.status_code == 401:
            credential.refused(value)
            raise UpstreamRejectedError(self.upstream, 401, excerpt(response))
        return response

    def _decode(
        self,
        response: requests.Response,
        parse: Callable[[object], T],
        *,
        creates: bool = False,
        optional: bool = False,
    ) -> T:
        """Read an answer's JSON body with ``parse``: the one place an unreadable answer is classified.

        ``parse`` raises ValueError, TypeError or KeyError when the body is not the shape the
        vendor's contract promises. Such an answer, or one that is not JSON at all, is:

        - ``OutcomeUnknownError`` when the call ``creates`` something: the vendor answered 2xx, so
          it probably exists; the handler reconciles before creating again;
        - otherwise ``UnreadableAnswerError`` (a rejection) with the answer's status: the vendor broke its
          contract, sending the same request again will not change that, and a person must look.

        ``optional``: the status alone is the answer (the body is documented as absent or may be
        left out): a body that is not JSON reaches ``parse`` as None, and ``parse`` reads leniently.
        """
        try:
            body: object = response.json()
        except ValueError:
            if not optional:
                raise self._unreadable(response, "body is not JSON", creates=creates) from None
            body = None
        try:
            return parse(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unreadable(response, f"{type(exc).__name__}: {exc}", creates=creates) from exc

    def _unreadable(self, response: requests.Response, reason: str, *, creates: bool) -> UpstreamError:
        method = response.request.method or "?"
        where = f"{method} {urlsplit(response.request.url or '').path}"
        if creates:
            return OutcomeUnknownError(self.upstream, f"{where}: unreadable create answer: {reason}")
        return UnreadableAnswerError(
            self.upstream, response.status_code, f"{where}: unreadable answer: {reason}"
        )
