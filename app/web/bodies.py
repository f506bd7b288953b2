"""Reading a JSON request body: 415 for another content type, 400 for malformed JSON, 413 when large.

The size limit is Flask's ``MAX_CONTENT_LENGTH`` (MAX_BODY_BYTES): werkzeug refuses a larger body
before it is read into memory.
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
    return body
