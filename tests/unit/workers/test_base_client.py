"""BaseClient's error mapping over real loopback HTTP: what each failure becomes for perform().

A tiny Flask app answers with any status and headers asked for, or holds its answer until the test
releases it (a read timeout without sleeping); the CAD simulator's drop fault closes a connection
after the request was sent. Together they pin down the rule of workers/clients/base.py: a request
that may have landed is "outcome unknown" unless repeating it is harmless.
"""

from __future__ import annotations

import email.utils
import importlib.metadata
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from flask import Flask, Response, jsonify, request

from sandbox.cad import create_app as create_cad_app
from sandbox.config import load_config
from sandbox.server import RunningServer, serve_in_thread
from tests.logs import capture_logs
from workers.clients import base
from workers.clients.base import USER_AGENT, BaseClient, EnvironmentOnceSession, step_deadline
from workers.clients.errors import OutcomeUnknownError, UpstreamRejectedError, UpstreamUnavailableError
from workers.clients.transport import Cutoff

pytestmark = pytest.mark.unit

# The held route never answers within it, so it decides nothing but how long those tests take.
SHORT_READ_TIMEOUT_S = 0.3
HOLD_LIMIT_S = 10.0  # the held route gives up by itself if a test forgets to release it
DRIP_INTERVAL_S = 0.2  # /drip sends a byte this often: 60 bytes, 12 s in all


class DemoClient(BaseClient):
    """The smallest concrete client: BaseClient as every vendor client uses it."""

    upstream = "demo"


class RecordingSession(requests.Session):
    """A real session that remembers the keyword arguments of each request."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls.append(kwargs)
        return super().request(method, url, *args, **kwargs)


def make_upstream(release: threading.Event) -> Flask:
    """`/status/<code>`: that status, every query parameter as a response header; `/held`: no answer
    until `release` is set."""
    app = Flask("demo-upstream")

    @app.route("/status/<int:code>", methods=["GET", "POST", "PUT"])
    def status(code: int) -> Response:
        response = jsonify(error=f"status {code}", secret_field="never logged")
        response.status_code = code
        for name, value in request.args.items():
            response.headers[name] = value
        return response

    @app.route("/held", methods=["GET", "POST", "PUT"])
    def held() -> Response:
        release.wait(HOLD_LIMIT_S)
        return jsonify(done=True)

    @app.route("/drip", methods=["GET", "POST"])
    def drip() -> Response:
        """An answer that trickles in: each byte well within any read timeout, the whole far beyond."""
        body = b'{"id": 1, "pad": "' + b"x" * 40 + b'"}'

        def trickle() -> Iterator[bytes]:
            for byte in body:
                if release.wait(DRIP_INTERVAL_S):
                    return
                yield bytes([byte])

        return Response(trickle(), status=201, headers={"Content-Length": str(len(body))})

    return app


@pytest.fixture
def upstream() -> Iterator[RunningServer]:
    release = threading.Event()
    server = serve_in_thread(make_upstream(release), port=0)
    yield server
    release.set()  # let held requests finish so the server stops at once
    server.stop()


@pytest.fixture
def client(upstream: RunningServer) -> Iterator[DemoClient]:
    demo = DemoClient(upstream.base_url + "/", (2.0, 5.0))
    yield demo
    demo.session.close()


@pytest.fixture
def impatient(upstream: RunningServer) -> Iterator[DemoClient]:
    """A client whose read timeout the held route always outlasts."""
    demo = DemoClient(upstream.base_url, (2.0, SHORT_READ_TIMEOUT_S))
    yield demo
    demo.session.close()


def test_a_success_is_returned_as_the_response(client: DemoClient) -> None:
    response = client._request("GET", "/status/200")

    assert response.status_code == 200
    assert response.json()["error"] == "status 200"


def test_every_call_carries_the_connect_and_read_timeout(upstream: RunningServer) -> None:
    session = RecordingSession()
    demo = DemoClient(upstream.base_url, (1.5, 4.0), session)

    demo._request("POST", "/status/201", json={"a": 1})
    demo._request("GET", "/status/200")

    assert [call["timeout"] for call in session.calls] == [(1.5, 4.0), (1.5, 4.0)]
    session.close()


def test_every_call_names_alarm_bridge_and_its_version_as_user_agent(upstream: RunningServer) -> None:
    """requests' own ``python-requests/x`` is refused by some Alta hosts (CONTRACTS Part B §1.2); the
    header is set on the client's session, so a session a test or a caller passes in carries it too."""
    session = RecordingSession()
    demo = DemoClient(upstream.base_url, (1.5, 4.0), session)

    response = demo._request("GET", "/status/200", headers={"Accept": "application/json"})

    version = importlib.metadata.version("alarm-bridge")
    assert response.request.headers["User-Agent"] == f"alarm-bridge/{version}" == USER_AGENT
    assert session.calls[0]["headers"]["Accept"] == "application/json"
    session.close()


