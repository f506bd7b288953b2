"""The outbox never fails a caller whose rows are committed, and leaves unsent work to the dispatcher."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from fakeredis import TcpFakeServer

from app.domain.actions import DueAction, new_action
from app.domain.outbox import Outbox, make_producer
from app.ledger.models import Action
from app.ledger.session import make_engine, make_sessionmaker
from config.settings import Settings

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dead_broker_marks_actions_unsent_instead_of_raising(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        action = new_action(
            kind="system.selftest",
            target="system",
            queue="default",
            due_at=now,
            max_attempts=3,
            enqueued=True,
        )
        session.add(action)
        session.flush()
        action_id = action.id
    settings = Settings(database_url=sqlite_url, redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    outbox = Outbox(make_producer(settings), sessions)
    assert outbox.publish([DueAction(action_id, "system.selftest", "default")]) == [action_id]
    with sessions() as session:
        assert session.get_one(Action, action_id).enqueued_at is None
    engine.dispose()


@contextmanager
def _fake_redis_server(port: int = 0) -> Iterator[tuple[str, redis.Redis]]:
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"redis://127.0.0.1:{server.server_address[1]}/0"
    client = redis.Redis.from_url(url)
    try:
        yield url, client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def _messages(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def test_each_due_action_is_one_message_on_its_queue_and_nothing_else(sqlite_url: str) -> None:
    """One LPUSH per action: no "task-sent" event beside it (it doubled the intake path's publish)."""
    with _fake_redis_server() as (url, client):
        settings = Settings(database_url=sqlite_url, redis_url=url, broker_key_prefix="t:")
        listener = client.pubsub()
        listener.psubscribe("*")
        outbox = Outbox(make_producer(settings))
        due = [
            DueAction(7, "tracktik.create_alarm", "default"),
            DueAction(8, "rapidsos.create_alert", "life_safety"),
        ]
        assert outbox.publish(due) == []
        assert outbox.publish([DueAction(9, "cad.upload_incident", "default")]) == []

        assert sorted(k.decode() for k in client.keys("t:*") if b"binding" not in k) == [
            "t:default",
            "t:life_safety",
        ]
        sent = _messages(client, "t:default")[::-1] + _messages(client, "t:life_safety")
        assert [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[1]) for m in sent] == [
            ("tracktik.create_alarm", {"action_id": 7}),
            ("cad.upload_incident", {"action_id": 9}),
            ("rapidsos.create_alert", {"action_id": 8}),
        ]
        heard = list(iter(lambda: listener.get_message(timeout=0.2), None))
        published = [m["channel"] for m in heard if m and m["type"] == "pmessage"]
        # Newer fakeredis also reports keyspace notifications (kombu's binding SADDs); those are not
        # messages anyone publishes, a task-sent event would be.
        assert [c for c in published if not c.startswith((b"__keyspace@", b"__keyevent@"))] == []
        listener.close()


def test_the_shared_publishing_client_survives_a_broker_restart(sqlite_url: str) -> None:
    """The producer keeps one Redis client; a restarted broker must still receive the next message."""
    with _fake_redis_server() as (url, client):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        outbox = Outbox(make_producer(Settings(database_url=sqlite_url, redis_url=url)))
        assert outbox.publish([DueAction(1, "tracktik.create_alarm", "default")]) == []
        assert client.llen("default") == 1
    with _fake_redis_server(port) as (_, client):  # the same address, empty (no persistence)
        assert outbox.publish([DueAction(2, "tracktik.create_alarm", "default")]) == []
        [message] = _messages(client, "default")
        assert json.loads(base64.b64decode(message["body"]))[1] == {"action_id": 2}


@contextmanager
def _silent_peer_proxy(upstream: tuple[str, int]) -> Iterator[tuple[str, threading.Event]]:
    """A TCP proxy to ``upstream``; once the event is set it forwards nothing more (a half-open peer:
    a broker that failed over, a NAT entry dropped), without closing anything."""
    frozen, stopped = threading.Event(), threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    opened: list[socket.socket] = []

    def pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while frozen.is_set() and not stopped.is_set():
                    stopped.wait(0.05)
                if stopped.is_set():
                    return
                target.sendall(data)
        except OSError:
            return

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(upstream)
            opened.extend((client, server))
            threading.Thread(target=pump, args=(client, server), daemon=True).start()
            threading.Thread(target=pump, args=(server, client), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0", frozen
    finally:
        stopped.set()
        listener.close()
        acceptor.join(5)
        for sock in opened:
            sock.close()


def test_a_broker_gone_silent_fails_the_publish_within_the_socket_timeout(sqlite_url: str) -> None:
    """A publish on a connection whose peer went silent must fail (so the rows go back to the next
    dispatcher tick), not hang: kombu's default waits forever."""
    from config.celery import BROKER_SOCKET_TIMEOUT_S

    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        rows = [
            new_action(kind="rapidsos.create_alert", target="rapidsos", queue="life_safety",
                       due_at=datetime.now(UTC), max_attempts=3, enqueued=True)
            for _ in range(2)
        ]  # fmt: skip
        session.add_all(rows)
        session.flush()
        first, second = (row.id for row in rows)
    broker = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    broker.daemon_threads = True
    threading.Thread(target=broker.serve_forever, daemon=True).start()
    try:
        with _silent_peer_proxy(broker.server_address) as (url, frozen):  # type: ignore[arg-type]
            outbox = Outbox(make_producer(Settings(database_url=sqlite_url, redis_url=url)), sessions)
            assert outbox.publish([DueAction(first, "rapidsos.create_alert", "life_safety")]) == []
            frozen.set()
            done: list[list[int]] = []
            publishing = threading.Thread(
                target=lambda: done.append(
                    outbox.publish([DueAction(second, "rapidsos.create_alert", "life_safety")])
                ),
                daemon=True,
            )
            publishing.start()
            publishing.join(BROKER_SOCKET_TIMEOUT_S * 4)
            assert not publishing.is_alive(), "the publish hung on a silent broker"
            assert done == [[second]]  # failed: handed back to the dispatcher
        with sessions() as session:
            assert session.get_one(Action, second).enqueued_at is None
    finally:
        broker.shutdown()
        broker.server_close()
        engine.dispose()
