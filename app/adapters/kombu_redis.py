"""kombu's Redis transport as alarm-bridge relies on it: the Redis lists it keeps for each queue, and a
channel that publishes through one client.

kombu keeps one Redis list per queue and priority step (``name``, ``name\\x06\\x163``, ...), under the
deployment's ``global_keyprefix``. The dispatcher reads their lengths to tell a backlog from lost
messages, and ``/metrics`` reports them as queue depths; both read the layout from here, which takes
it from kombu itself. The producers (web, dispatcher, workers' follow-ups) publish through
``PublishingTransport``. ``tests/unit/app/adapters/test_kombu_redis.py`` fails when a kombu upgrade
changes any of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis
from kombu.transport import redis as kombu_redis

# kombu's own values: the priority steps a queue is split into, and the separator in their key names.
PRIORITY_STEPS: tuple[int, ...] = tuple(kombu_redis.PRIORITY_STEPS)
KEY_SEPARATOR: str = kombu_redis.Channel.sep


def queue_keys(queue: str, prefix: str = "") -> list[str]:
    """The Redis lists that hold ``queue``'s messages, one per priority step, in kombu's order."""
    return [prefix + (f"{queue}{KEY_SEPARATOR}{step}" if step else queue) for step in PRIORITY_STEPS]


def waiting_messages(client: redis.Redis, queues: Sequence[str], prefix: str = "") -> dict[str, int]:
    """Messages waiting in each queue, read in one round trip; raises ``redis.RedisError``."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            for key in queue_keys(queue, prefix):
                pipe.llen(key)
        lengths: list[int] = pipe.execute()
    per_queue = len(PRIORITY_STEPS)
    return {queue: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(queues)}


class PublishingChannel(kombu_redis.Channel):
    """kombu's Redis channel, publishing through one client instead of building one per message.

    kombu's ``_put`` asks ``conn_or_acquire()`` for a client on every message. A redis-py client is
    thread-safe over its connection pool; building one costs ~0.2 ms of CPU (its command table),
    which was a fifth of every publish on the intake path.
    """

    _publisher: redis.Redis | None = None  # kombu's client class (prefixed keys), built on first publish

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        if client is not None:
            yield client
            return
        if self._publisher is None:
            # kombu's stubs leave it out, but every kombu.transport.redis.Channel has it (the test checks).
            self._publisher = self._create_client()  # type: ignore[attr-defined]
        yield self._publisher


class PublishingTransport(kombu_redis.Transport):
    """The transport of the producers; consumers keep kombu's own."""

    Channel = PublishingChannel


def producer_transport(broker_url: str | None) -> str | None:
    """The ``broker_transport`` a producer should use for ``broker_url``: ours for Redis, else None
    (kombu picks its own)."""
    if (broker_url or "").startswith(("redis://", "rediss://")):
        return f"{__name__}:{PublishingTransport.__name__}"
    return None
