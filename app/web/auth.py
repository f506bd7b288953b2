"""Authentication of callers, in constant time: operator API keys, and each signal source's bearer
token (header or ``?token=``, since Alta can only template a URL and headers) or Standard Webhooks
signature (HMAC-SHA256 over ``id.timestamp.body``, ±5 minutes, several secrets during a rotation).

No endpoint that writes is open without credentials, in any mode: with no operator key configured
every operator call is refused, and with no sources configured every intake call is.

The dashboard signs a browser in with an operator key. The session is kept server-side, in Redis (the
deployment's shared one), under a random id that is all the signed cookie holds; it expires with
PERMANENT_SESSION_LIFETIME. Signing out deletes it, so the cookie stops working wherever it was copied,
and removing the key that signed it in from OPERATOR_API_KEYS signs it out. The operator API takes such
a session only together with an ``X-CSRF-Token`` header equal to the session's own token: a cookie
alone, which another site can make a browser send, is never enough.

Wrong credentials are counted per client address within AUTH_FAILURE_LIMIT (Flask-Limiter's moving
window, on the same Redis), in two budgets. Operator keys, on the sign-in form and as a bearer key on
the operator API (the same keys, so one budget): a client past it gets 429 before its key is even
compared, the right key included, until the window frees; were the right key let through, a guesser
would learn it from the one answer that is not a 429. Source credentials: a valid one is never counted
nor held back (an alarm always gets in), so only a wrong one past the limit gets 429 instead of 401.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

import fakeredis
import redis
import structlog
from flask import Flask, Response, current_app, g, request, session
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse as parse_rate_limit
from limits.errors import StorageError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.domain.events import SourceKind
from app.domain.sites import Sites, Source
from app.web.errors import ApiError, error_response
from app.web.services import services
from config.settings import Settings

log = structlog.get_logger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

CSRF_HEADER = "X-CSRF-Token"
REDIS_TIMEOUT_S = 1  # seconds: a Redis that does not answer must not hold a request
# The two budgets of wrong credentials (the limiter's scopes).
OPERATOR_KEYS = "operator-key"
SOURCE_CREDENTIALS = "source-credential"
_SESSIONS = "alarm_bridge.dashboard_sessions"  # app.extensions: the session store (a Redis client)
_LIMITER = "alarm_bridge.auth_failures"  # app.extensions: the Limiter
_RECORD = "operator_session"  # flask.g: this request's session record, read once


class TooManyFailuresError(ApiError):
    """This client is past AUTH_FAILURE_LIMIT for a kind of credential: 429 with Retry-After."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            429,
            "too_many_requests",
            f"too many wrong credentials from this address; try again in {retry_after_s} s",
        )
        self.retry_after_s = retry_after_s


def init_app(app: Flask, settings: Settings) -> None:
    """Give the app its dashboard session store and its limiter of wrong credentials.

    Both live in REDIS_URL's Redis, so every web process shares them; without REDIS_URL (tests, or a
    web process started alone) both live in this process only.
    """
    options: dict[str, str | int] = {"wrap_exceptions": True}
    if settings.redis_url:
        timeouts = {"socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S}
        store: redis.Redis = redis.Redis.from_url(settings.redis_url, **timeouts)
        storage_uri = settings.redis_url
        if storage_uri.startswith("unix://"):  # how the limits library spells a socket path
            storage_uri = "redis+" + storage_uri
        options.update(timeouts, key_prefix=f"{settings.broker_key_prefix}ab:auth-failures")
    else:
        store = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        storage_uri = "memory://"
    app.extensions[_SESSIONS] = store
    app.extensions[_LIMITER] = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage_uri,
        storage_options=options,
        strategy="moving-window",  # "10 per minute": within any 60 s, not per clock minute
    )
    app.register_error_handler(TooManyFailuresError, _too_many_failures)


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
    dashboard with the session's CSRF token in ``X-CSRF-Token``; 429 while this client is past the
    limit of wrong operator keys (a bearer key is then not looked at)."""

    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        token = bearer_token()
        if token is None:
            if _dashboard_call():
                return view(*args, **kwargs)
            raise ApiError(401, "unauthenticated", "an operator key is required (Authorization: Bearer)")
        refuse_while_over_limit(OPERATOR_KEYS)
        if not matches_any(token, services().settings.operator_api_keys):
            count_failure(OPERATOR_KEYS)
            raise ApiError(401, "unauthenticated", "the operator key is not valid")
        return view(*args, **kwargs)

    return wrapped


# -- dashboard sessions ----------------------------------------------------------------------------


def start_operator_session(key: str) -> bool:
    """Sign this browser in with an operator key; False, and nothing stored, when the key is wrong.

    Raises TooManyFailuresError while this client is past the limit of wrong operator keys (the key is
    then not compared), and ApiError 503 when the session store cannot be reached. Each sign-in gets a
    new session id, and any session this browser had ends.
    """
    refuse_while_over_limit(OPERATOR_KEYS)
    if not matches_any(key, services().settings.operator_api_keys):
        count_failure(OPERATOR_KEYS)
        return False
    end_operator_session()
    session_id = secrets.token_urlsafe(32)
    record = {"key": _key_fingerprint(key), "csrf": secrets.token_urlsafe(32)}
    lifetime = current_app.permanent_session_lifetime
    with _store_errors_unavailable():
        _sessions().set(_record_key(session_id), json.dumps(record), ex=lifetime)
    session.permanent = True  # the cookie expires with the record
    session["sid"] = session_id
    setattr(g, _RECORD, record)
    return True


def end_operator_session() -> None:
    """Sign this browser's session out everywhere: its record goes, so its cookie, copied or not, and
    its CSRF token stop working at once."""
    session_id = session.get("sid")
    if isinstance(session_id, str):
        with _store_errors_unavailable():
            _sessions().delete(_record_key(session_id))
    session.clear()
    g.pop(_RECORD, None)


def has_operator_session() -> bool:
    """True when this browser's session is live and its key is still configured."""
    record = _session_record()
    if record is None:
        return False
    configured = tuple(_key_fingerprint(k) for k in services().settings.operator_api_keys)
    return matches_any(record["key"], configured)


