"""What alarm-bridge relies on in kombu's Redis transport: a kombu upgrade that changes it fails here.

The dispatcher and /metrics count a queue's messages from the Redis lists ``queue_keys`` names, and
the producers publish through ``PublishingChannel``, which overrides the method kombu's ``_put`` asks
for a client.
"""

from __future__ import annotations

import inspect
import socket
import threading
from collections.abc import Iterator

import pytest
import redis
from fakeredis import TcpFakeServer
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_transport
from kombu.utils.imports import symbol_by_name

from app.adapters import kombu_redis
from app.adapters.kombu_redis import PublishingChannel, PublishingTransport

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
    with Connection(url, transport=PublishingTransport, transport_options=options) as connection:
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


def test_the_publishing_channel_overrides_what_kombu_asks_for_a_client() -> None:
    kombus = inspect.signature(kombu_transport.Channel.conn_or_acquire)
    ours = inspect.signature(PublishingChannel.conn_or_acquire)
    assert list(kombus.parameters) == list(ours.parameters) == ["self", "client"]
    assert callable(getattr(kombu_transport.Channel, "_create_client", None))
    assert PublishingTransport.Channel is PublishingChannel
    assert issubclass(PublishingTransport, kombu_transport.Transport)


def test_every_message_is_published_through_one_client(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[bool] = []

    def counting(self: PublishingChannel, asynchronous: bool = False) -> object:
        built.append(asynchronous)
        return kombu_transport.Channel._create_client(self, asynchronous=asynchronous)

    monkeypatch.setattr(PublishingChannel, "_create_client", counting)
    _publish(redis_url, "default", [0, 0, 0])
    assert built.count(False) == 1  # kombu's own channel builds one per message


def test_producers_name_the_publishing_transport_for_redis_only() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://broker.example:6380/0"):
        transport = kombu_redis.producer_transport(url)
        assert transport is not None and symbol_by_name(transport) is PublishingTransport
    assert kombu_redis.producer_transport("memory://") is None
    assert kombu_redis.producer_transport(None) is None
