"""What the clients override inside requests and urllib3, kept in this one module.

Two overrides, each pinned by ``tests/unit/workers/clients/test_transport.py`` so that an upgrade of
requests or urllib3 that breaks them fails a test instead of silently changing behaviour:

- ``_Adapter`` swaps urllib3's connection classes for ones that report when a request has been
  written to the socket (``request_sent``). That report, not an exception's text, is how BaseClient
  tells "never sent" from "sent, answer lost".
- ``EnvironmentOnceSession.merge_environment_settings`` caches requests' scan of the process
  environment (proxies, CA bundle) per origin.

And one addition: the same connections hand themselves to ``call_cutoff``, the current call's
deadline, which shuts their socket down if the call is still running then. urllib3's timeouts bound
each socket operation, not the whole exchange: an answer that trickles in a few bytes at a time (a
broken proxy, a hostile upstream) would otherwise outlive the step's deadline and its lease.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError

if TYPE_CHECKING:  # names that exist only in the type stubs
    from requests.sessions import _Settings
    from urllib3._base_connection import _TYPE_BODY

log = structlog.get_logger(__name__)

# Connections kept per upstream host: at least as many as the steps a worker process runs at once,
# or urllib3 would drop (and reopen) a connection after every call beyond its pool.
DEFAULT_POOL_MAXSIZE = 64
# Called once the current call's request (headers and body) has been written to the socket, before its
# answer is read: what must happen only after a request has left (the 911 request goes first).
request_sent: ContextVar[Callable[[], None] | None] = ContextVar("request_sent", default=None)


class _Watch:
    """One connection watched for one call."""

    __slots__ = ("conn", "cutoff", "done", "lock", "sock")

    def __init__(self, conn: HTTPConnection, cutoff: Cutoff) -> None:
        self.conn, self.cutoff, self.done = conn, cutoff, False
        # The socket the answer is read from, once the request has left: a connection that will close
        # after this answer lets go of it (``conn.sock`` is None) while the answer still reads from it.
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()  # a cut and the end of the watch never interleave

    def end(self) -> None:
        with self.lock:
            self.done = True

    def cut(self) -> None:
        with self.lock:
            if self.done:  # the call is over, or its connection already serves another call
                return
            sock = self.sock or self.conn.sock
            if sock is None:
                return
            self.cutoff.fired = True
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)  # the call's blocked read or write returns at once


class _Watchdog:
    """One thread per process for every call's deadline (not a timer thread per call)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, at: float, watch: _Watch) -> None:
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._order), watch))
            if self._thread is None or not self._thread.is_alive():  # first use, or a forked child
                self._thread = threading.Thread(target=self._run, name="call-cutoff", daemon=True)
                self._thread.start()
            if self._heap[0][2] is watch:  # a new earliest deadline; else the thread sleeps on
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, watch = heapq.heappop(self._heap)
                    if not watch.done:
                        watch.cut()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()