def csrf_token() -> str:
    """The signed-in session's CSRF token ("" when signed out): pages hand it to their scripts."""
    record = _session_record()
    return record["csrf"] if record is not None else ""


def is_valid_csrf(presented: str | None) -> bool:
    """True when ``presented`` is this signed-in session's CSRF token (constant time)."""
    expected = csrf_token()
    if not presented or not expected or not has_operator_session():
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def _session_record() -> dict[str, str] | None:
    """This browser's live session record (read from the store once per request), or None."""
    if _RECORD in g:
        cached: dict[str, str] | None = g.get(_RECORD)
        return cached
    record = None
    session_id = session.get("sid")
    if isinstance(session_id, str):
        try:
            raw = _sessions().get(_record_key(session_id))
            # redis-py types a reply as "maybe awaitable"; this synchronous client gets bytes or None.
            record = _parse_record(raw if isinstance(raw, bytes | str) else None)
        except redis.RedisError as exc:  # signed out while the store is down; /readyz says why
            log.warning("web.session_store_unavailable", error_type=type(exc).__name__)
    setattr(g, _RECORD, record)
    return record


def _parse_record(raw: bytes | str | None) -> dict[str, str] | None:
    if raw is None:
        return None
    record = json.loads(raw)
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("key", "csrf")):
        return None
    return {"key": record["key"], "csrf": record["csrf"]}


def _record_key(session_id: str) -> str:
    # The store holds a hash of the id: a copy of Redis gives no cookie to sign in with.
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    return f"{services().settings.broker_key_prefix}ab:dashboard-session:{digest}"


def _sessions() -> redis.Redis:
    store: redis.Redis = current_app.extensions[_SESSIONS]
    return store


@contextmanager
def _store_errors_unavailable() -> Iterator[None]:
    # Signing in or out while Redis is down is a 503 to retry, never a half-done sign-out.
    try:
        yield
    except redis.RedisError as exc:
        raise ApiError(503, "unavailable", "the session store (Redis) is unavailable; try again") from exc


def _dashboard_call() -> bool:
    # The header is looked at first: API clients without it never touch (or vary on) the session.
    presented = request.headers.get(CSRF_HEADER)
    return presented is not None and is_valid_csrf(presented)


def _key_fingerprint(key: str) -> str:
    # Keyed, so the session store does not hold a hash one could brute-force a weak operator key from.
    secret = services().settings.secret_key.encode()
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


# -- wrong credentials, per client -----------------------------------------------------------------


def refuse_while_over_limit(scope: str) -> None:
    """Raise TooManyFailuresError when this client already used up its wrong credentials of ``scope``."""
    _check_failures(scope, count=False)


def count_failure(scope: str) -> None:
    """Count a wrong credential of this client against ``scope``; past the limit, raise
    TooManyFailuresError (429) instead of letting the caller answer 401."""
    _check_failures(scope, count=True)


def _check_failures(scope: str, *, count: bool) -> None:
    limiter: Limiter = current_app.extensions[_LIMITER]
    item = parse_rate_limit(services().settings.auth_failure_limit)
    client = get_remote_address()
    strategy = limiter.limiter
    try:
        if (strategy.hit if count else strategy.test)(item, client, scope):
            return
        reset_at = strategy.get_window_stats(item, client, scope).reset_time
    except StorageError as exc:  # counting is a defence in depth: the credential check still decides
        log.warning("web.auth_limiter_unavailable", error_type=type(exc.storage_error).__name__)
        return
    retry_after_s = max(1, math.ceil(reset_at - time.time()))
    log.warning("web.auth_failures_limited", scope=scope, client=client, retry_after_s=retry_after_s)
    raise TooManyFailuresError(retry_after_s)


def _too_many_failures(exc: TooManyFailuresError) -> Response:
    response = error_response(exc.status, exc.error, exc.message)
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


# -- signal sources --------------------------------------------------------------------------------

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def authenticate_source(sites: Sites, kind: SourceKind) -> Source:
    """The source this request comes from, proven by a Standard Webhooks signature or a bearer token.

    401 for a missing or wrong credential (429 once this client is past the limit of wrong ones; a
    valid credential is never limited); 403 for a valid credential of a source of another kind (an
    Alta token posting panel events). A signature, when present, is the only credential looked at.
    """
    if request.headers.get("webhook-signature") is not None:
        source = _source_by_signature(sites)
        if source is None:
            count_failure(SOURCE_CREDENTIALS)
            raise ApiError(401, "unauthenticated", "the webhook signature does not verify")
    else:
        token = bearer_token() or request.args.get("token")
        if not token:
            raise ApiError(401, "unauthenticated", "a source credential is required (Authorization: Bearer)")
        source = sites.source_for_token(token)
        if source is None:
            count_failure(SOURCE_CREDENTIALS)
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
