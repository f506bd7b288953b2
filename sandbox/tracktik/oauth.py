"""TrackTik's OAuth2 authorization server: password and refresh grants, bearer checks, the login block.

TrackTik's token endpoint (`POST /rest/oauth2/access_token`, CONTRACTS Part A item 6, Part B §2.1)
behaves like league/oauth2-server, whose `def502…` refresh tokens it issues; this module models that
server without Flask so that `sandbox.tracktik.app` only wires it to HTTP. Every expiry, window and block is
computed from the simulator clock when a request arrives. The choices the documents leave open are
written down in `sandbox.tracktik.app`'s docstring; the league error wording is kept here, in one place.
"""

import base64
import hashlib
import hmac
import json
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.clock import Clock

PASSWORD_GRANT = "password"
REFRESH_GRANT = "refresh_token"

# league/oauth2-server's error descriptions (OAuthServerException), by error type.
INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_GRANT = "invalid_grant"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
ACCESS_DENIED = "access_denied"
TOO_MANY_ATTEMPTS = "too_many_attempts"  # our own: league has no lockout; TrackTik's is undocumented
SERVER_ERROR = "server_error"
DESCRIPTIONS: dict[str, str] = {
    INVALID_REQUEST: (
        "The request is missing a required parameter, includes an invalid parameter value, includes a "
        "parameter more than once, or is otherwise malformed."
    ),
    INVALID_CLIENT: "Client authentication failed",
    UNSUPPORTED_GRANT_TYPE: "The authorization grant type is not supported by the authorization server.",
    ACCESS_DENIED: "The resource owner or authorization server denied the request.",
    TOO_MANY_ATTEMPTS: "Too many failed authentication attempts from this IP address.",
    SERVER_ERROR: "The authorization server encountered an unexpected condition.",
}
BAD_CREDENTIALS = "The user credentials were incorrect."
BAD_REFRESH_TOKEN = "The refresh token is invalid."


