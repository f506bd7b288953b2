"""Reading a JSON request body: 415 for another content type, 400 for malformed or too deeply nested
JSON, 413 for a body over MAX_BODY_BYTES however it is framed.

Size: werkzeug refuses a ``Content-Length`` above Flask's ``MAX_CONTENT_LENGTH`` before reading, but
a chunked body (no ``Content-Length``) it only *cuts* at the limit, silently: the first
MAX_BODY_BYTES of a larger body would be parsed as if they were all of it. So ``read_body`` lets one
byte more through and refuses the body when that byte arrives.

What a sender can put in valid JSON but the ledger cannot store is normalised here, so that an alarm
is never refused for an oddity outside what identifies it:

- NUL (``\\u0000``), which neither PostgreSQL text nor JSONB can hold, and lone UTF-16 surrogates
  (``\\udc00``, or their bytes), which are not Unicode text at all, become U+FFFD in every string,
  keys included;
- ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON; PostgreSQL refuses them) and numbers too large
  for a float (``1e400``, which Python reads as infinity) are kept as the text the sender wrote;
- integers stay integers whatever their size (both ledgers store them); one of more than 4,300
  digits is refused by Python's parser as malformed (400).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from app.web.errors import ApiError

# Deeper than any alarm body needs (a batch is 3 levels around its events' own fields), and shallow
# enough that every later step (validation, the ledger's JSON encoders) stays far from Python's
# recursion limit.
MAX_JSON_DEPTH = 32
REPLACEMENT = "\ufffd"
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
# In the raw bytes: a NUL, its escape, a surrogate's escape, or a surrogate's own bytes (Python's
# JSON parser lets those through). A match only means "look closer"; most bodies have none.
_MAY_HOLD_UNSTORABLE = re.compile(rb"\x00|\\u0000|\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def read_body() -> bytes:
    """The raw body, read once and cached, or 413 when it is over MAX_BODY_BYTES.

    Call it before anything else reads the body: the signature check (``request.get_data``) then
    sees exactly these bytes.
    """
    limit: int | None = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None:
        # One byte over the limit is let through, so that a longer chunked body is told from one that
        # ends exactly at the limit (werkzeug stops a chunked read at the limit without a word).
        request.max_content_length = limit + 1
    try:
        raw = request.get_data(cache=True)
    except (TimeoutError, ClientDisconnected) as exc:
        # The web worker's socket timeout (config/web_worker.py): the body stopped arriving. werkzeug
        # reports it as a disconnection, whose context is the timeout.
        if not isinstance(exc, TimeoutError) and not isinstance(exc.__context__, TimeoutError):
            raise
        raise ApiError(
            408, "request_timeout", "the body stopped arriving (WEB_READ_TIMEOUT_S); send it again"
        ) from None
    if limit is not None and len(raw) > limit:
        raise RequestEntityTooLarge()
    return raw


def optional_json_object() -> dict[str, Any]:
    """A command's body as :func:`json_object` reads it, or ``{}`` when it has none, however framed.

    (``Content-Length`` alone cannot tell: a chunked body has none.)"""
    if not read_body():
        return {}
    return json_object()


def json_object() -> dict[str, Any]:
    """The body as a JSON object, normalised (module docstring), or the right 4xx."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = read_body()
    try:
        parsed: object = json.loads(raw, parse_constant=_as_text, parse_float=_finite_or_text)
    except RecursionError:
        raise ApiError(400, "malformed_json", _too_deep()) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    body: dict[str, Any] = parsed
    # Cheap first: a body with fewer brackets than the limit cannot be nested deeper than it.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, "malformed_json", _too_deep())
    if _MAY_HOLD_UNSTORABLE.search(raw):
        body = _storable(body)
    return body


def _as_text(constant: str) -> str:
    return constant  # NaN, Infinity, -Infinity: kept as the sender wrote them


def _finite_or_text(literal: str) -> float | str:
    value = float(literal)
    return value if math.isfinite(value) else literal


def _too_deep() -> str:
    return f"the body is nested deeper than {MAX_JSON_DEPTH} levels"


def _depth(value: Any) -> int:
    """How many objects and arrays deep ``value`` goes, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _storable(value: Any) -> Any:
    """``value`` with every NUL and lone surrogate, in keys and values, replaced by U+FFFD."""
    if isinstance(value, str):
        return _UNSTORABLE_TEXT.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value
