"""Fault injection: make the next N matching requests fail the way real upstreams fail.

A `Fault` names which requests it catches (method, path prefix and/or path regex) and how many, and
does exactly one of four things:

- `status`: answer with that status instead of handling the request. The body is the simulator's own
  vendor error body for that status (or the `body` given), with any extra `headers` (`Retry-After`).
- `delay_s`: wait that long, then handle the request normally (a slow upstream). With `delay_max_s`
  too, each caught request waits a time drawn uniformly between the two (the fault's seeded draws):
  a vendor whose latency varies.
- `drop`: close the TCP connection without any response and without handling (the client sees a
  connection error; nothing happened upstream).
- `timeout_after_commit`: handle the request normally, so its state change is made, then send
  nothing: hold the connection for `hold_s` (or until the client hangs up) and close it. A client whose
  read timeout is shorter than `hold_s` sees a read timeout although the upstream did the work, which
  is the case idempotency keys and reconcile-before-retry exist for.

Faults are consumed in order of registration: each matching request takes one use from the oldest
fault that still has uses left.

A fault may apply only sometimes: `probability` p (0 < p <= 1, default 1) makes it catch each matching
request with chance p. The draws come from a `random.Random` of the fault's own, seeded with `seed`
(default: the fault's id), so a run that sends the same requests in the same order sees the same
faults. `count` counts applications, not matching requests: `{"status": 503, "probability": 0.3,
"count": 100}` answers 100 requests with 503, about one in three of the matching ones, then is used
up. There is no "forever" value: for a whole test, give a count larger than the test can use. A
request the fault lets through goes on to the next matching fault (which draws for itself), so two
faults of p1 and p2 on the same requests catch p1 and (1 - p1) * p2 of them.

Dropping a connection needs the socket, which the werkzeug server (`sandbox.server.serve_in_thread`)
exposes as `environ["werkzeug.socket"]`; the simulator wiring in `sandbox.simulator` calls
`drop_connection` / `hold_connection` from a WSGI middleware, outside Flask, because an exception
raised inside Flask would become a 500 answer instead of a dropped connection.
"""

import contextlib
import random
import re
import select
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.types import WSGIEnvironment

DEFAULT_HOLD_S = 30.0

_KINDS = ("status", "delay", "drop", "timeout_after_commit")
_FIELDS = frozenset(
    {
        "method",
        "path",
        "path_regex",
        "count",
        "status",
        "body",
        "headers",
        "delay_s",
        "delay_max_s",
        "drop",
        "timeout_after_commit",
        "hold_s",
        "probability",
        "seed",
    }
)


class FaultDroppedConnectionError(ConnectionAbortedError):
    """Raised through the WSGI server after a fault closed the socket; werkzeug treats it as a drop."""


