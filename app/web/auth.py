"""Authentication of callers, in constant time: operator API keys, and each signal source's bearer
token (header or ``?token=``, since Alta can only template a URL and headers) or Standard Webhooks
signature (HMAC-SHA256 over ``id.timestamp.body``, ±5 minutes, several secrets during a rotation).

No endpoint that writes is open without credentials, in any mode: with no operator key configured
every operator call is refused, and with no sources configured every intake call is.

The dashboard signs a browser in with an operator key and keeps that in Flask's signed session
cookie. The operator API takes such a session only together with an ``X-CSRF-Token`` header equal to
the session's own token: a cookie alone, which another site can make a browser send, is never enough.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import request, session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.domain.events import SourceKind
from app.domain.sites import Sites, Source
from app.web.errors import ApiError
from app.web.services import services

P = ParamSpec("P")
R = TypeVar("R")

CSRF_HEADER = "X-CSRF-Token"


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
    """Refuse the call with 401 unless it carries a configured operator key, or comes from a signed-in
    dashboard with the session's CSRF token in ``X-CSRF-Token``."""

    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        token = bearer_token()
        if token is None:
            if _dashboard_call():
                return view(*args, **kwargs)
            raise ApiError(401, "unauthenticated", "an operator key is required (Authorization: Bearer)")
        if not matches_any(token, services().settings.operator_api_keys):
            raise ApiError(401, "unauthenticated", "the operator key is not valid")
        return view(*args, **kwargs)

    return wrapped


def start_operator_session(key: str) -> bool:
    """Sign this browser in with an operator key; False, and nothing stored, when the key is wrong.

    The session is permanent so that it expires (PERMANENT_SESSION_LIFETIME), and it remembers which
    key signed it in, so removing that key from OPERATOR_API_KEYS signs its sessions out.
    """
    if not matches_any(key, services().settings.operator_api_keys):
        return False
    session.clear()
    session.permanent = True
    session.update(operator=True, csrf=secrets.token_urlsafe(32), key=_key_fingerprint(key))
    return True


def has_operator_session() -> bool:
    """True when this browser signed in with an operator key that is still configured."""
    fingerprint = session.get("key")
    if session.get("operator") is not True or not isinstance(fingerprint, str):
        return False
    configured = tuple(_key_fingerprint(k) for k in services().settings.operator_api_keys)
    return matches_any(fingerprint, configured)


def csrf_token() -> str:
    """The signed-in session's CSRF token ("" when signed out): pages hand it to their scripts."""
    token = session.get("csrf")
    return token if isinstance(token, str) else ""


def is_valid_csrf(presented: str | None) -> bool:
    """True when ``presented`` is this signed-in session's CSRF token (constant time)."""
    expected = csrf_token()
    if not presented or not expected or not has_operator_session():
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def _dashboard_call() -> bool:
    # The header is looked at first: API clients without it never touch (or vary on) the session.
    presented = request.headers.get(CSRF_HEADER)
    return presented is not None and is_valid_csrf(presented)


def _key_fingerprint(key: str) -> str:
    # Keyed, so a cookie (signed, not encrypted) does not carry a hash one could brute-force a weak
    # operator key from.
    secret = services().settings.session_secret.encode()
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def authenticate_source(sites: Sites, kind: SourceKind) -> Source:
    """The source this request comes from, proven by a Standard Webhooks signature or a bearer token.

    401 for a missing or wrong credential; 403 for a valid credential of a source of another kind
    (an Alta token posting panel events). A signature, when present, is the only credential looked at.
    """
    if request.headers.get("webhook-signature") is not None:
        source = _source_by_signature(sites)
        if source is None:
            raise ApiError(401, "unauthenticated", "the webhook signature does not verify")
    else:
        token = bearer_token() or request.args.get("token")
        if not token:
            raise ApiError(401, "unauthenticated", "a source credential is required (Authorization: Bearer)")
        source = sites.source_for_token(token)
        if source is None:
            raise ApiError(401, "unauthenticated", "the source credential is not valid")
    if source.kind != kind:
        raise ApiError(
            403, "forbidden", f"source {source.key!r} is a {source.kind} source; it cannot post here"
        )
    return source


def _source_by_signature(sites: Sites) -> Source | None:
    """The source whose current or rotated-out secret signed this body within ±5 minutes."""
    headers = {name: request.headers.get(name, "") for name in SIGNATURE_HEADERS}
    body = request.get_data(cache=True)
    found: Source | None = None
    for source in sites.sources:
        for secret in source.signing_secrets:
            try:
                Webhook(secret).verify(body, headers, json_parse=False)
            except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError):
                continue
            found = found or source  # keep checking: the time taken does not depend on which matched
    return found
