"""Reading a JSON request body: 415 for another content type, 400 for malformed JSON, 413 when large.

The size limit is Flask's ``MAX_CONTENT_LENGTH`` (MAX_BODY_BYTES): werkzeug refuses a larger body
before it is read into memory. A NUL character (``\u0000``), which neither PostgreSQL text nor JSONB
can store, is replaced by U+FFFD: a panel that pads a field with NULs still gets its alarm recorded.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request

from app.web.errors import ApiError


def json_object() -> dict[str, Any]:
    """The body as a JSON object, or the right 4xx."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    if b"\\u0000" in raw or b"\x00" in raw:
        body = _without_nul(body)
    return body


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value
