"""DESIGN.md "Act" / STYLE.md anti-pattern 9: a create whose answer is lost is "outcome unknown", never
"unavailable, just send it again". Over real loopback HTTP, through a vendor client's public create
(CallOnAlarm's trigger: every call of it places a phone call).

"Unavailable" means the upstream surely did nothing, so perform() retries blindly; "outcome unknown"
makes the retry (and a later stand-down) treat the first attempt as possibly live: a 911 alert or a
guard's dispatch found or flagged to a person instead of silently doubled. Two answers the vendor may
have acted on before they went wrong:

- an answer that breaks while its body is being read (the connection drops mid-chunk);
- a gateway's 502/504: the proxy gave up waiting, the vendor behind it may still have applied it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from limits.storage import MemoryStorage

from vendors.callonalarm.budget import HourlyBudget
from vendors.callonalarm.client import CallOnAlarmClient
from workers.clients.errors import OutcomeUnknownError, UpstreamUnavailableError

pytestmark = pytest.mark.unit

BROKEN_BODY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'10\r\n{"alertId": "al-'  # the chunk promises 16 bytes; 12 come, then the connection closes
)


def gateway(status: int) -> bytes:
    body = b"<html>upstream timed out</html>"
    return (
        f"HTTP/1.1 {status} Gateway Error\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class ScriptedUpstream:
    """Answers every request with the same raw bytes, then closes; counts the requests it read."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                self._read_request(conn)
                self.requests += 1
                conn.sendall(self.answer)

    @staticmethod
    def _read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            body += conn.recv(65536)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


def client_of(upstream: ScriptedUpstream) -> CallOnAlarmClient:
    return CallOnAlarmClient(
        upstream.base_url,
        (2.0, 5.0),
        api_key="coa-test-key",
        budget=HourlyBudget(MemoryStorage(), per_hour=100),
    )


@pytest.fixture
def scripted() -> Iterator[list[ScriptedUpstream]]:
    started: list[ScriptedUpstream] = []
    yield started
    for upstream in started:
        upstream.close()


def test_a_create_whose_answer_breaks_while_it_is_read_is_outcome_unknown(
    scripted: list[ScriptedUpstream],
) -> None:
    upstream = ScriptedUpstream(BROKEN_BODY)
    scripted.append(upstream)
    client = client_of(upstream)

    with pytest.raises(OutcomeUnknownError):
        client.trigger("1001", "BA", zone="3")
    assert upstream.requests == 1  # it was sent, and not repeated by the client itself
    client.session.close()


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_giving_up_on_a_create_is_outcome_unknown(
    scripted: list[ScriptedUpstream], status: int
) -> None:
    upstream = ScriptedUpstream(gateway(status))
    scripted.append(upstream)
    client = client_of(upstream)

    with pytest.raises(OutcomeUnknownError) as raised:
        client.trigger("1001", "BA", zone="3")
    assert not isinstance(raised.value, UpstreamUnavailableError)
    assert upstream.requests == 1
    client.session.close()


def test_a_gateway_error_on_a_read_is_merely_unavailable(scripted: list[ScriptedUpstream]) -> None:
    """The counterpart: repeating a status poll cannot place a second call."""
    upstream = ScriptedUpstream(gateway(502))
    scripted.append(upstream)
    client = client_of(upstream)

    with pytest.raises(UpstreamUnavailableError):
        client.status("al-1")
    client.session.close()
