"""What workers/clients/transport.py overrides inside requests and urllib3 still exists and still runs.

These fail on an upgrade of requests or urllib3 that renames, re-signs or stops calling what the
transport overrides, instead of letting BaseClient silently lose its "was it sent?" report or its
once-per-origin environment cache.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import requests
import requests.sessions
from flask import Flask
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from sandbox.server import RunningServer, serve_in_thread
from workers.clients import transport
from workers.clients.transport import POOL_CLASSES, EnvironmentOnceSession, reports_sent, request_sent

pytestmark = pytest.mark.unit


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults: what a caller relies on (annotations may be strings or not)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (transport._SentHTTPConnection.request, HTTPConnection.request),
        (transport._SentHTTPSConnection.request, HTTPSConnection.request),
    ],
)
def test_the_connection_request_we_override_keeps_its_signature(ours: Any, theirs: Any) -> None:
    assert parameters(ours) == parameters(theirs)


def test_urllib3_pools_still_build_connections_from_connection_cls() -> None:
    assert HTTPConnectionPool.ConnectionCls is HTTPConnection
    assert HTTPSConnectionPool.ConnectionCls is HTTPSConnection
    assert POOL_CLASSES["http"].ConnectionCls is transport._SentHTTPConnection
    assert POOL_CLASSES["https"].ConnectionCls is transport._SentHTTPSConnection
    assert issubclass(transport._SentHTTPSConnection, HTTPSConnection)  # TLS connect kept


def test_init_poolmanager_keeps_its_signature_and_our_pool_classes_are_used() -> None:
    assert [name for name, _, _ in parameters(requests.adapters.HTTPAdapter.init_poolmanager)] == [
        "self",
        "connections",
        "maxsize",
        "block",
        "pool_kwargs",
    ]
    session = EnvironmentOnceSession(pool_maxsize=3)
    adapter = session.get_adapter("http://127.0.0.1:1/")
    manager = adapter.poolmanager  # type: ignore[attr-defined]

    assert manager.pool_classes_by_scheme == dict(POOL_CLASSES)
    # urllib3 still picks a pool class by scheme from that mapping, with the size we asked for.
    pool = manager.connection_from_url("http://127.0.0.1:1/")
    assert type(pool) is POOL_CLASSES["http"]
    assert pool.pool is not None and pool.pool.maxsize == 3
    assert type(manager.connection_from_url("https://127.0.0.1:1/")) is POOL_CLASSES["https"]
    assert reports_sent(session, "https://vendor.example/")
    assert not reports_sent(requests.Session(), "https://vendor.example/")
    session.close()


@pytest.fixture
def upstream() -> Iterator[RunningServer]:
    app = Flask("transport-upstream")

    @app.post("/echo")
    def echo() -> str:
        return "ok"

    server = serve_in_thread(app, port=0)
    yield server
    server.stop()


def test_request_sent_is_reported_once_per_call_from_another_thread_too(upstream: RunningServer) -> None:
    session = EnvironmentOnceSession()
    reported: list[str] = []

    def call() -> None:
        token = request_sent.set(lambda: reported.append("sent"))
        try:
            assert session.post(upstream.base_url + "/echo", data=b"x", timeout=5).text == "ok"
        finally:
            request_sent.reset(token)

    call()
    worker = threading.Thread(target=call)
    worker.start()
    worker.join(10)

    assert reported == ["sent", "sent"]
    session.close()


def test_merge_environment_settings_keeps_its_signature_and_its_keys() -> None:
    assert [name for name, _, _ in parameters(requests.Session.merge_environment_settings)] == [
        "self",
        "url",
        "proxies",
        "stream",
        "verify",
        "cert",
    ]
    merged = requests.Session().merge_environment_settings("https://vendor.example/", {}, None, None, None)
    # Exactly the keys our cached copy hands back to Session.request.
    assert set(merged) == {"proxies", "stream", "verify", "cert"}
    assert callable(requests.sessions.get_environ_proxies)  # what the environment test counts


def test_session_request_still_asks_merge_environment_settings_positionally(upstream: RunningServer) -> None:
    calls: list[tuple[Any, ...]] = []

    class Spy(EnvironmentOnceSession):
        def merge_environment_settings(
            self, url: Any, proxies: MutableMapping[str, str] | None, stream: Any, verify: Any, cert: Any
        ) -> Any:
            calls.append((url, proxies, stream, verify, cert))
            return super().merge_environment_settings(url, proxies, stream, verify, cert)

    session = Spy()
    assert session.post(upstream.base_url + "/echo", timeout=5).text == "ok"
    session.close()

    [(url, _, _, _, _)] = calls
    assert url == upstream.base_url + "/echo"