class OAuthError(Exception):
    """A refused token request or bearer token, answered with league's error body."""

    def __init__(
        self,
        status: int,
        error: str,
        *,
        description: str | None = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.description = description or DESCRIPTIONS[error]
        self.hint = hint
        self.headers = headers or {}
        super().__init__(self.description)

    def body(self) -> dict[str, Any]:
        """league's JSON: `{error, error_description, hint?, message}`."""
        return oauth_error_body(self.error, self.description, self.hint)


def oauth_error_body(error: str, description: str, hint: str | None = None) -> dict[str, Any]:
    """The error body of league/oauth2-server (`message` repeats the description, as league v5-8 do)."""
    body: dict[str, Any] = {"error": error, "error_description": description}
    if hint:
        body["hint"] = hint
    body["message"] = description
    return body


def oauth_error_type(status: int) -> str:
    """The league error type an injected status on the token endpoint is dressed as."""
    if status == 401:
        return INVALID_CLIENT
    if status == 429:
        return TOO_MANY_ATTEMPTS
    if status >= 500:
        return SERVER_ERROR
    return INVALID_REQUEST


@dataclass(slots=True)
class AccessToken:
    """An issued access token and whom it speaks for."""

    value: str
    client_id: str
    username: str
    employee_id: int
    expires_at: float
    revoked: bool = False


@dataclass(slots=True)
class RefreshToken:
    """An issued refresh token; `used` once it has been exchanged (each works exactly once)."""

    value: str
    client_id: str
    username: str
    employee_id: int
    access_token: str
    expires_at: float
    used: bool = False


@dataclass(slots=True)
class LoginBlock:
    """The auth-endpoint lockout: `failures` failed attempts from one IP within `window_s` block it
    for `block_s` (TrackTik: 40 in under 2 minutes block for 2 hours)."""

    failures: int = 40
    window_s: float = 120.0
    block_s: float = 7200.0
    _recent: dict[str, deque[float]] = field(default_factory=dict)
    _blocked_until: dict[str, float] = field(default_factory=dict)

    def remaining_s(self, ip: str, now: float) -> float | None:
        """Seconds the IP stays blocked, None when it is not blocked."""
        until = self._blocked_until.get(ip)
        if until is None or now >= until:
            self._blocked_until.pop(ip, None)
            return None
        return until - now

    def record_failure(self, ip: str, now: float) -> None:
        """Count one failed attempt; the one that reaches the threshold starts the block."""
        recent = self._recent.setdefault(ip, deque())
        recent.append(now)
        while recent and now - recent[0] >= self.window_s:  # "in under 2 minutes"
            recent.popleft()
        if len(recent) >= self.failures:
            self._blocked_until[ip] = now + self.block_s
            recent.clear()

    def clear(self) -> None:
        """Forget every failure and every block."""
        self._recent.clear()
        self._blocked_until.clear()


class OAuthServer:
    """Issues, refreshes and checks tokens for the configured OAuth clients and users; thread-safe."""

    def __init__(self, settings: Mapping[str, Any], clock: Clock) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.token_ttl_s = _positive(settings, "token_ttl_s", 3600)
        self.refresh_token_ttl_s = _positive(settings, "refresh_token_ttl_s", 30 * 24 * 3600)
        self.block = LoginBlock(
            failures=int(_positive(settings, "login_block_failures", 40)),
            window_s=_positive(settings, "login_block_window_s", 120),
            block_s=_positive(settings, "login_block_s", 7200),
        )
        self.clients: dict[str, str] = {}
        for client in settings.get("clients", []):
            self.clients[str(client["client_id"])] = str(client["client_secret"])
        self.users: dict[str, tuple[str, int]] = {}
        for user in settings.get("users", []):
            self.users[str(user["username"])] = (str(user["password"]), int(user["employee_id"]))
        self._signing_key = secrets.token_bytes(32)
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, RefreshToken] = {}

    def reset(self) -> None:
        """Forget every issued token, failed attempt and block."""
        with self._lock:
            self._access.clear()
            self._refresh.clear()
            self.block.clear()

    def grant(self, params: Mapping[str, str], basic: tuple[str, str] | None, ip: str) -> dict[str, Any]:
        """Answer a token request: the token body, or OAuthError (a 400/401 also counts as a failure).

        Args:
            params: the form (or JSON) fields of the request.
            basic: client id and secret from an HTTP Basic `Authorization` header, if any.
            ip: the caller's address, for the lockout.
        """
        with self._lock:
            now = self._clock.time()
            blocked_s = self.block.remaining_s(ip, now)
            if blocked_s is not None:
                raise OAuthError(
                    429,
                    TOO_MANY_ATTEMPTS,
                    hint=f"This IP address is blocked for {blocked_s:.0f} more seconds.",
                    headers={"Retry-After": str(max(1, int(blocked_s + 0.999)))},
                )
            try:
                return self._grant(params, basic, now)
            except OAuthError as exc:
                if exc.status in (400, 401):
                    self.block.record_failure(ip, now)
                raise

    def authenticate(self, header: str | None) -> AccessToken:
        """The live access token of an `Authorization: Bearer …` header, else OAuthError 401."""
        if not header:
            raise OAuthError(401, ACCESS_DENIED, hint='Missing "Authorization" header')
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        with self._lock:
            token = self._access.get(value) if scheme.lower() == "bearer" else None
            if token is None or self._clock.time() >= token.expires_at:
                raise OAuthError(401, ACCESS_DENIED, hint="Access token could not be verified")
            if token.revoked:
                raise OAuthError(401, ACCESS_DENIED, hint="Access token has been revoked")
            return token

    def _grant(self, params: Mapping[str, str], basic: tuple[str, str] | None, now: float) -> dict[str, Any]:
        grant_type = params.get("grant_type", "")
        if grant_type not in (PASSWORD_GRANT, REFRESH_GRANT):
            raise OAuthError(
                400, UNSUPPORTED_GRANT_TYPE, hint="Check that all required parameters have been provided"
            )
        client_id = self._client(params, basic)
        if grant_type == PASSWORD_GRANT:
            username = _required(params, "username")
            password = _required(params, "password")
            known = self.users.get(username)
            if known is None or not hmac.compare_digest(known[0], password):
                raise OAuthError(400, INVALID_GRANT, description=BAD_CREDENTIALS)
            return self._issue(client_id, username, known[1], now)
        refresh = self._refresh.get(_required(params, "refresh_token"))
        if refresh is None:
            raise OAuthError(
                400, INVALID_GRANT, description=BAD_REFRESH_TOKEN, hint="Cannot decrypt the refresh token"
            )
        if refresh.client_id != client_id:
            raise OAuthError(
                400, INVALID_GRANT, description=BAD_REFRESH_TOKEN, hint="Token is not linked to client"
            )
        if now >= refresh.expires_at:
            raise OAuthError(400, INVALID_GRANT, description=BAD_REFRESH_TOKEN, hint="Token has expired")
        if refresh.used:
            raise OAuthError(400, INVALID_GRANT, description=BAD_REFRESH_TOKEN, hint="Token has been revoked")
        refresh.used = True
        old_access = self._access.get(refresh.access_token)
        if old_access is not None:
            old_access.revoked = True  # league revokes the access token issued with the refresh token
        return self._issue(client_id, refresh.username, refresh.employee_id, now)

    def _client(self, params: Mapping[str, str], basic: tuple[str, str] | None) -> str:
        client_id, client_secret = basic if basic else (params.get("client_id"), params.get("client_secret"))
        if not client_id:
            raise OAuthError(400, INVALID_REQUEST, hint="Check the `client_id` parameter")
        known = self.clients.get(client_id)
        if known is None or not hmac.compare_digest(known, client_secret or ""):
            headers = {"WWW-Authenticate": 'Basic realm="OAuth"'} if basic else None
            raise OAuthError(401, INVALID_CLIENT, headers=headers)
        return client_id

    def _issue(self, client_id: str, username: str, employee_id: int, now: float) -> dict[str, Any]:
        access = AccessToken(
            value=self._jwt(client_id, employee_id, now),
            client_id=client_id,
            username=username,
            employee_id=employee_id,
            expires_at=now + self.token_ttl_s,
        )
        refresh = RefreshToken(
            value="def50200" + secrets.token_hex(256),
            client_id=client_id,
            username=username,
            employee_id=employee_id,
            access_token=access.value,
            expires_at=now + self.refresh_token_ttl_s,
        )
        self._access[access.value] = access
        self._refresh[refresh.value] = refresh
        return {
            "token_type": "Bearer",
            "expires_in": int(self.token_ttl_s),
            "access_token": access.value,
            "refresh_token": refresh.value,
        }

    def _jwt(self, client_id: str, employee_id: int, now: float) -> str:
        """A JWT like league's (its claims are real; the signature is HS256 with a per-run key)."""
        header = {"typ": "JWT", "alg": "HS256"}
        claims = {
            "aud": client_id,
            "jti": secrets.token_hex(40),
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + self.token_ttl_s),
            "sub": str(employee_id),
            "scopes": [],
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(signature)}"


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise OAuthError(400, INVALID_REQUEST, hint=f"Check the `{name}` parameter")
    return value


def _positive(settings: Mapping[str, Any], key: str, default: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"[tracktik] {key} must be a positive number (got {value!r})")
    return float(value)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
