"""Issue 16, finding 5: dashboard sessions live server-side and end everywhere at sign-out, and wrong
credentials are limited per client address (AUTH_FAILURE_LIMIT) with 429 and Retry-After, while a
valid source's events are never held back.

The limiter runs on each store a deployment can have: in process (no REDIS_URL) and the real Redis
under a private prefix. No test waits for a window to pass: eleven requests take milliseconds, well
inside the minute the limit counts over.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app.domain.outbox import RecordingOutbox
from app.web import create_app
from config.settings import Settings
from tests.integration.test_dev_mode import READY_WITHIN_S, DevStack
from tests.polling import wait_until
from tests.sites_fixture import EXAMPLE_SITES, MONTREAL_ACCOUNT, PANEL_TOKEN, SIGNING_KEY, SOURCE_ENV

pytestmark = pytest.mark.integration
KEY = "hardening-operator-key"
LIMIT = 10  # the default AUTH_FAILURE_LIMIT: "10 per minute"
CSRF = '<meta name="csrf-token" content="'


@pytest.fixture(params=["in-process", "redis"])
def app(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], sqlite_url: str
) -> Iterator[Flask]:
    values: dict[str, Any] = {
        "database_url": sqlite_url,
        "sites_file": str(EXAMPLE_SITES),
        "environ": SOURCE_ENV,
        "operator_api_keys": (KEY,),
    }
    prefix = f"abauth:{uuid.uuid4().hex[:10]}:"
    if request.param == "redis":
        values.update(redis_url=request.getfixturevalue("redis_url"), broker_key_prefix=prefix)
    app = create_app(make_settings(**values), outbox=RecordingOutbox(), ping_broker=lambda: None)
    yield app
    app.extensions["alarm_bridge"].engine.dispose()
    if request.param == "redis":
        client = redis.Redis.from_url(values["redis_url"])
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def client_at(app: Flask, address: str) -> FlaskClient:
    """A browser or script calling from ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def sign_in(client: FlaskClient, key: str = KEY) -> TestResponse:
    return client.post("/dashboard/login", data={"key": key})


