"""Troubles yield to life-safety (workers/bulk_gate.py): paced only while a life-safety step ran
lately, one slot per 1/rate across every process, never longer than the cap, never held by a Redis
that cannot answer."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from workers.bulk_gate import MARK_EVERY_S, BulkGate

pytestmark = pytest.mark.unit
KEY = "t:ab:bulk-gate"


class FakeTime:
    """The gate's clock and sleep: sleeping records the pause and never blocks the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)


def gate(cache: redis.Redis, fake: FakeTime, *, rate: int = 5, max_wait_s: float = 60.0) -> BulkGate:
    return BulkGate(
        cache, KEY, rate=rate, hold_s=5.0, max_wait_s=max_wait_s, clock=fake.clock, sleep=fake.sleep
    )


def test_without_a_life_safety_step_lately_bulk_steps_never_wait() -> None:
    cache, fake = fakeredis.FakeRedis(), FakeTime()
    bulk = gate(cache, fake)

    assert [bulk.wait_turn() for _ in range(20)] == [0.0] * 20
    assert fake.pauses == []
    assert not bulk.yielding()


def test_after_a_life_safety_step_bulk_steps_start_one_slot_apart() -> None:
    cache, fake = fakeredis.FakeRedis(), FakeTime()
    bulk = gate(cache, fake, rate=5)  # a slot every 200 ms
    bulk.life_safety_seen()

    waits = [bulk.wait_turn() for _ in range(4)]

    # The four calls take a moment of real time between them: each waits its slot less that moment.
    assert waits[0] == 0.0
    for n, waited in enumerate(waits[1:], start=1):
        assert n * 0.2 - 0.1 <= waited <= n * 0.2
    assert fake.pauses == waits[1:]


def test_the_slots_are_the_deployments_not_one_process() -> None:
    cache = fakeredis.FakeRedis()
    one, other = FakeTime(), FakeTime()
    first, second = gate(cache, one, rate=2), gate(cache, other, rate=2)
    first.life_safety_seen()

    assert first.wait_turn() == 0.0
    assert 0.4 <= second.wait_turn() <= 0.5  # the next slot, 500 ms on, though this gate took none


def test_a_step_never_waits_longer_than_the_cap() -> None:
    cache, fake = fakeredis.FakeRedis(), FakeTime()
    bulk = gate(cache, fake, rate=1, max_wait_s=0.3)
    bulk.life_safety_seen()

    assert bulk.wait_turn() == 0.0
    assert bulk.wait_turn() == 0.3  # its slot was a second away
    assert fake.pauses == [0.3]


def test_the_yield_ends_when_no_life_safety_step_ran_for_the_hold() -> None:
    cache, fake = fakeredis.FakeRedis(), FakeTime()
    bulk = BulkGate(cache, KEY, rate=1, hold_s=5.0, clock=fake.clock, sleep=fake.sleep)
    bulk.life_safety_seen()

    ttl_ms = cache.pttl(KEY + ":life-safety")
    assert 4000 < ttl_ms <= 5000
    cache.delete(KEY + ":life-safety")  # the hold ran out
    assert [bulk.wait_turn() for _ in range(3)] == [0.0, 0.0, 0.0]


def test_a_process_refreshes_the_flag_at_most_once_a_second() -> None:
    cache, fake = fakeredis.FakeRedis(), FakeTime()
    bulk = gate(cache, fake)
    bulk.life_safety_seen()
    cache.delete(KEY + ":life-safety")

    fake.now += MARK_EVERY_S / 2
    bulk.life_safety_seen()  # within the second: no command sent
    assert not bulk.yielding()

    fake.now += MARK_EVERY_S
    bulk.life_safety_seen()
    assert bulk.yielding()


def test_a_redis_that_cannot_answer_opens_the_gate() -> None:
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    fake = FakeTime()
    bulk = gate(down, fake)

    bulk.life_safety_seen()  # logged, not raised: the life-safety step goes on
    assert bulk.wait_turn() == 0.0
    assert fake.pauses == []
