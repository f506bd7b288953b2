"""Every request a simulator receives, recorded with its secrets masked, for tests to read back.

Contract tests assert on what a client actually sent (method, path, query, headers, body), and demo
users read the same record over HTTP (`GET /_sandbox/journal`). The journal is shared between server
threads, so it is lock-protected. Secrets are masked when an entry is made, not when it is read, so no
reader (JSON, repr, a failing assertion's message) can ever see them.
"""

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

MASK = "***"

# Header names masked whole (lower case); any name containing one of SECRET_WORDS is masked too.
SECRET_HEADERS = frozenset(
    {"authorization", "authentication", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
SECRET_WORDS = ("token", "secret", "password")
# Query parameters and body fields whose values are masked (lower case).
SECRET_QUERY_KEYS = frozenset(
    {"token", "access_token", "refresh_token", "client_secret", "password", "api_key"}
)
SECRET_BODY_KEYS = frozenset({"password", "client_secret", "refresh_token", "access_token"})

# Auth schemes worth keeping in view: "Bearer ***" still tells a test which scheme the client used.
_AUTH_SCHEME = re.compile(r"^(Bearer|BearerToken|Basic|Token|Digest)\s+\S", re.IGNORECASE)
# Last resort for bodies that are neither JSON nor a form (e.g. truncated JSON): mask by pattern.
_TEXT_SECRETS = re.compile(
    r"""(?P<key>["']?(?:password|client_secret|refresh_token|access_token)["']?\s*[:=]\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^&\s,}]*)""",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One received request. `path` is relative to the simulator (a mount prefix is not included).

    `query` maps each parameter to all its values in order. `body` is the parsed JSON value when the
    body is JSON, otherwise the text (forms re-encoded with secrets masked), or None when empty.
    `status` is the status the simulator produced (also for a `timeout_after_commit` answer that was
    never delivered), None when nothing was produced (a dropped connection). `fault` names the fault
    applied to this request, if any. `seq` numbers the simulator's entries from 1 in arrival order.
    """

    at: datetime
    simulator: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int | None = None
    fault: str | None = None
    seq: int = field(default=0, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The entry as served by `GET /_sandbox/journal`."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "simulator": self.simulator,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "status": self.status,
            "fault": self.fault,
        }


def mask_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Copy headers, masking credentials but keeping an auth scheme word (`Bearer ***`)."""
    masked: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in SECRET_HEADERS or any(word in lower for word in SECRET_WORDS):
            scheme = _AUTH_SCHEME.match(value)
            value = f"{scheme.group(1)} {MASK}" if scheme else MASK
        if name in masked:  # a repeated header: keep every value, as HTTP would join them
            masked[name] = f"{masked[name]}, {value}"
        else:
            masked[name] = value
    return masked


def mask_query(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Group query parameters by name, masking token-like values (Alta's `?token=` and the like)."""
    query: dict[str, list[str]] = {}
    for key, value in pairs:
        query.setdefault(key, []).append(MASK if key.lower() in SECRET_QUERY_KEYS else value)
    return query


def mask_json(value: Any) -> Any:
    """Copy a parsed JSON value, masking secret fields at any depth."""
    if isinstance(value, Mapping):
        return {
            key: MASK if str(key).lower() in SECRET_BODY_KEYS else mask_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask_json(item) for item in value]
    return value


def mask_body(raw: bytes, content_type: str | None) -> Any:
    """Parse and mask a request body: JSON → masked value, form → masked text, other text → pattern-masked."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json") or not media_type:
        try:
            return mask_json(json.loads(text))
        except ValueError:
            pass  # not JSON after all: fall through to text masking
    if media_type == "application/x-www-form-urlencoded":
        pairs = parse_qsl(text, keep_blank_values=True)
        return urlencode([(k, MASK if k.lower() in SECRET_BODY_KEYS else v) for k, v in pairs], safe="*")
    return _TEXT_SECRETS.sub(lambda m: f"{m.group('key')}{MASK}", text)


class Journal:
    """A thread-safe, append-only (until `clear()`) list of `JournalEntry`.

    It keeps the newest `max_entries` (a long demo session must not grow without bound); `seq`
    numbers keep counting, so a gap at the start shows that old entries were let go.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._entries: list[JournalEntry] = []
        self._seq = 0
        self.max_entries = max_entries

    def record(self, entry: JournalEntry) -> JournalEntry:
        """Append an entry (its secrets must already be masked) and return it with its sequence number."""
        with self._lock:
            self._seq += 1
            stored = replace(entry, seq=self._seq)
            self._entries.append(stored)
            if len(self._entries) > self.max_entries:
                del self._entries[: len(self._entries) - self.max_entries]
            return stored

    def complete(self, seq: int, *, status: int | None, fault: str | None = None) -> None:
        """Fill in the outcome of an entry recorded before its request was handled."""
        with self._lock:
            for index in range(len(self._entries) - 1, -1, -1):
                entry = self._entries[index]
                if entry.seq == seq:
                    self._entries[index] = replace(entry, status=status, fault=fault or entry.fault)
                    return

    def entries(self, path_prefix: str | None = None, method: str | None = None) -> list[JournalEntry]:
        """Entries in arrival order, optionally only those whose path starts with a prefix / of a method."""
        with self._lock:
            selected = list(self._entries)
        if path_prefix is not None:
            selected = [e for e in selected if e.path.startswith(path_prefix)]
        if method is not None:
            selected = [e for e in selected if e.method == method.upper()]
        return selected

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