@dataclass(slots=True)
class Fault:
    """One injected failure; `count` is the number of uses (applications) left.

    Matching: `method` (case-insensitive, None = any), `path` (a prefix of the simulator-relative path,
    None = any) and `path_regex` (searched in that path, None = any) must all match. A matching
    request is then caught with chance `probability`, drawn from a generator seeded with `seed`
    (None: the fault's id, given when it is registered).
    """

    method: str | None = None
    path: str | None = None
    path_regex: str | None = None
    count: int = 1
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float | None = None
    delay_max_s: float | None = None
    drop: bool = False
    timeout_after_commit: bool = False
    hold_s: float = DEFAULT_HOLD_S
    probability: float = 1.0
    seed: int | None = None
    id: int = 0
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _random: random.Random | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chosen = [
            kind
            for kind, on in zip(
                _KINDS,
                (self.status is not None, self.delay_s is not None, self.drop, self.timeout_after_commit),
                strict=True,
            )
            if on
        ]
        if len(chosen) != 1:
            raise ValueError(
                f"a fault needs exactly one of status, delay_s, drop, timeout_after_commit (got {chosen})"
            )
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError("count must be an integer >= 1")
        if (
            isinstance(self.probability, bool)
            or not isinstance(self.probability, int | float)
            or not 0 < self.probability <= 1
        ):
            raise ValueError("probability must be a number > 0 and <= 1")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError("seed must be an integer")
        if self.status is not None and (
            isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 599
        ):
            raise ValueError("status must be an integer HTTP status (100-599)")
        for name in ("delay_s", "delay_max_s", "hold_s"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0
            ):
                raise ValueError(f"{name} must be a number of seconds >= 0")
        if self.delay_max_s is not None and (self.delay_s is None or self.delay_max_s < self.delay_s):
            raise ValueError("delay_max_s needs delay_s, and must not be less than it")
        if not isinstance(self.headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise ValueError("headers must map header names to string values")
        for name in ("method", "path", "path_regex"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        if self.method is not None:
            self.method = self.method.upper()
        if self.path_regex is not None:
            try:
                self._pattern = re.compile(self.path_regex)
            except re.error as exc:
                raise ValueError(f"path_regex does not compile: {exc}") from None

    @classmethod
    def from_json(cls, data: Any) -> "Fault":
        """Build a fault from the JSON body of `POST /_sandbox/faults`; unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault is a JSON object")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        values = dict(data)
        if values.get("headers") is None:
            values.pop("headers", None)
        for flag in ("drop", "timeout_after_commit"):
            if flag in values and not isinstance(values[flag], bool):
                raise ValueError(f"{flag} must be true or false")
        for name in ("hold_s", "probability"):
            if values.get(name) is None:
                values.pop(name, None)
        return cls(**values)

    @property
    def kind(self) -> str:
        """One of "status", "delay", "drop", "timeout_after_commit"."""
        if self.status is not None:
            return "status"
        if self.delay_s is not None:
            return "delay"
        return "drop" if self.drop else "timeout_after_commit"

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with this method and simulator-relative path is caught by this fault."""
        if self.method is not None and self.method != method.upper():
            return False
        if self.path is not None and not path.startswith(self.path):
            return False
        return self._pattern is None or self._pattern.search(path) is not None

    def applies(self) -> bool:
        """Draw whether this matching request is caught (always, at probability 1)."""
        if self.probability >= 1:
            return True
        if self._random is None:
            self._random = random.Random(self.id if self.seed is None else self.seed)
        return self._random.random() < self.probability

    def delay(self) -> float:
        """How long this caught request waits: ``delay_s``, or a draw up to ``delay_max_s``."""
        if self.delay_max_s is None:
            return self.delay_s or 0.0
        if self._random is None:
            self._random = random.Random(self.id if self.seed is None else self.seed)
        return self._random.uniform(self.delay_s or 0.0, self.delay_max_s)

    def to_json(self) -> dict[str, Any]:
        """The fault as listed by `GET /_sandbox/faults`."""
        return {
            "id": self.id,
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "path_regex": self.path_regex,
            "count": self.count,
            "status": self.status,
            "body": self.body,
            "headers": self.headers,
            "delay_s": self.delay_s,
            "delay_max_s": self.delay_max_s,
            "drop": self.drop,
            "timeout_after_commit": self.timeout_after_commit,
            "hold_s": self.hold_s,
            "probability": self.probability,
            "seed": self.seed,
        }


class FaultQueue:
    """The faults registered on one simulator, consumed oldest first; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, fault: Fault) -> Fault:
        """Register a fault behind those already waiting; it gets an `id`."""
        with self._lock:
            fault.id = self._next_id
            self._next_id += 1
            self._faults.append(fault)
            return fault

    def take(self, method: str, path: str) -> Fault | None:
        """Use up one count of the oldest fault matching and catching this request, or return None.

        A probabilistic fault that lets the request through leaves it to the next matching fault.
        """
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path) and fault.applies():
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def pending(self) -> list[Fault]:
        """The faults with uses left, oldest first."""
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        """Forget every fault."""
        with self._lock:
            self._faults.clear()


def drop_connection(environ: WSGIEnvironment) -> FaultDroppedConnectionError:
    """Close the client's TCP connection without a response; return the exception to raise next.

    Shutting the socket down makes the client read end-of-stream before any status line (requests
    raises `ConnectionError`); raising the returned exception out of the WSGI app then tells werkzeug
    the connection is gone, which it handles silently. Without a werkzeug socket (another server,
    Flask's test client) only the exception remains.
    """
    sock = environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # the client may already have gone
            sock.shutdown(socket.SHUT_RDWR)
    return FaultDroppedConnectionError("sandbox fault: connection dropped")


def hold_connection(environ: WSGIEnvironment, hold_s: float) -> None:
    """Keep the connection open and silent for `hold_s`, returning early once the client hangs up.

    Returning early when the client closes its end (after its read timeout) keeps tests fast and lets
    the server stop promptly; the answer is never sent either way.
    """
    deadline = time.monotonic() + hold_s
    sock = environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        threading.Event().wait(hold_s)
        return
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable:
                return
            if sock.recv(1, socket.MSG_PEEK) == b"":
                return  # end of stream: the client gave up
        except OSError:
            return  # reset by the client or already closed
        # The client sent more bytes (it should not); keep silent for the rest of the hold.
        threading.Event().wait(max(0.0, deadline - time.monotonic()))
        return