def test_without_the_installed_distribution_the_user_agent_still_names_alarm_bridge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert base._version() == base.FALLBACK_VERSION


def test_a_refused_connection_is_unavailable_even_for_a_post() -> None:
    server = serve_in_thread(make_upstream(threading.Event()), port=0)
    base_url = server.base_url
    server.stop()  # nothing listens on that port any more
    demo = DemoClient(base_url, (2.0, 2.0))

    with pytest.raises(UpstreamUnavailableError) as caught:
        demo._request("POST", "/status/201")

    assert caught.value.upstream == "demo"
    assert caught.value.retry_after_s is None
    demo.session.close()


@pytest.fixture
def slams_the_door() -> Iterator[str]:
    """A listener that accepts each connection and resets it at once, reading nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    listener.close()


def test_a_post_cut_off_while_it_was_being_written_is_unavailable_not_unknown(slams_the_door: str) -> None:
    # The connection is reset before the whole request could be written (a body far larger than the
    # socket buffers): the vendor never had it, so the retry needs no reconciliation. Deciding this
    # from the exception's text called it "outcome unknown".
    demo = DemoClient(slams_the_door, (2.0, 2.0))

    with pytest.raises(UpstreamUnavailableError):
        demo._request("POST", "/create", data=b"x" * (32 * 1024 * 1024))
    demo.session.close()


def test_with_a_session_of_its_own_a_failure_after_connecting_counts_as_possibly_sent(
    slams_the_door: str,
) -> None:
    # Only our adapter reports that a request left; without it, the safe reading is "it may have".
    demo = DemoClient(slams_the_door, (2.0, 2.0), session=requests.Session())

    with pytest.raises(OutcomeUnknownError):
        demo._request("POST", "/create", data=b"x" * (32 * 1024 * 1024))
    demo.session.close()


def test_a_read_timeout_on_a_post_leaves_the_outcome_unknown(impatient: DemoClient) -> None:
    with pytest.raises(OutcomeUnknownError):
        impatient._request("POST", "/held", json={"create": "something"})


def test_a_read_timeout_on_a_get_is_merely_unavailable(impatient: DemoClient) -> None:
    with pytest.raises(UpstreamUnavailableError):
        impatient._request("GET", "/held")


def test_a_read_timeout_on_an_idempotent_put_is_merely_unavailable(impatient: DemoClient) -> None:
    with pytest.raises(UpstreamUnavailableError):
        impatient._request("PUT", "/held", idempotent=True, json={"sysId": "x"})


@pytest.fixture
def cad_upstream() -> Iterator[RunningServer]:
    server = serve_in_thread(create_cad_app(load_config()), port=0)
    yield server
    server.stop()


def add_drop_fault(server: RunningServer, session: requests.Session) -> None:
    fault = {"path": "/api/v1/external/incident", "drop": True}
    response = session.post(server.base_url + "/_sandbox/faults", json=fault, timeout=5)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("method", "idempotent", "error"),
    [
        ("PUT", False, OutcomeUnknownError),
        ("PUT", True, UpstreamUnavailableError),
        ("GET", False, UpstreamUnavailableError),
    ],
)
def test_a_connection_dropped_after_sending_is_unknown_unless_repeating_is_harmless(
    cad_upstream: RunningServer, method: str, idempotent: bool, error: type[Exception]
) -> None:
    demo = DemoClient(cad_upstream.base_url, (2.0, 5.0))
    add_drop_fault(cad_upstream, demo.session)

    with pytest.raises(error):
        demo._request(method, "/api/v1/external/incident", idempotent=idempotent, json={"sysId": "x"})
    demo.session.close()


def test_a_503_with_retry_after_seconds_is_unavailable_for_that_long(client: DemoClient) -> None:
    with pytest.raises(UpstreamUnavailableError) as caught:
        client._request("POST", "/status/503", params={"Retry-After": "7"})

    assert caught.value.retry_after_s == 7
    assert "HTTP 503" in str(caught.value)


def test_a_429_with_an_http_date_retry_after_waits_until_that_date(client: DemoClient) -> None:
    until = datetime.now(UTC) + timedelta(seconds=120)
    http_date = email.utils.format_datetime(until, usegmt=True)

    with pytest.raises(UpstreamUnavailableError) as caught:
        client._request("GET", "/status/429", params={"Retry-After": http_date})

    # The date has one-second resolution and some time passes before it is read.
    assert caught.value.retry_after_s is not None
    assert 100 <= caught.value.retry_after_s <= 120


def test_a_429_without_retry_after_uses_the_rate_limit_reset_epoch(client: DemoClient) -> None:
    reset = int(datetime.now(UTC).timestamp()) + 60

    with pytest.raises(UpstreamUnavailableError) as caught:
        client._request("GET", "/status/429", params={"X-RateLimit-Reset": str(reset)})

    assert caught.value.retry_after_s is not None
    assert 40 <= caught.value.retry_after_s <= 60


def test_a_retry_after_beyond_an_hour_is_capped(client: DemoClient) -> None:
    with pytest.raises(UpstreamUnavailableError) as caught:
        client._request("GET", "/status/503", params={"Retry-After": "86400"})

    assert caught.value.retry_after_s == 3600


def test_a_500_without_retry_after_leaves_the_delay_to_the_backoff(client: DemoClient) -> None:
    with pytest.raises(UpstreamUnavailableError) as caught:
        client._request("POST", "/status/500")

    assert caught.value.retry_after_s is None


def test_a_404_is_rejected_with_its_status(client: DemoClient) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        client._request("GET", "/status/404")

    assert caught.value.status == 404
    assert caught.value.upstream == "demo"
    assert "status 404" in str(caught.value)  # the start of the error body, for the action's last_error


def test_an_expected_status_is_returned_to_the_caller(client: DemoClient) -> None:
    response = client._request("GET", "/status/404", expected=(404, 409))

    assert response.status_code == 404


def test_an_expected_status_does_not_hide_other_errors(client: DemoClient) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        client._request("GET", "/status/400", expected=(404,))

    assert caught.value.status == 400


def test_each_call_is_logged_without_query_or_body(client: DemoClient) -> None:
    with capture_logs() as logs:
        client._request("POST", "/status/201?token=abc", json={"password": "hunter2"})

    [entry] = [log for log in logs if log["event"] == "upstream.call"]
    assert entry["upstream"] == "demo"
    assert entry["method"] == "POST"
    assert entry["path"] == "/status/201"
    assert entry["status"] == 201
    assert "hunter2" not in repr(logs)
    assert "abc" not in repr(logs)


def test_the_environment_is_read_once_per_origin_and_still_applies(
    upstream: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/bundle-for-this-test.pem")
    urls = ("https://vendor.example/a", "https://vendor.example/b?x=1", "http://127.0.0.1:9/c")
    expected = [requests.Session().merge_environment_settings(u, {}, None, None, None) for u in urls]
    scans: list[str] = []
    real = requests.sessions.get_environ_proxies

    def counting(url: str, no_proxy: str | None = None) -> dict[str, str]:
        scans.append(url)
        return real(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counting)
    session = EnvironmentOnceSession()

    for _ in range(3):
        assert [session.merge_environment_settings(u, {}, None, None, None) for u in urls] == expected
    assert scans == ["https://vendor.example/a", "http://127.0.0.1:9/c"]  # once per origin
    https = session.merge_environment_settings(urls[0], {}, None, None, None)
    assert https["proxies"]["https"] == "http://proxy.invalid:3128"
    assert https["verify"] == "/etc/ssl/certs/bundle-for-this-test.pem"
    assert session.merge_environment_settings(urls[2], {}, None, None, None)["proxies"] == {}  # NO_PROXY
    https["proxies"]["https"] = "changed by a caller"  # a caller's change never reaches the cache
    assert session.merge_environment_settings(urls[0], {}, None, None, None) == expected[0]
    assert session.merge_environment_settings(urls[0], {}, None, False, None)["verify"] is False
    assert DemoClient(upstream.base_url, (2.0, 5.0)).session.__class__ is EnvironmentOnceSession


# -- the step's deadline (what bounds a step under the thread pool, where Celery enforces no limit) --


def test_a_hung_upstream_holds_a_step_no_longer_than_its_deadline(upstream: RunningServer) -> None:
    """The read timeout alone (10 s) would let it hang; the step has 0.5 s left, and that decides."""
    client = DemoClient(upstream.base_url, (2.0, 10.0))
    token = step_deadline.set(time.monotonic() + 0.5)
    started = time.monotonic()
    try:
        with pytest.raises(OutcomeUnknownError, match="no answer within the timeout"):
            client._request("POST", "/held", json={})  # sent: it may have applied
        with pytest.raises(UpstreamUnavailableError):  # the deadline is spent: not even sent
            client._request("GET", "/status/200")
    finally:
        step_deadline.reset(token)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("method", "error"), [("POST", OutcomeUnknownError), ("GET", UpstreamUnavailableError)]
)
def test_an_answer_that_trickles_in_ends_at_the_steps_deadline(
    upstream: RunningServer, method: str, error: type[Exception]
) -> None:
    """Each byte comes within the read timeout, so only the deadline over the whole call can end it:
    the connection is shut down then (12 s of answer against a 1 s deadline)."""
    client = DemoClient(upstream.base_url, (2.0, 10.0))
    token = step_deadline.set(time.monotonic() + 1.0)
    started = time.monotonic()
    try:
        with pytest.raises(error):  # a POST that was sent may have applied: reconcile before again
            client._request(method, "/drip", json={})
    finally:
        step_deadline.reset(token)
        client.session.close()
    assert time.monotonic() - started < 6.0


class _Conn:
    """What a watch needs of a connection: its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