class Cutoff:
    """One call's deadline (a ``time.monotonic()`` value) over the connections it uses."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.fired = False  # a connection was shut down at the deadline
        self._watches: list[_Watch] = []

    def watch(self, conn: HTTPConnection) -> _Watch:
        watch = _Watch(conn, self)
        self._watches.append(watch)
        _WATCHDOG.watch(self.at, watch)
        return watch

    def release(self) -> None:
        """The call is over: its connections (back in the pool, or closed) are no longer watched."""
        for watch in self._watches:
            watch.end()


# The current call's deadline, set by BaseClient around each request.
call_cutoff: ContextVar[Cutoff | None] = ContextVar("call_cutoff", default=None)


def _notify_sent() -> None:
    callback = request_sent.get()
    if callback is None:
        return
    request_sent.set(None)  # once per call, even if urllib3 sends again on a fresh connection
    try:
        callback()
    except Exception as exc:  # noqa: BLE001 - never let it fail the request that has left
        log.warning("upstream.request_sent_hook_failed", error=type(exc).__name__)


class _SentHTTPConnection(HTTPConnection):
    # urllib3 itself overrides http.client's request() with this signature (and the same ignore).
    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        body: _TYPE_BODY | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        chunked: bool = False,
        preload_content: bool = True,
        decode_content: bool = True,
        enforce_content_length: bool = True,
    ) -> None:
        # A connection back in the pool may still be watched for the call that used it last (its
        # thread has not reached its release yet): that watch ends here, so its deadline can never
        # shut this call's socket.
        previous: _Watch | None = getattr(self, "_bridge_watch", None)
        if previous is not None:
            previous.end()
        cutoff = call_cutoff.get()
        # Writing the request and reading its answer, both end by the deadline.
        watch = cutoff.watch(self) if cutoff is not None else None
        self._bridge_watch = watch
        super().request(
            method,
            url,
            body,
            headers,
            chunked=chunked,
            preload_content=preload_content,
            decode_content=decode_content,
            enforce_content_length=enforce_content_length,
        )
        if watch is not None:
            watch.sock = self.sock
        _notify_sent()

    def connect(self) -> None:
        """Open the connection (name lookup, TCP, then TLS for HTTPS), then check the call's deadline.

        No timeout bounds a name lookup (a resolver trying its nameservers in turn), and a watch has
        no socket to shut down before this: a call that got past the step's deadline here sends
        nothing (the step's lease may be another worker's by now), and says it was not sent.
        """
        super().connect()
        cutoff = call_cutoff.get()
        if cutoff is not None and time.monotonic() >= cutoff.at:
            self.close()
            raise ConnectTimeoutError(self, "the step's deadline passed while connecting; nothing was sent")


class _SentHTTPSConnection(_SentHTTPConnection, HTTPSConnection):
    """TLS first (HTTPSConnection), then the same report once the request is written."""


class _SentHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _SentHTTPConnection


class _SentHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _SentHTTPSConnection


POOL_CLASSES: Mapping[str, type[HTTPConnectionPool]] = {
    "http": _SentHTTPConnectionPool,
    "https": _SentHTTPSConnectionPool,
}


class _Adapter(HTTPAdapter):
    """requests' adapter whose connections tell ``request_sent`` when a request has left."""

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: object
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(POOL_CLASSES)


def reports_sent(session: requests.Session, url: str) -> bool:
    """Whether requests to ``url`` go through our adapter, whose connections report a sent request."""
    return isinstance(session.get_adapter(url), _Adapter)


class EnvironmentOnceSession(requests.Session):
    """A ``requests.Session`` that works out the environment's proxies and CA bundle once per origin
    and settings, not on every call.

    requests scans the whole process environment for proxy variables on each request, about a third
    of its own CPU per call (measured). The environment of a running process does not change, so the
    answer for one origin (scheme and host: ``no_proxy`` is decided per host) and the same settings
    is the same every time; requests still computes it, once.
    """

    def __init__(self, pool_maxsize: int = DEFAULT_POOL_MAXSIZE) -> None:
        super().__init__()
        self._environment: dict[tuple[Hashable, ...], _Settings] = {}
        # One pool per host, sized for the steps in flight; retries are ours, never urllib3's.
        adapter = _Adapter(pool_connections=8, pool_maxsize=pool_maxsize, max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: MutableMapping[str, str] | None,
        stream: bool | None,
        verify: bool | str | None,
        cert: str | tuple[str, str] | None,
    ) -> _Settings:
        if not self.trust_env or url is None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url if isinstance(url, str) else url.decode())
        key: tuple[Hashable, ...] = (
            parts.scheme,
            parts.netloc,
            tuple(sorted((proxies or {}).items())),
            stream,
            verify,
            cert,
            tuple(sorted(self.proxies.items())),
            self.stream,
            self.verify,
            self.cert,
        )
        try:
            merged = self._environment.get(key)
        except TypeError:  # an unhashable setting: no cache for this call
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        if merged is None:
            merged = super().merge_environment_settings(url, dict(proxies or {}), stream, verify, cert)
            self._environment[key] = merged
        return {**merged, "proxies": dict(merged["proxies"])}


__all__ = [
    "DEFAULT_POOL_MAXSIZE",
    "POOL_CLASSES",
    "EnvironmentOnceSession",
    "reports_sent",
    "request_sent",
]
