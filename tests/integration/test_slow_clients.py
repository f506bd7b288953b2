"""No slow or hostile client can silence intake (issue 14): the Procfile's `web` line, as written,
against PostgreSQL and Redis, with 50 connections idling mid-header and 50 mid-body.

An authenticated event is still answered within 1 s, and the idle connections are closed by the
server within WEB_READ_TIMEOUT_S (plus the poll's margin), without credentials ever being sent.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.polling import wait_until
from tests.processes import procfile_web
from tests.sites_fixture import EXAMPLE_SITES, MONTREAL_ACCOUNT, PANEL_TOKEN, SOURCE_ENV

pytestmark = pytest.mark.integration
READ_TIMEOUT_S = 3
IDLE_EACH = 50


@pytest.fixture
def web(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[str]:
    with procfile_web(
        database_url=postgres_url,
        redis_url=redis_url,
        tmp_path=tmp_path,
        tag="abslow",
        sites=EXAMPLE_SITES,
        WEB_CONCURRENCY="2",  # the Procfile's default
        WEB_READ_TIMEOUT_S=str(READ_TIMEOUT_S),
        **SOURCE_ENV,
    ) as base:
        yield base


def _idle(port: int, partial: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(partial)
    return sock


RECEIVED: dict[int, bytes] = {}


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed (or answered and closed) the connection; keeps what it sent."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65_536)
            if not data:
                return True
            RECEIVED[sock.fileno()] = RECEIVED.get(sock.fileno(), b"") + data
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_idle_connections_mid_header_and_mid_body_do_not_delay_an_event(web: str) -> None:
    port = int(web.rsplit(":", 1)[1])
    mid_header = b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appli"
    mid_body = (
        b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"account": "'
    )
    opened = time.monotonic()
    idle = [_idle(port, mid_header) for _ in range(IDLE_EACH)] + [
        _idle(port, mid_body) for _ in range(IDLE_EACH)
    ]

    body = {
        "account": MONTREAL_ACCOUNT,
        "code": "BA",
        "zone": "3",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    started = time.monotonic()
    answer = requests.Session().post(
        f"{web}/v1/events", json=body, headers={"Authorization": f"Bearer {PANEL_TOKEN}"}, timeout=30
    )
    took = time.monotonic() - started
    assert answer.status_code == 202, answer.text
    assert took < 1.0, f"the event waited {took:.2f}s behind {len(idle)} idle connections"

    # The server closes every idle connection once the read timeout has passed (never before: a
    # slow but live client is not cut off early).
    wait_until(lambda: all(_closed_by_server(s) for s in idle), timeout_s=READ_TIMEOUT_S + 10, interval_s=0.2)
    assert time.monotonic() - opened >= READ_TIMEOUT_S - 0.5
    # A body that stopped arriving is answered 408 before the connection closes; a half-sent head gets
    # nothing (there is no request to answer yet).
    answered = [RECEIVED.get(s.fileno(), b"").split(b"\r\n", 1)[0] for s in idle]
    assert answered[IDLE_EACH:] == [b"HTTP/1.1 408 REQUEST TIMEOUT"] * IDLE_EACH
    assert answered[:IDLE_EACH] == [b""] * IDLE_EACH
    for sock in idle:
        sock.close()
