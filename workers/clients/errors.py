"""The one error family every upstream client raises, so perform() can classify without vendor code.

- ``UpstreamUnavailableError``: the request did not land or the vendor is struggling (connect error,
  5xx, 429). Retry later, honouring ``retry_after_s`` when the vendor said how long.
- ``OutcomeUnknownError``: the request may have been applied (read timeout or dropped connection
  after send). Retry only after checking whether the first attempt created something.
- ``UpstreamRejectedError``: the vendor refused the request as such (other 4xx), or answered with a
  body its contract does not allow (``UnreadableAnswerError``). Retrying will not help; a person
  must look.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Base of every upstream failure; ``upstream`` names the vendor for logs and metrics."""

    def __init__(self, upstream: str, message: str) -> None:
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream


class UpstreamUnavailableError(UpstreamError):
    """Retryable: nothing was applied, or the vendor asked us to come back later."""

    def __init__(self, upstream: str, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(upstream, message)
        self.retry_after_s = retry_after_s


class OutcomeUnknownError(UpstreamError):
    """Retryable after reconciliation: the vendor may have applied the request."""


class UpstreamRejectedError(UpstreamError):
    """Permanent: the vendor refused the request (4xx other than 429)."""

    def __init__(self, upstream: str, status: int, message: str) -> None:
        super().__init__(upstream, f"HTTP {status}: {message}")
        self.status = status


class UnreadableAnswerError(UpstreamRejectedError):
    """Permanent: the vendor answered, but with a body its contract does not allow (not JSON, or not
    the documented shape). Sending the same request again will not change that. A create's
    unreadable answer is OutcomeUnknownError instead: it probably created something.
    """


class PreconditionError(UpstreamRejectedError):
    """Permanent, and nothing was sent: the step cannot be built (no alarm, no site table, no address
    the vendor takes). Handled as a rejection; the timeline says "not sent" instead of an HTTP status.
    """

    def __init__(self, upstream: str, message: str) -> None:
        UpstreamError.__init__(self, upstream, f"not sent: {message}")
        self.status = 0


class NotYetError(Exception):
    """Not an error of the upstream: the step cannot run yet (an alert not listed yet, a shared budget
    spent). The action waits ``retry_after_s`` without spending an attempt; the handler bounds how
    long it keeps waiting."""

    def __init__(self, reason: str, *, retry_after_s: float, wake_on_refs: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        # True: what the step waits for is something another step records on the alarm (the Alta
        # guid, the video links): it starts as soon as that is recorded; retry_after_s is the latest.
        self.wake_on_refs = wake_on_refs


class BudgetExhaustedError(NotYetError):
    """A shared rate budget (CallOnAlarm's 100 requests/hour) is spent until ``retry_after_s``."""
