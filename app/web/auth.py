"""Authentication of callers: operator API keys (bearer), compared in constant time.

No endpoint that writes is open without credentials, in any mode: with no operator key configured
every operator call is refused.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import request

from app.web.errors import ApiError
from app.web.services import services

P = ParamSpec("P")
R = TypeVar("R")


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def matches_any(presented: str, accepted: tuple[str, ...]) -> bool:
    """Constant-time comparison against every accepted secret (no early exit on a match)."""
    found = False
    for secret in accepted:
        found |= hmac.compare_digest(presented.encode(), secret.encode())
    return found


def require_operator(view: Callable[P, R]) -> Callable[P, R]:
    """Refuse the call with 401 unless it carries a configured operator key."""

    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        token = bearer_token()
        if token is None:
            raise ApiError(401, "unauthenticated", "an operator key is required (Authorization: Bearer)")
        if not matches_any(token, services().settings.operator_api_keys):
            raise ApiError(401, "unauthenticated", "the operator key is not valid")
        return view(*args, **kwargs)

    return wrapped