@pytest.mark.parametrize("released", [False, True])
def test_the_deadline_cuts_a_connection_still_in_use_and_spares_one_released(released: bool) -> None:
    """A call that ended in time releases its watch: its connection, back in the pool, is not cut."""
    ours, theirs = socket.socketpair()
    try:
        cutoff = Cutoff(time.monotonic() + 0.2)
        cutoff.watch(_Conn(ours))  # type: ignore[arg-type]
        if released:
            cutoff.release()
        ours.settimeout(5.0)
        theirs.sendall(b"x")
        assert ours.recv(1) == b"x"
        deadline = time.monotonic() + 5.0
        while not cutoff.fired and not released and time.monotonic() < deadline:
            time.sleep(0.05)  # a bounded poll for the watchdog thread
        if released:
            time.sleep(0.4)  # past the deadline: the watch must stay quiet
            theirs.sendall(b"y")
            assert ours.recv(1) == b"y" and not cutoff.fired
        else:
            assert cutoff.fired
            assert ours.recv(1) == b""  # shut down: a blocked read returns at once
    finally:
        ours.close()
        theirs.close()


def test_a_call_after_the_deadline_is_not_sent(upstream: RunningServer) -> None:
    session = RecordingSession()
    client = DemoClient(upstream.base_url, (2.0, 10.0), session)
    token = step_deadline.set(time.monotonic() - 0.01)
    try:
        with pytest.raises(UpstreamUnavailableError, match="step deadline reached, not sent"):
            client._request("POST", "/status/201", json={})
    finally:
        step_deadline.reset(token)
    assert session.calls == []


