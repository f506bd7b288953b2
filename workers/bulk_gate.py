"""Troubles yield to life-safety: while a life-safety step has run within BULK_YIELD_S, the steps of
the ``bulk`` queue (troubles, informational signals) start at most BULK_YIELD_RATE a second, across
the deployment.

Why a rate and not a smaller pool: on a shared host every step competes for the same cores (the
workers, PostgreSQL, Redis, the web). A power cut queues thousands of troubles; drained at full speed
beside a fire alarm they made its 911 request wait 40x its idle time (issue 13). Fewer bulk threads
drain just as fast (a trouble's step is short), and Celery's own ``rate_limit`` holds the limited
messages in the consumer under ``acks_late`` and drained 2.7 a second instead of 20. So the bulk step
waits in its own thread, before it claims its action: it holds no lease while it waits, its message
stays unacknowledged (a killed process gives it back), and only the ``bulk`` process's threads wait,
which is why the Procfile runs that queue in a process of its own. When no life-safety step has run
for BULK_YIELD_S, troubles drain at full speed again.

The "life-safety is being worked" flag is a Redis key with a time to live, refreshed by every
life-safety step (at most once a second per process). The rate is a pacer in the same Redis: one
script looks at the flag and, when it is up, hands the step the next free slot, 1/BULK_YIELD_RATE
after the one before (the generic cell rate algorithm, on Redis's clock), so the waiting steps start
evenly spaced and no step polls. The ``limits`` library (CallOnAlarm's budget) counts whole-second
windows: ten a second would start ten troubles at once at each window's start, a burst of CPU a fire
alarm arriving then waits behind. A step never waits longer than MAX_WAIT_S, so troubles are slowed,
never starved, and a Redis that cannot answer opens the gate rather than holding a step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
import structlog

log = structlog.get_logger(__name__)

# Well below the broker's visibility timeout and any lease, and short enough that a warm shutdown
# (SIGTERM: the threads finish what they hold) is not held up by a waiting step for long. Steps reserve
# their slots ahead, at most BULK_CONCURRENCY of them: keep BULK_CONCURRENCY / BULK_YIELD_RATE under it.
MAX_WAIT_S = 10.0
MARK_EVERY_S = 1.0  # a process refreshes the flag at most this often
# KEYS: the flag, the next free slot (ms on Redis's clock). ARGV: the spacing (ms), the slot's time
# to live (ms). Returns -1 when no life-safety step ran lately, else the ms until the slot this call
# took.
_TAKE_SLOT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot = tonumber(redis.call('GET', KEYS[2]) or '0')
if slot < now then slot = now end
redis.call('SET', KEYS[2], slot + tonumber(ARGV[1]), 'PX', tonumber(ARGV[2]))
return slot - now
"""


class BulkGate:
    """The deployment's gate for bulk steps, in the shared Redis under ``key``.

    ``clock`` and ``sleep`` measure and spend the waits (tests replace them); the slots follow
    Redis's clock, so every process shares one.
    """

    def __init__(
        self,
        cache: redis.Redis,
        key: str,
        *,
        rate: int,
        hold_s: float,
        max_wait_s: float = MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._cache = cache
        self._flag = key + ":life-safety"
        self._slot = key + ":next-slot"
        self._spacing_ms = max(1, round(1000 / rate))
        self._take_slot = cache.register_script(_TAKE_SLOT)
        self._hold_ms = max(1, int(hold_s * 1000))
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._marked_at: float | None = None

    def life_safety_seen(self) -> None:
        """A life-safety step starts: bulk steps yield for the next BULK_YIELD_S."""
        now = self._clock()
        if self._marked_at is not None and now - self._marked_at < MARK_EVERY_S:
            return
        try:
            self._cache.set(self._flag, 1, px=self._hold_ms)
            self._marked_at = now
        except redis.RedisError as exc:  # the step goes on; only the troubles' yield is missed
            log.warning("bulk_gate.mark_failed", error=str(exc))

    def yielding(self) -> bool:
        """Whether a life-safety step ran within BULK_YIELD_S (anywhere in the deployment)."""
        return bool(self._cache.exists(self._flag))

    def wait_turn(self) -> float:
        """Return when a bulk step may start; the seconds it waited."""
        ttl_ms = round(self._max_wait_s * 1000) + self._hold_ms
        try:
            wait_ms = int(self._take_slot(keys=[self._flag, self._slot], args=[self._spacing_ms, ttl_ms]))
        except redis.RedisError as exc:  # never hold a step on the gate's own trouble
            log.warning("bulk_gate.unavailable", error=str(exc))
            return 0.0
        if wait_ms <= 0:  # not yielding, or this step's slot is now
            return 0.0
        wait_s = min(wait_ms / 1000, self._max_wait_s)
        self._sleep(wait_s)
        return wait_s
