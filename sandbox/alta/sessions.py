"""Alta's login sessions: the `va` cookie, its account, its absolute expiry on the simulated clock.

`POST /api/v1/dologin` hands out a cookie; every other call of the Alta simulator (`sandbox.alta`) looks
its account up here. The value is shaped like the JWT Alta's docs show (`va=eyJ...`) but is opaque:
nothing reads its claims, the simulator only remembers which values it issued, for whom, and until
when. The lifetime is absolute (a call does not extend it), so a test moves the clock past
`cookie_ttl_s` to see the 401 a client must answer by logging in again.
"""

import base64
import json
import secrets
import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Account:
    """A login of the deployment; `permissions` None means every permission."""

    username: str
    password: str
    permissions: frozenset[str] | None

    def may(self, permission: str) -> bool:
        """Whether the account's role grants `permission`."""
        return self.permissions is None or permission in self.permissions


class SessionBook:
    """The `va` cookies handed out, each with its account and absolute expiry; thread-safe."""

    def __init__(self, accounts: list[Account], ttl_s: float) -> None:
        self.accounts = {account.username.lower(): account for account in accounts}
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[Account, float]] = {}

    def reset(self) -> None:
        """Forget every session."""
        with self._lock:
            self._sessions = {}

    def login(self, username: str, password: str, now: float) -> tuple[str, float] | None:
        """A new cookie value and its expiry, or None for wrong credentials."""
        account = self.accounts.get(username.lower())
        if account is None or not secrets.compare_digest(account.password, password):
            return None
        expires_at = now + self.ttl_s
        cookie = _jwt_shaped(account.username, now, expires_at)
        with self._lock:
            self._sessions[cookie] = (account, expires_at)
        return cookie, expires_at

    def account(self, cookie: str | None, now: float) -> Account | None:
        """The account of a cookie that is known and not expired."""
        if not cookie:
            return None
        with self._lock:
            session = self._sessions.get(cookie)
        if session is None or now >= session[1]:
            return None
        return session[0]

    def logout(self, cookie: str) -> None:
        """Invalidate a cookie."""
        with self._lock:
            self._sessions.pop(cookie, None)


def _jwt_shaped(username: str, issued_at: float, expires_at: float) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": username, "iat": int(issued_at), "exp": int(expires_at), "jti": secrets.token_hex(8)}
    return f"{header}.{b64(json.dumps(claims).encode())}.{b64(secrets.token_bytes(32))}"