def test_each_call_gets_what_is_left_of_the_step_and_no_more(upstream: RunningServer) -> None:
    session = RecordingSession()
    client = DemoClient(upstream.base_url, (2.0, 10.0), session)
    client._request("GET", "/status/200")
    token = step_deadline.set(time.monotonic() + 5.0)
    try:
        client._request("GET", "/status/200")
    finally:
        step_deadline.reset(token)
    without, within = (call["timeout"] for call in session.calls)
    assert without == (2.0, 10.0)
    assert within.connect_timeout == 2.0
    assert 4.0 < within.total <= 5.0 and within.read_timeout <= 5.0


def test_the_session_keeps_as_many_connections_as_steps_run_at_once() -> None:
    session = EnvironmentOnceSession(pool_maxsize=96)
    adapter = session.get_adapter("http://127.0.0.1:1/")
    assert adapter._pool_maxsize == 96  # type: ignore[attr-defined]
    assert adapter.max_retries.total == 0  # retries are perform()'s, never urllib3's


def _recording_upstream(received: list[str]) -> Flask:
    """`/create`: recorded, answered 201; `/slow`: answered after 0.6 s."""
    app = Flask("recording-upstream")

    @app.post("/create")
    def create() -> Response:
        received.append(request.path)
        response = jsonify(id=1)
        response.status_code = 201
        return response

    @app.get("/slow")
    def slow() -> Response:
        time.sleep(0.6)
        return jsonify(done=True)

    return app


