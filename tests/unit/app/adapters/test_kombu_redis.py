"""What alarm-bridge relies on in kombu's Redis transport: a kombu upgrade that changes it fails here.

The dispatcher and /metrics count a queue's messages from the Redis lists ``queue_keys`` names, and
every broker connection (producers and the workers' consumers) goes through ``SharedClientChannel``,
which overrides the method kombu asks for a client when it publishes, records a delivery and acks.
"""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from fakeredis import TcpFakeServer
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_transport
from kombu.utils.imports import symbol_by_name

from app.adapters import kombu_redis
from app.adapters.kombu_redis import SharedClientChannel, SharedClientTransport
from app.domain.outbox import make_producer
from config.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def redis_url() -> Iterator[str]:
    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    finally:
        server.shutdown()
        server.server_close()


def _publish(url: str, queue: str, priorities: list[int], prefix: str = "") -> None:
    exchange = Exchange(queue, type="direct")
    options = {"global_keyprefix": prefix} if prefix else {}
    with Connection(url, transport=SharedClientTransport, transport_options=options) as connection:
        producer = connection.Producer()
        for priority in priorities:
            producer.publish(
                {"priority": priority},
                exchange=exchange,
                routing_key=queue,
                declare=[Queue(queue, exchange, routing_key=queue)],
                priority=priority,
            )


def test_a_queue_is_one_list_per_priority_step_named_as_kombu_names_them() -> None:
    assert kombu_redis.PRIORITY_STEPS == (0, 3, 6, 9)
    assert kombu_redis.queue_keys("default", "site-a:") == [
        "site-a:default",
        "site-a:default\x06\x163",
        "site-a:default\x06\x166",
        "site-a:default\x06\x169",
    ]
    bare = object.__new__(kombu_transport.Channel)  # _q_for_pri reads class attributes only
    assert kombu_redis.queue_keys("bulk") == [
        kombu_transport.Channel._q_for_pri(bare, "bulk", step) for step in kombu_transport.PRIORITY_STEPS
    ]


def test_a_message_of_each_priority_waits_in_the_list_queue_keys_names(redis_url: str) -> None:
    _publish(redis_url, "default", list(kombu_redis.PRIORITY_STEPS), prefix="t:")
    client = redis.Redis.from_url(redis_url)
    try:
        assert [client.llen(key) for key in kombu_redis.queue_keys("default", "t:")] == [1, 1, 1, 1]
        assert kombu_redis.waiting_messages(client, ["default", "bulk"], "t:") == {"default": 4, "bulk": 0}
    finally:
        client.close()


def test_an_unreachable_broker_raises_a_redis_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    with pytest.raises(redis.RedisError):
        kombu_redis.waiting_messages(client, ["default"])


def test_the_shared_client_channel_overrides_what_kombu_asks_for_a_client() -> None:
    kombus = inspect.signature(kombu_transport.Channel.conn_or_acquire)
    ours = inspect.signature(SharedClientChannel.conn_or_acquire)
    assert list(kombus.parameters) == list(ours.parameters) == ["self", "client"]
    assert callable(getattr(kombu_transport.Channel, "_create_client", None))
    assert SharedClientTransport.Channel is SharedClientChannel
    assert issubclass(SharedClientTransport, kombu_transport.Transport)


@pytest.fixture
def clients_built(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each client a SharedClientChannel builds (True: kombu's asynchronous one, for BRPOP)."""
    built: list[bool] = []

    def counting(self: SharedClientChannel, asynchronous: bool = False) -> object:
        built.append(asynchronous)
        return kombu_transport.Channel._create_client(self, asynchronous=asynchronous)

    monkeypatch.setattr(SharedClientChannel, "_create_client", counting)
    return built


def test_every_message_is_published_through_one_client(redis_url: str, clients_built: list[bool]) -> None:
    _publish(redis_url, "default", [0, 0, 0])
    assert clients_built.count(False) == 1  # kombu's own channel builds one per message


def test_the_shared_client_transport_is_named_for_redis_only() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://broker.example:6380/0"):
        transport = kombu_redis.broker_transport(url)
        assert transport is not None and symbol_by_name(transport) is SharedClientTransport
    assert kombu_redis.broker_transport("memory://") is None
    assert kombu_redis.broker_transport(None) is None


def test_the_workers_and_the_producers_use_the_shared_client_transport(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:6379/0")
    assert symbol_by_name(make_producer(settings).conf.broker_transport) is SharedClientTransport
    # workers.celery_app reads the environment when it is imported: the Procfile's workers, in a process.
    shown = subprocess.run(
        [sys.executable, "-c", "from workers.celery_app import app; print(app.conf.broker_transport)"],
        env={**os.environ, "REDIS_URL": "redis://127.0.0.1:6379/0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert symbol_by_name(shown) is SharedClientTransport


def _consume_and_ack(url: str, queue: str, count: int, ack_threads: int) -> list[int]:
    """Take ``count`` messages from ``queue`` as a Celery worker does (acknowledged late, from
    ``ack_threads`` pool threads); returns what each carried."""
    received: list[Any] = []
    with Connection(url, transport=SharedClientTransport) as connection:
        exchange = Exchange(queue, type="direct")
        keep = [lambda body, message: received.append(message)]
        with connection.Consumer(Queue(queue, exchange, routing_key=queue), callbacks=keep) as consumer:
            consumer.qos(prefetch_count=count)
            while len(received) < count:
                connection.drain_events(timeout=5)
            with ThreadPoolExecutor(ack_threads) as pool:
                list(pool.map(lambda message: message.ack(), received))
            unacked = consumer.channel.qos.unacked_key
            client = redis.Redis.from_url(url)
            try:
                assert client.hlen(unacked) == 0  # every ack reached Redis
            finally:
                client.close()
    return [message.payload["priority"] for message in received]


def test_a_consumer_records_and_acks_every_message_through_one_client(
    redis_url: str, clients_built: list[bool]
) -> None:
    _publish(redis_url, "default", [0] * 40)
    clients_built.clear()
    assert _consume_and_ack(redis_url, "default", 40, ack_threads=8) == [0] * 40
    assert clients_built.count(False) == 1  # kombu's own channel builds two per message (delivery, ack)


def test_the_shared_client_follows_the_channel_pool_kombu_rebuilds(redis_url: str) -> None:
    with Connection(redis_url, transport=SharedClientTransport) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as again:
            assert first is again and first.connection_pool is channel.pool
        channel._disconnect_pools()  # what kombu does when the connection is lost
        with channel.conn_or_acquire() as rebuilt:
            assert rebuilt is not first and rebuilt.connection_pool is channel.pool
            assert rebuilt.ping()
