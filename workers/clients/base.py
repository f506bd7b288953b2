"""HTTP transport shared by every upstream client: one session, a (connect, read) timeout on every
call, error mapping into workers.clients.errors, and one log line per call (never a body).

Only connection failures before sending are retried blindly. A read timeout or a dropped connection
on a non-idempotent call becomes OutcomeUnknownError: the upstream may have applied it, so the
handler must reconcile before trying again (STYLE anti-pattern 9).
"""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests
import structlog

from workers.clients.errors import OutcomeUnknownError, UpstreamRejectedError, UpstreamUnavailableError

log = structlog.get_logger(__name__)
SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_RETRY_AFTER_S = 3600.0


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
    """One upstream: its base URL, session and timeout; subclasses add the vendor's verbs."""

    upstream: ClassVar[str]

    def __init__(
        self, base_url: str, timeout: tuple[float, float], session: requests.Session | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = False,
        expected: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; map failures to the error family.

        ``idempotent``: repeating the call cannot create a second effect (GET, a PUT keyed by sysId),
        so a lost answer is merely "unavailable". ``expected``: statuses >= 400 the caller handles.
        """
        started = time.monotonic()
        status: int | str = "error"
        try:
            response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
            status = response.status_code
        except requests.ConnectionError as exc:
            if _never_sent(exc) or method in SAFE_METHODS or idempotent:
                raise UpstreamUnavailableError(
                    self.upstream, f"{method} {path}: {type(exc).__name__}"
                ) from exc
            raise OutcomeUnknownError(self.upstream, f"{method} {path}: connection lost after send") from exc
        except requests.Timeout as exc:
            if isinstance(exc, requests.ConnectTimeout) or method in SAFE_METHODS or idempotent:
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
            log.info(
                "upstream.call",
                upstream=self.upstream,
                method=method,
                path=path.split("?", 1)[0],
                status=status,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
        if response.status_code in expected:
            return response
        if response.status_code in (502, 504) and method not in SAFE_METHODS and not idempotent:
            # A gateway gave up waiting for the vendor, which may still have applied the request.
            raise OutcomeUnknownError(
                self.upstream, f"{method} {path}: HTTP {response.status_code} from a gateway"
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise UpstreamUnavailableError(
                self.upstream,
                f"HTTP {response.status_code}: {excerpt(response)}",
                retry_after_s=retry_after_s(response),
            )
        if response.status_code >= 400:
            raise UpstreamRejectedError(self.upstream, response.status_code, excerpt(response))
        return response


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection failed before the request could be sent (refused, DNS, connect)."""
    text = repr(exc)
    return isinstance(exc, requests.ConnectTimeout) or any(
        marker in text for marker in ("NewConnectionError", "Connection refused", "NameResolutionError")
    )
