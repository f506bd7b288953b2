"""Readiness names what is down; operator calls need a key; errors use one JSON envelope."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient

from app.domain.outbox import RecordingOutbox
from app.web import auth, create_app
from config.settings import Settings

pytestmark = pytest.mark.unit
AUTH = {"Authorization": "Bearer test-operator-key"}


def _down() -> None:
    raise ConnectionError("connection refused")


@pytest.fixture
def outbox() -> RecordingOutbox:
    return RecordingOutbox()


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings], sqlite_url: str, outbox: RecordingOutbox
) -> Iterator[Callable[..., FlaskClient]]:
    apps = []

    def build(ping_broker: Callable[[], None] = lambda: None, **overrides: object) -> FlaskClient:
        values: dict[str, object] = {"database_url": sqlite_url, "operator_api_keys": ("test-operator-key",)}
        values.update(overrides)
        app = create_app(make_settings(**values), outbox=outbox, ping_broker=ping_broker)
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        app.extensions["alarm_bridge"].engine.dispose()


def test_healthz_answers_while_the_process_lives(make_client: Callable[..., FlaskClient]) -> None:
    assert make_client(ping_broker=_down).get("/healthz").json == {"status": "ok"}


def test_readyz_is_200_when_ledger_and_broker_answer(make_client: Callable[..., FlaskClient]) -> None:
    response = make_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"ledger": "ok", "broker": "ok"}


def test_readyz_is_503_naming_the_broker_when_it_is_down(make_client: Callable[..., FlaskClient]) -> None:
    response = make_client(ping_broker=_down).get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["ledger"] == "ok"
    assert response.json["checks"]["broker"].startswith("down")


def test_readyz_is_503_naming_the_ledger_when_it_is_unreachable(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["ledger"].startswith("down")
    assert response.json["checks"]["broker"] == "ok"


def test_readyz_with_no_broker_configured_says_so(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    app = create_app(make_settings(database_url=sqlite_url, redis_url=None))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "REDIS_URL is not set" in response.json["checks"]["broker"]
    app.extensions["alarm_bridge"].engine.dispose()


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic test-operator-key"}]
)
def test_operator_calls_without_a_valid_key_are_401(
    make_client: Callable[..., FlaskClient], outbox: RecordingOutbox, headers: dict[str, str]
) -> None:
    response = make_client().post("/v1/system/selftest", headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert outbox.sent == []


def test_with_no_operator_key_configured_every_operator_call_is_refused(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client(operator_api_keys=())
    assert client.post("/v1/system/selftest", headers={"Authorization": "Bearer "}).status_code == 401


def test_an_operator_key_is_compared_in_constant_time_against_every_configured_key(
    make_client: Callable[..., FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hmac.compare_digest, once per configured key, and no early exit after the match: neither the
    time to answer nor the number of comparisons tells a caller how close a guess came, or which
    key of a rotation it matched."""
    keys = ("test-operator-key", "test-operator-key-next", "test-operator-key-old")
    client = make_client(operator_api_keys=keys)
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # auth.py looks it up on the module at each call
    presented = keys[0].encode()  # the very first key configured

    response = client.get("/v1/alarms", headers=AUTH)

    assert response.status_code == 200  # authorised
    assert compared == [(presented, key.encode()) for key in keys]
    compared.clear()
    assert auth.matches_any(keys[0], keys) is True
    assert compared == [(presented, key.encode()) for key in keys]
    compared.clear()
    assert auth.matches_any("test-operator-kez", keys) is False
    assert len(compared) == len(keys)


def test_selftest_is_committed_then_published_by_name(
    make_client: Callable[..., FlaskClient], outbox: RecordingOutbox
) -> None:
    response = make_client().post("/v1/system/selftest", headers=AUTH, json={"queue": "life_safety"})
    assert response.status_code == 202
    [sent] = outbox.sent
    assert (sent.id, sent.task_name, sent.queue) == (
        response.json["action_id"],
        "system.selftest",
        "life_safety",
    )


def test_a_bad_field_is_422_naming_it(make_client: Callable[..., FlaskClient]) -> None:
    response = make_client().post("/v1/system/selftest", headers=AUTH, json={"queue": "fast", "x": 1})
    assert response.status_code == 422
    assert set(response.json["fields"]) == {"queue", "x"}


def test_malformed_json_is_400(make_client: Callable[..., FlaskClient]) -> None:
    response = make_client().post(
        "/v1/system/selftest", headers={**AUTH, "Content-Type": "application/json"}, data="{nope"
    )
    assert response.status_code == 400
    assert response.json["error"] == "malformed_json"


def test_an_unknown_path_is_a_json_404(make_client: Callable[..., FlaskClient]) -> None:
    response = make_client().get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
