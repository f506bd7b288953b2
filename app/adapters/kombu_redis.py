"""kombu's Redis transport as alarm-bridge relies on it: the Redis lists it keeps for each queue, and a
channel that talks to Redis through one client.

kombu keeps one Redis list per queue and priority step (``name``, ``name\\x06\\x163``, ...), under the
deployment's ``global_keyprefix``. The dispatcher reads their lengths to tell a backlog from lost
messages, and ``/metrics`` reports them as queue depths; both read the layout from here, which takes
it from kombu itself. Every process's broker connection, the producers' (web, dispatcher, workers'
follow-ups) and the workers' consumers, goes through ``SharedClientTransport``.
``tests/unit/app/adapters/test_kombu_redis.py`` fails when a kombu upgrade changes any of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis
from celery import Celery
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


class SharedClientChannel(kombu_redis.Channel):
    """kombu's Redis channel, sending its commands through one client instead of building one each time.

    kombu asks ``conn_or_acquire()`` for a client for every message it publishes (``_put``) and, in a
    consumer, twice for every message it takes (recording it as unacknowledged, then the ack). Each
    answer was a new redis-py client, and building one costs ~0.2 ms of CPU (its command table): a
    fifth of every publish on the intake path, and 3-4 % of a worker's CPU per step (py-spy). A
    redis-py client is thread-safe over its connection pool (a pipeline takes a connection of its own),
    so the consumer thread and the pool threads that acknowledge can share it. The client follows the
    channel's pool: kombu drops the pool when the connection is lost, and the next client is built on
    the new one.
    """

    _shared: redis.Redis | None = None  # kombu's client class (prefixed keys), built on first use

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        if client is not None:
            yield client
            return
        shared = self._shared
        if shared is None or shared.connection_pool is not self.pool:
            # kombu's stubs leave it out, but every kombu.transport.redis.Channel has it (the test checks).
            shared = self._shared = self._create_client()  # type: ignore[attr-defined]
        yield shared


class SharedClientTransport(kombu_redis.Transport):
    """The transport of every broker connection of ours: producers and consumers."""

    Channel = SharedClientChannel


def use_shared_client(app: Celery) -> Celery:
    """Point ``app``'s broker connections at ``SharedClientTransport`` when its broker is Redis."""
    transport = broker_transport(app.conf.broker_url)
    if transport is not None:
        app.conf.broker_transport = transport
    return app


def broker_transport(broker_url: str | None) -> str | None:
    """The ``broker_transport`` a Celery app should use for ``broker_url``: ours for Redis, else None
    (kombu picks its own)."""
    if (broker_url or "").startswith(("redis://", "rediss://")):
        return f"{__name__}:{SharedClientTransport.__name__}"
    return None
