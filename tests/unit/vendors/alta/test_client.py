"""AltaClient's login against a stand-in Alta host that answers ``dologin`` with a redirect.

CONTRACTS Part B §1.2: success is 200, but one client also accepts a 302 and reads its Set-Cookie
with ``redirect: 'manual'``. The simulator answers 200 only, so a tiny Flask app plays such a host:
its 302 carries the ``va`` cookie (or not), and the page it points to sets none.
"""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from flask import Flask, Response, jsonify, redirect, request

from sandbox.server import RunningServer, serve_in_thread
from vendors.alta.client import AltaClient
from workers.clients.errors import UpstreamRejectedError

pytestmark = pytest.mark.unit

COOKIE = "eyJzdWIiOiIxMjM0In0"


def make_host(*, sets_cookie: bool, seen: list[str]) -> Flask:
    """``dologin`` → 302 to ``/landing`` (with ``va`` when ``sets_cookie``); the API needs the cookie."""
    app = Flask("alta-redirecting-login")

    @app.post("/api/v1/dologin")
    def dologin() -> Response:
        seen.append(f"{request.method} {request.path}")
        response = redirect("/landing", code=302)
        if sets_cookie:
            response.set_cookie("va", COOKIE, max_age=3600, httponly=True)
        return response

    @app.route("/landing", methods=["GET", "POST"])
    def landing() -> Response:
        seen.append(f"{request.method} {request.path}")
        return jsonify({})  # a page, and no cookie: what following the redirect would read

    @app.get("/api/v1/ongoingAlerts")
    def ongoing_alerts() -> Response | tuple[Response, int]:
        seen.append(f"{request.method} {request.path}")
        if request.cookies.get("va") != COOKIE:
            return jsonify(message="Unauthorized"), 401
        return jsonify([])

    return app


@pytest.fixture
def seen() -> list[str]:
    return []


def serve(sets_cookie: bool, seen: list[str]) -> Iterator[RunningServer]:
    server = serve_in_thread(make_host(sets_cookie=sets_cookie, seen=seen), port=0)
    yield server
    server.stop()


@pytest.fixture
def cookie_on_redirect(seen: list[str]) -> Iterator[RunningServer]:
    yield from serve(True, seen)


@pytest.fixture
def redirect_without_cookie(seen: list[str]) -> Iterator[RunningServer]:
    yield from serve(False, seen)


def make_client(server: RunningServer, cache: fakeredis.FakeRedis) -> AltaClient:
    return AltaClient(
        server.base_url,
        (2.0, 5.0),
        username="api@example.com",
        password="s3cret",
        cache=cache,
        cookie_key="test:alta:cookie",
    )


def test_a_login_answered_with_a_302_and_the_cookie_logs_in_without_following_it(
    cookie_on_redirect: RunningServer, seen: list[str]
) -> None:
    cache = fakeredis.FakeRedis()
    client = make_client(cookie_on_redirect, cache)

    assert client.ongoing_alerts() == []

    assert seen == ["POST /api/v1/dologin", "GET /api/v1/ongoingAlerts"]  # /landing never asked
    assert cache.get("test:alta:cookie") == COOKIE.encode()
    client.session.close()


def test_a_302_without_the_cookie_is_still_a_refused_login(
    redirect_without_cookie: RunningServer, seen: list[str]
) -> None:
    client = make_client(redirect_without_cookie, fakeredis.FakeRedis())

    with pytest.raises(UpstreamRejectedError) as caught:
        client.ongoing_alerts()

    assert caught.value.status == 302
    assert "without a va cookie" in str(caught.value)
    assert seen == ["POST /api/v1/dologin"]
    client.session.close()
