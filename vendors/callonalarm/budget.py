"""CallOnAlarm's request budget, shared by every worker process of the deployment (seed 001 "Rate
Limiting"; CONTRACTS Part A item 10).

CallOnAlarm allows 100 requests per sliding hour per API key, status polls included. A worker that
learned this only from a 429 would spend attempts and starve a fire call behind a storm of polls, so
every request first takes one unit from a moving-window limiter held in Redis (the ``limits``
library's ``MovingWindowRateLimiter`` over ``RedisStorage``, built on the cache's own connection pool,
so it works with ``fakeredis.FakeRedis()`` too). When the window is full the request is not sent:
``BudgetExhaustedError`` tells perform() to wait, without spending an attempt, until one unit frees.

The vendor's own count wins when it is stricter (another system using the same key, a clock skew): a
response with ``X-RateLimit-Remaining: 0`` or a 429 stores "blocked until" in Redis, and every worker
waits for it before taking a unit.

The last ``CALLONALARM_LIFE_SAFETY_RESERVE`` units of the window are kept for the calls that must not
wait: a life-safety alarm's trigger, a phone fallback and a restore (which stops calls a cancel spared).
Status polls and other triggers stop short of them, so a storm of troubles and the polls that follow
them cannot spend the hour before a fire call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

import redis
import structlog
from limits import RateLimitItemPerHour
from limits.storage import MovingWindowSupport, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from workers.clients.errors import BudgetExhaustedError

log = structlog.get_logger(__name__)

MIN_WAIT_S = 1.0
MAX_WAIT_S = 3600.0  # one window: nothing the vendor says can make us wait longer than this
_WINDOW_IDENTIFIER = "requests"


class HourlyBudget:
    """``per_hour`` requests in any sliding hour for the whole deployment.

    ``storage`` is any ``limits`` storage (Redis in production; ``from_redis`` builds it from the shared
    cache). ``cache`` and ``blocked_key`` hold the vendor's own "no more until" moment; without a
    cache only the local window is kept. ``clock`` is epoch seconds (the limiter's own clock).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        per_hour: int,
        cache: redis.Redis | None = None,
        blocked_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limiter = MovingWindowRateLimiter(storage)
        self.storage = cast(MovingWindowSupport, storage)
        self.item = RateLimitItemPerHour(per_hour)
        self.per_hour = per_hour
        self.cache = cache
        self.blocked_key = blocked_key
        self.clock = clock

    @classmethod
    def from_redis(cls, cache: redis.Redis, key: str, per_hour: int) -> HourlyBudget:
        """The deployment's budget in the shared Redis, every key under ``key``."""
        storage = RedisStorage("redis://", connection_pool=cache.connection_pool, key_prefix=key)
        return cls(storage, per_hour=per_hour, cache=cache, blocked_key=key + ":vendor_blocked_until")

    def take(self, *, reserve: int = 0) -> None:
        """Take one request's unit, or raise when none is left.

        ``reserve``: units this request must leave in the window for more urgent ones (the life-safety
        reserve): it is taken only while more than ``reserve`` units are left. The test and the take
        are one step in the storage (``acquire_entry`` against a lower limit on the same window), so
        two workers cannot both take the last unit above the reserve.

        Raises:
            BudgetExhaustedError: the window is full down to ``reserve`` (or the vendor said so);
                ``retry_after_s`` is when the oldest counted request leaves the window (at least one
                second).
        """
        blocked_for = self._vendor_blocked_for()
        if blocked_for > 0:
            raise BudgetExhaustedError(
                f"CallOnAlarm hourly budget spent ({self.per_hour}/h): the vendor refuses more",
                retry_after_s=_clamp(blocked_for),
            )
        if reserve <= 0:
            if self.limiter.hit(self.item, _WINDOW_IDENTIFIER):
                return
        elif self.storage.acquire_entry(
            self.item.key_for(_WINDOW_IDENTIFIER), self.per_hour - reserve, self.item.get_expiry()
        ):
            return
        # When a unit frees for this request: the oldest of the window's newest ``per_hour - reserve``
        # entries leaves it (the same count the take was refused against).
        started, _ = self.storage.get_moving_window(
            self.item.key_for(_WINDOW_IDENTIFIER), self.per_hour - max(0, reserve), self.item.get_expiry()
        )
        kept = f": the last {reserve} are kept for life-safety calls" if reserve > 0 else ""
        raise BudgetExhaustedError(
            f"CallOnAlarm hourly budget spent ({self.per_hour}/h){kept}",
            retry_after_s=_clamp(started + self.item.get_expiry() - self.clock()),
        )

    def remaining(self) -> int:
        """Units left in the current window (for logs and tests)."""
        return self.limiter.get_window_stats(self.item, _WINDOW_IDENTIFIER).remaining

    def note_vendor_exhausted(self, wait_s: float) -> None:
        """The vendor says no request will be admitted for ``wait_s``: every worker waits that long.

        Never raises: it runs inside a response hook, and losing this note only costs one 429.
        """
        if self.cache is None or self.blocked_key is None or wait_s <= 0:
            return
        wait_s = _clamp(wait_s)
        try:
            self.cache.set(self.blocked_key, repr(self.clock() + wait_s), px=int(wait_s * 1000))
        except redis.RedisError as exc:
            log.warning("callonalarm.budget_note_failed", error=type(exc).__name__)

    def _vendor_blocked_for(self) -> float:
        if self.cache is None or self.blocked_key is None:
            return 0.0
        raw = self.cache.get(self.blocked_key)
        if not isinstance(raw, bytes | str):
            return 0.0
        try:
            until = float(raw)
        except ValueError:
            return 0.0
        return until - self.clock()


def _clamp(seconds: float) -> float:
    return min(MAX_WAIT_S, max(MIN_WAIT_S, seconds))
