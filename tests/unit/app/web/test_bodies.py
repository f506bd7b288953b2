"""Reading JSON bodies (app.web.bodies): the size limit whatever the framing, the depth limit, and the
odd values normalised so that the ledger can store them (issue 16)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.web import errors
from app.web.bodies import MAX_JSON_DEPTH, json_object

pytestmark = pytest.mark.unit
LIMIT = 1024


@pytest.fixture
def client() -> FlaskClient:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = LIMIT
    errors.register(app)

    @app.post("/")
    def echo() -> dict[str, Any]:
        return {"body": json_object()}

    return app.test_client()


def post(client: FlaskClient, raw: bytes, *, chunked: bool = False) -> Any:
    headers = {"Content-Type": "application/json"}
    if not chunked:
        return client.post("/", data=raw, headers=headers)
    # What a WSGI server hands over for a chunked body: no Content-Length, a stream it ends itself.
    return client.post(
        "/",
        input_stream=io.BytesIO(raw),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def padded(size: int) -> bytes:
    return b'{"a": 1}' + b" " * (size - 8)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_413_however_it_is_framed(client: FlaskClient, chunked: bool) -> None:
    response = post(client, padded(LIMIT + 1), chunked=chunked)
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    assert post(client, padded(LIMIT * 3) + b"garbage", chunked=chunked).status_code == 413


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_read_whole(client: FlaskClient, chunked: bool) -> None:
    response = post(client, padded(LIMIT), chunked=chunked)
    assert response.status_code == 200 and response.get_json() == {"body": {"a": 1}}


def test_nan_infinity_and_overflowing_floats_are_kept_as_written(client: FlaskClient) -> None:
    response = post(client, b'{"a": [NaN, Infinity, -Infinity, 1e400, -1e999, 1.5, 10000000000000000000000]}')
    assert response.get_json()["body"] == {
        "a": ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", 1.5, 10**22]
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (rb'{"m": "a\udc00b"}', {"m": "a\ufffdb"}),
        (rb'{"k\ud800": ["\udfff", {"x\u0000": "\u0000"}]}', {"k\ufffd": ["\ufffd", {"x\ufffd": "\ufffd"}]}),
        (b'{"m": "a\xed\xb0\x80b"}', {"m": "a\ufffdb"}),  # a surrogate's own bytes
        (rb'{"m": "\ud83d\ude00 \uDC00"}', {"m": "\U0001f600 \ufffd"}),  # a valid pair is kept
        (rb'{"m": "\\ud800 is text"}', {"m": "\\ud800 is text"}),  # an escaped backslash: no surrogate
    ],
)
def test_unstorable_text_becomes_the_replacement_character(
    client: FlaskClient, raw: bytes, expected: dict[str, Any]
) -> None:
    response = post(client, raw)
    assert response.status_code == 200
    assert response.get_json()["body"] == expected


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 200, 10_000])
def test_nesting_deeper_than_the_limit_is_400(client: FlaskClient, depth: int) -> None:
    raw = b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    client.application.config["MAX_CONTENT_LENGTH"] = 100_000
    response = post(client, raw)
    assert response.status_code == 400
    assert response.get_json()["message"] == f"the body is nested deeper than {MAX_JSON_DEPTH} levels"


def test_nesting_up_to_the_limit_and_many_shallow_brackets_are_read(client: FlaskClient) -> None:
    deepest = b'{"a": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    assert post(client, deepest).status_code == 200
    wide = b'{"a": [' + b", ".join([b"[]"] * 100) + b"]}"
    assert post(client, wide).status_code == 200


def test_an_integer_beyond_pythons_digit_limit_is_malformed_json(client: FlaskClient) -> None:
    client.application.config["MAX_CONTENT_LENGTH"] = 100_000
    response = post(client, b'{"a": ' + b"9" * 5000 + b"}")
    assert response.status_code == 400 and response.get_json()["error"] == "malformed_json"