def panel_event(client: FlaskClient, token: str = PANEL_TOKEN) -> TestResponse:
    body = {
        "account": MONTREAL_ACCOUNT,
        "code": "BA",
        "zone": "3",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    return client.post("/v1/events", json=body, headers={"Authorization": f"Bearer {token}"})


def assert_limited(response: TestResponse) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "Set-Cookie" not in response.headers


# -- wrong operator keys ---------------------------------------------------------------------------


def test_the_eleventh_wrong_key_at_sign_in_is_429_and_then_even_the_right_key_waits(app: Flask) -> None:
    guesser = client_at(app, "203.0.113.7")
    for _ in range(LIMIT):
        assert sign_in(guesser, "not-the-operator-key").status_code == 401
    limited = sign_in(guesser, "not-the-operator-key")
    assert_limited(limited)
    assert "try again in" in limited.text  # the sign-in page says how long
    # The right key from this address waits out the window too: were it let through, a guesser would
    # learn the key from the one answer that is not a 429.
    assert_limited(sign_in(guesser, KEY))
    assert guesser.get_cookie("session") is None
    # The limit is per address: an operator elsewhere signs in.
    operator = client_at(app, "198.51.100.20")
    assert sign_in(operator).status_code == 302
    assert operator.get("/dashboard/").status_code == 200


def test_wrong_keys_on_the_operator_api_count_with_the_sign_in_form(app: Flask) -> None:
    guesser = client_at(app, "203.0.113.8")
    wrong = {"Authorization": "Bearer not-the-operator-key"}
    for attempt in range(LIMIT):
        answer = guesser.get("/v1/alarms", headers=wrong) if attempt % 2 else sign_in(guesser, "nope")
        assert answer.status_code == 401
    limited = guesser.get("/v1/alarms", headers=wrong)
    assert_limited(limited)
    assert limited.json is not None and limited.json["error"] == "too_many_requests"
    assert_limited(guesser.get("/v1/alarms", headers={"Authorization": f"Bearer {KEY}"}))
    assert_limited(sign_in(guesser))
    elsewhere = client_at(app, "198.51.100.21")
    assert elsewhere.get("/v1/alarms", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_calls_without_a_key_and_right_keys_are_never_counted(app: Flask) -> None:
    client = client_at(app, "203.0.113.9")
    for _ in range(3 * LIMIT):
        assert client.get("/v1/alarms").status_code == 401  # no credential: nothing guessed
        assert client.get("/v1/alarms", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert sign_in(client).status_code == 302


# -- wrong source credentials ----------------------------------------------------------------------


def test_wrong_source_credentials_are_limited_but_a_valid_source_never_is(app: Flask) -> None:
    gateway = client_at(app, "192.0.2.44")  # one gateway: a misconfigured panel beside good ones
    for _ in range(LIMIT):
        assert panel_event(gateway, "not-a-panel-token-at-all").status_code == 401
    assert_limited(panel_event(gateway, "not-a-panel-token-at-all"))
    assert_limited(signed_panel_event(gateway, key=b"w" * 32))  # a wrong signature counts the same
    # Events with a valid credential from the same, limited, address all get in, however many.
    for _ in range(5 * LIMIT):
        assert panel_event(gateway).status_code in (200, 202)
    assert signed_panel_event(gateway).status_code in (200, 202)
    # Sources and operators have budgets of their own: the operator at that address is not held back.
    assert gateway.get("/v1/alarms", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def signed_panel_event(client: FlaskClient, *, key: bytes = SIGNING_KEY) -> TestResponse:
    """A panel event with a Standard Webhooks signature made with ``key``."""
    body = {
        "account": MONTREAL_ACCOUNT,
        "code": "BA",
        "zone": "4",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    raw = json.dumps(body).encode()
    msg_id, ts = f"msg_{uuid.uuid4().hex}", int(time.time())
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + raw, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    return client.post("/v1/events", data=raw, headers=headers)


# -- sessions kept server-side ---------------------------------------------------------------------


def test_a_session_signed_out_in_one_web_process_ends_in_every_other(
    make_settings: Callable[..., Settings], sqlite_url: str, redis_url: str
) -> None:
    prefix = f"abauth:{uuid.uuid4().hex[:10]}:"
    settings = make_settings(
        database_url=sqlite_url, redis_url=redis_url, broker_key_prefix=prefix, operator_api_keys=(KEY,)
    )
    one, other = (create_app(settings, outbox=RecordingOutbox(), ping_broker=lambda: None) for _ in "ab")
    store = redis.Redis.from_url(redis_url)
    try:
        browser = one.test_client()
        assert sign_in(browser).status_code == 302
        page = browser.get("/dashboard/").text
        token = page.split(CSRF, 1)[1].split('"', 1)[0]
        cookie = browser.get_cookie("session")
        assert cookie is not None
        # The record lives in the shared Redis, for one shift at most; the cookie holds only its id.
        records = list(store.scan_iter(match=f"{prefix}ab:dashboard-session:*"))
        assert len(records) == 1
        assert 0 < store.ttl(records[0]) <= 12 * 3600
        assert KEY.encode() not in store.get(records[0])  # type: ignore[operator]

        copy = other.test_client()  # the same cookie, served by another worker or host
        copy.set_cookie("session", cookie.value)
        assert copy.get("/dashboard/").status_code == 200
        assert copy.post("/dashboard/logout", data={"csrf": token}).status_code == 302

        assert list(store.scan_iter(match=f"{prefix}ab:dashboard-session:*")) == []
        assert browser.get("/dashboard/").status_code == 302
        assert browser.get("/v1/alarms", headers={"X-CSRF-Token": token}).status_code == 401
    finally:
        for app in (one, other):
            app.extensions["alarm_bridge"].engine.dispose()
        keys = list(store.scan_iter(match=f"{prefix}*"))
        if keys:
            store.delete(*keys)
        store.close()


def test_with_redis_down_sign_in_is_a_503_and_wrong_keys_are_still_401(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        down = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    settings = make_settings(
        database_url=sqlite_url,
        redis_url=down,
        operator_api_keys=(KEY,),
        sites_file=str(EXAMPLE_SITES),
        environ=SOURCE_ENV,
    )
    app = create_app(settings, outbox=RecordingOutbox(), ping_broker=lambda: None)
    try:
        client = app.test_client()
        # Counting is a defence in depth: without its store the credential check alone decides.
        for _ in range(LIMIT + 2):
            assert sign_in(client, "not-the-operator-key").status_code == 401
            assert panel_event(client, "not-a-panel-token-at-all").status_code == 401
        signing_in = sign_in(client)
        assert signing_in.status_code == 503, signing_in.text  # no session it could not keep
        assert client.get_cookie("session") is None
        assert client.get("/dashboard/").status_code == 302
        assert panel_event(client).status_code == 202  # alarms still get in
    finally:
        app.extensions["alarm_bridge"].engine.dispose()


# -- `alarm-bridge dev` -----------------------------------------------------------------------------


def test_dev_runs_without_a_secret_key_and_its_dashboard_signs_in_and_out(tmp_path: Path) -> None:
    """`make run` needs no configuration: `dev` makes up a SECRET_KEY; the sessions and the limiter
    live in its embedded broker (fakeredis's TCP server here, the store with the least behind it)."""
    stack = DevStack(tmp_path, "fakeredis")
    try:
        wait_until(stack.ready, timeout_s=READY_WITHIN_S, interval_s=0.2)
        login = f"{stack.base}/dashboard/login"
        with requests.Session() as browser:
            signed_in = browser.post(
                login, data={"key": "dev-operator-key"}, allow_redirects=False, timeout=10
            )
            assert signed_in.status_code == 302, signed_in.text
            page = browser.get(f"{stack.base}/dashboard/", allow_redirects=False, timeout=10)
            assert page.status_code == 200
            token = page.text.split(CSRF, 1)[1].split('"', 1)[0]
            cookie = browser.cookies.get("session")
            browser.post(f"{stack.base}/dashboard/logout", data={"csrf": token}, timeout=10)
        with requests.Session() as thief:  # the cookie, copied before the sign-out
            thief.cookies.set("session", cookie or "")
            stolen = thief.get(f"{stack.base}/dashboard/", allow_redirects=False, timeout=10)
        assert stolen.status_code == 302
        with requests.Session() as guesser:
            answers = [guesser.post(login, data={"key": f"guess-{n}"}, timeout=10) for n in range(LIMIT + 1)]
        assert [a.status_code for a in answers] == [401] * LIMIT + [429]
        assert int(answers[-1].headers["Retry-After"]) >= 1
    finally:
        stack.stop()