def test_a_connection_that_opens_past_the_deadline_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name lookup that takes longer than the step has left (a resolver trying its nameservers in
    turn): no timeout bounds it, and the create must not be written once the deadline has passed,
    when the step's lease may already be another worker's."""
    received: list[str] = []
    server = serve_in_thread(_recording_upstream(received), port=0)
    resolve = socket.getaddrinfo

    def slow_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow-lookup.test":
            time.sleep(1.0)
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    client = DemoClient(f"http://slow-lookup.test:{server.port}", (5.0, 10.0))
    token = step_deadline.set(time.monotonic() + 0.3)
    try:
        with pytest.raises(UpstreamUnavailableError):  # not sent: safe to send again
            client._request("POST", "/create", json={})
    finally:
        step_deadline.reset(token)
        client.session.close()
        server.stop()
    assert received == []


def _keep_alive_server() -> tuple[socket.socket, threading.Thread]:
    """One HTTP/1.1 connection kept open: each request answered 200, ``/slow`` after 0.6 s."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    pending += chunk
                head, pending = pending.split(b"\r\n\r\n", 1)
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                while len(pending) < length:
                    pending += conn.recv(4096)
                pending = pending[length:]
                if b" /slow " in head.split(b"\r\n")[0]:
                    time.sleep(0.6)
                try:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
                    )
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_deadline_left_behind_on_a_pooled_connection_never_cuts_the_next_call() -> None:
    """Call A got its answer just before its deadline; its connection went back to the pool before
    A's thread released its watch. Call B, on the same connection, must not be cut at A's deadline."""
    from workers.clients.transport import _SentHTTPConnection, call_cutoff

    listener, thread = _keep_alive_server()
    conn = _SentHTTPConnection("127.0.0.1", listener.getsockname()[1], timeout=5.0)
    a = Cutoff(time.monotonic() + 0.3)
    token = call_cutoff.set(a)
    try:
        conn.request("POST", "/create", body=b"{}", headers={"Content-Type": "application/json"})
        assert conn.getresponse().data == b"{}"  # A is answered; its thread has not released its watch
        first = conn.sock
        call_cutoff.set(None)  # B, on the same connection, with time to spare
        conn.request("GET", "/slow")
        assert conn.sock is first  # the same kept-alive connection
        answer = conn.getresponse()
        assert (answer.status, answer.data) == (200, b"{}")  # 0.6 s: past A's deadline, not cut by it
        assert not a.fired
    finally:
        call_cutoff.reset(token)
        conn.close()
        listener.close()
        thread.join(5)
