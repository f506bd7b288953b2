"""What the web process answers to anyone, on both ledgers (issue 16, findings 6 to 8):

- ``/metrics`` refuses a scrape without ``METRICS_TOKEN`` when one is set, and reads the ledger and
  Redis once per ``METRICS_CACHE_S`` per process however many scrapers ask, together or in turn;
- ``/readyz`` names the dependency that is down, never its address or its error text;
- the dashboard's rows fragment refuses parameters it does not take, with a 422 naming them;
- the session cookie is ``Secure`` behind HTTPS, and trusted proxies are believed for exactly as many
  hops as configured;
- every JSON answer, errors included, carries ``nosniff`` and ``no-store``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask, request
from flask.testing import FlaskClient
from sqlalchemy import event

from app.domain.outbox import RecordingOutbox
from app.web import create_app
from config.settings import Settings
from tests.processes import free_port

pytestmark = pytest.mark.integration
KEY = "op-key-for-the-tests"
OP = {"Authorization": f"Bearer {KEY}"}
SECRET_KEY = "a-session-signing-key-for-the-tests-only"
METRICS_TOKEN = "scrape-token-0123456789"
SCRAPERS = 8


@pytest.fixture
def make_app(
    make_settings: Callable[..., Settings], database_url: str, redis_url: str
) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def build(ping_broker: Callable[[], None] | None = lambda: None, **overrides: Any) -> Flask:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": redis_url,
            "broker_key_prefix": f"abhard:{uuid.uuid4().hex[:10]}:",
            "operator_api_keys": (KEY,),
            "secret_key": SECRET_KEY,
        }
        values.update(overrides)
        app = create_app(make_settings(**values), outbox=RecordingOutbox(), ping_broker=ping_broker)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["alarm_bridge"].engine.dispose()


# -- /metrics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
    ],
)
def test_with_a_metrics_token_a_scrape_without_it_is_401(
    make_app: Callable[..., Flask], headers: dict[str, str]
) -> None:
    client = make_app(metrics_token=METRICS_TOKEN).test_client()
    refused = client.get("/metrics", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert "alarm_bridge_" not in refused.text
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert allowed.status_code == 200
    assert "alarm_bridge_open_alarms" in allowed.text


def test_without_a_metrics_token_metrics_stay_open(make_app: Callable[..., Flask]) -> None:
    assert make_app().test_client().get("/metrics").status_code == 200


class ReadCounter:
    """SQL statements an engine runs, and the Redis pipelines executed, while it is installed."""

    def __init__(self, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements = 0
        self.pipelines = 0
        self._lock = threading.Lock()
        event.listen(app.extensions["alarm_bridge"].engine, "before_cursor_execute", self._statement)
        execute = redis.client.Pipeline.execute

        def counted(pipe: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.pipelines += 1
            return execute(pipe, *args, **kwargs)

        monkeypatch.setattr(redis.client.Pipeline, "execute", counted)

    def _statement(self, *_: Any) -> None:
        with self._lock:
            self.statements += 1


def _scrape_together(app: Flask, scrapers: int) -> list[int]:
    """``scrapers`` scrapes released at the same instant, each on its own thread and client."""
    start = threading.Barrier(scrapers)
    statuses: list[int] = []

    def scrape() -> None:
        client = app.test_client()
        start.wait(timeout=30)
        statuses.append(client.get("/metrics").status_code)

    threads = [threading.Thread(target=scrape) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def test_parallel_and_repeated_scrapes_read_the_ledger_and_redis_once_per_interval(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(metrics_cache_s=300)  # far longer than the test: every scrape falls in one interval
    reads = ReadCounter(app, monkeypatch)
    assert _scrape_together(app, SCRAPERS) == [200] * SCRAPERS
    one_read = reads.statements
    assert one_read > 0 and reads.pipelines == 1
    client = app.test_client()
    for _ in range(SCRAPERS):
        text = client.get("/metrics").text
        assert "alarm_bridge_broker_up 1.0" in text and "alarm_bridge_actions{" in text
    assert (reads.statements, reads.pipelines) == (one_read, 1)


def test_without_the_cache_every_scrape_reads_again(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(metrics_cache_s=0)
    reads = ReadCounter(app, monkeypatch)
    client = app.test_client()
    client.get("/metrics")
    one_read = reads.statements
    client.get("/metrics")
    assert (reads.statements, reads.pipelines) == (2 * one_read, 2)


# -- /readyz ----------------------------------------------------------------------------------------


def test_readyz_names_redis_when_it_is_down_but_not_its_address(make_app: Callable[..., Flask]) -> None:
    port = free_port()  # nothing listens there
    app = make_app(ping_broker=None, redis_url=f"redis://:hunter2-password@127.0.0.1:{port}/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["ledger"] == "ok"
    assert response.json["checks"]["broker"].startswith("down: redis")
    for leak in ("127.0.0.1", str(port), "hunter2", "refused", "connecting"):
        assert leak not in response.text


def test_readyz_names_the_ledgers_database_when_it_is_down_but_not_its_address(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(database_url="postgresql+psycopg://nobody:hunter2@127.0.0.1:1/none")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {
        "ledger": "down: postgresql did not answer (OperationalError)",
        "broker": "ok",
    }
    for leak in ("127.0.0.1", ":1", "nobody", "hunter2", "none"):
        assert leak not in response.text


# -- the dashboard's rows fragment ------------------------------------------------------------------


def _signed_in(app: Flask, base_url: str = "http://localhost") -> FlaskClient:
    client = app.test_client()
    response = client.post("/dashboard/login", data={"key": KEY}, base_url=base_url)
    assert response.status_code == 302, response.text
    return client


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"opened_after": "0001-01-01T00:00:00+14:00"}, "opened_after"),
        ({"offset": str(10**30)}, "offset"),
        ({"limit": "0"}, "limit"),
    ],
)
def test_the_rows_fragment_refuses_a_parameter_it_does_not_take_naming_it(
    make_app: Callable[..., Flask], query: dict[str, str], field: str
) -> None:
    client = _signed_in(make_app())
    response = client.get("/dashboard/queue/rows", query_string={"list": "queue", **query})
    assert response.status_code == 422, response.text
    assert list(response.json["fields"]) == [field]
    assert client.get("/dashboard/queue/rows", query_string={"list": "failed"}).status_code == 200


# -- cookies and proxies ----------------------------------------------------------------------------


def _session_cookie(response: Any) -> str:
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    return str(cookie)


def test_behind_https_the_session_cookie_is_secure(make_app: Callable[..., Flask]) -> None:
    app = make_app(preferred_url_scheme="https", trusted_proxy_count=1)
    response = app.test_client().post(
        "/dashboard/login",
        data={"key": KEY},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"},
    )
    assert response.status_code == 302
    assert "; Secure" in _session_cookie(response)


def test_over_plain_http_the_session_cookie_is_not_marked_secure(make_app: Callable[..., Flask]) -> None:
    response = make_app().test_client().post("/dashboard/login", data={"key": KEY})
    assert response.status_code == 302
    assert "Secure" not in _session_cookie(response)


@pytest.mark.parametrize(
    ("proxies", "address", "scheme"),
    [(0, "127.0.0.1", "http"), (1, "203.0.113.9", "https"), (2, "198.51.100.7", "https")],
)
def test_only_the_configured_number_of_proxies_is_believed(
    make_app: Callable[..., Flask], proxies: int, address: str, scheme: str
) -> None:
    app = make_app(trusted_proxy_count=proxies)
    app.add_url_rule("/test/peer", "peer", lambda: {"address": request.remote_addr, "scheme": request.scheme})
    forwarded = {
        "X-Forwarded-For": "192.0.2.66, 198.51.100.7, 203.0.113.9",  # the first is the client's own claim
        "X-Forwarded-Proto": "https,https",
    }
    assert app.test_client().get("/test/peer", headers=forwarded).json == {
        "address": address,
        "scheme": scheme,
    }


# -- headers of JSON answers ------------------------------------------------------------------------


def test_every_json_answer_and_error_is_nosniff_and_no_store(make_app: Callable[..., Flask]) -> None:
    app = make_app()

    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_url_rule("/test/broken", "broken", broken)
    client = app.test_client()
    answers = {
        "list": client.get("/v1/alarms", headers=OP),
        "no key": client.get("/v1/alarms"),
        "invalid": client.get("/v1/alarms?offset=-1", headers=OP),
        "not found": client.get("/v1/alarms/999", headers=OP),
        "no route": client.get("/nowhere"),
        "bug": client.get("/test/broken"),
        "health": client.get("/healthz"),
    }
    assert {name: r.status_code for name, r in answers.items()} == {
        "list": 200,
        "no key": 401,
        "invalid": 422,
        "not found": 404,
        "no route": 404,
        "bug": 500,
        "health": 200,
    }
    for name, response in answers.items():
        assert response.is_json, name
        assert response.headers["X-Content-Type-Options"] == "nosniff", name
        assert response.headers["Cache-Control"] == "no-store", name
    metrics = client.get("/metrics")
    assert metrics.headers["X-Content-Type-Options"] == "nosniff"
