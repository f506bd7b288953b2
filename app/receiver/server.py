"""The receiver process (``alarm-bridge receiver``): SIA DC-09 over TCP and UDP on one port.

Threading model, measured against the alternatives (README, "The DC-09 receiver"): one asyncio loop
holds every connection and datagram, so a thousand idle panels cost a thousand small coroutines, not
a thousand threads; checking a frame (CRC, AES, a few regular expressions: microseconds) runs on the
loop; recording it (blocking SQLAlchemy) runs on ``SIA_RECEIVER_CONCURRENCY`` ledger threads, which
take the most urgent waiting frame first, so a storm of troubles never holds a fire frame back. A TCP
connection is read one frame at a time: its next frame is read once the previous one is answered,
so one panel's frames are recorded in the order it sent them.

Bounds: at most ``SIA_RECEIVER_MAX_CONNECTIONS`` TCP connections are open at once (the process
raises its file-descriptor limit to hold them). At the cap, a connection from an address that holds
fewer than the busiest address less one takes the place of that address's connection idle longest
(closed; a panel reconnects), so one address cannot hold every slot; otherwise the new connection is
closed at once. A cap per address would refuse real panels behind one NAT; this shares the slots only
when they run out. A frame is at most ``MAX_FRAME_BYTES`` up to its CR (a longer one is answered NAK
and its connection closed); a TCP connection must bring its next complete frame within
``SIA_RECEIVER_IDLE_TIMEOUT_S`` of the last one answered (a panel reconnects for its next frame;
blank lines do not count); at most ``MAX_DATAGRAMS_IN_FLIGHT`` datagrams wait for the ledger at
once (beyond that a datagram is dropped unanswered, and its panel sends it again). Nothing a sender
does ends the listener: a frame that makes an error of ours is answered NAK and logged with its
traceback.

A datagram is one frame, as DC-09 sends them (one message per datagram, its answer to the address it
came from) and pysiaalarm's UDP server reads them: its first frame is read, whatever follows that
frame's CR is not, and it gets one answer at most. A datagram's source address can be forged, so an
answer to it may land on someone else: a datagram that is not even a DC-09 frame (unreadable) gets
none at all, only the refusal counter, and a NAK or DUH longer than its datagram is not sent either
(an ACK is: its frame was committed, and the panel waits for it). A TCP connection (whose address
cannot be forged) is answered frame by frame, and the loop is yielded between frames, so one
connection's stream of frames never holds up another's. Refusal warnings keep to ``Desk.log_budget``.

SIGTERM (or SIGINT): stop accepting connections and datagrams, close the connections that are waiting
for a frame, let every frame already being recorded finish and be answered (at most
``SHUTDOWN_GRACE_S``), then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import resource
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import structlog

from app import telemetry
from app.receiver import frames
from app.receiver.desk import Desk
from app.receiver.frames import FRAME_END, MAX_FRAME_BYTES, UNREADABLE, Reason
from config.logging import configure_logging
from config.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_DATAGRAMS_IN_FLIGHT = 1000
SHUTDOWN_GRACE_S = 20.0  # a frame's ledger transaction is bounded well within it (busy timeout, pool)
WRITE_TIMEOUT_S = 10.0  # a sender that does not read its answer is not waited for


class PriorityPool:
    """Threads that run the most urgent submitted call first (lower rank first, then first come)."""

    def __init__(self, threads: int, name: str = "ledger") -> None:
        self._heap: list[tuple[int, int, Callable[[], Any], Future[Any]]] = []
        self._ready = threading.Condition()
        self._order = itertools.count()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True) for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, rank: int, call: Callable[[], T]) -> Future[T]:
        """Queue ``call``; its future holds the result (or exception)."""
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the ledger threads have stopped")
            heapq.heappush(self._heap, (rank, next(self._order), call, future))
            self._ready.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._heap and not self._closed:
                    self._ready.wait()
                if not self._heap:
                    return  # closed, and nothing is left to run
                _, _, call, future = heapq.heappop(self._heap)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - handed, whatever it is, to whoever waits on it
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, timeout_s: float = SHUTDOWN_GRACE_S) -> None:
        """Take no more calls, run those queued, and wait for the threads."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=timeout_s)


@dataclass
class _Connection:
    host: str  # the sender's address, without its port: what the slots are shared between
    idle_since: float  # time.monotonic() when it was accepted or a frame of it last answered
    busy: bool = False  # between reading a frame and sending its answer


@dataclass(frozen=True, slots=True)
class _Answered:
    answer: bytes | None
    response: str  # the metric's label: ack, nak, duh
    frame_type: str
    reason: Reason | None = None


class Receiver:
    """The listener: the connection loop over a ``Desk``, on ``settings``' host and port."""

    def __init__(self, desk: Desk, settings: Settings) -> None:
        self.desk = desk
        self.settings = settings
        self.pool = PriorityPool(settings.sia_receiver_concurrency)
        self._stopping = False
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self._per_host: Counter[str] = Counter()  # open connections by address
        self._datagrams: set[asyncio.Task[None]] = set()
        self._udp: _Datagrams | None = None

    async def serve(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Listen until ``stop`` is set, then shut down as the module docstring says."""
        loop = asyncio.get_running_loop()
        host, port = self.settings.sia_receiver_host, self.settings.sia_receiver_port
        try:
            # UDP first: once the TCP port answers, both listen.
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(host, port)
            )
            tcp = await asyncio.start_server(
                self._connection, host, port, limit=MAX_FRAME_BYTES, reuse_address=True
            )
        except OSError as exc:
            raise SystemExit(
                f"alarm-bridge receiver: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        self._udp = protocol
        log.info(
            "receiver.listening",
            host=host,
            port=port,
            dc09_sources=[s.key for s in self.desk.sites.sources if s.kind == "dc09"],
        )
        if on_ready is not None:
            on_ready()
        await stop.wait()
        log.info("receiver.stopping", connections=len(self._connections), datagrams=len(self._datagrams))
        self._stopping = True
        tcp.close()  # no new connection
        protocol.closed = True  # no new datagram
        for task, connection in list(self._connections.items()):
            if not connection.busy:
                task.cancel()  # waiting for a frame: nothing is lost by closing it
        pending = [*self._connections, *self._datagrams]
        if pending:
            _, late = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_S)
            for task in late:
                task.cancel()
        transport.close()
        try:
            await asyncio.wait_for(tcp.wait_closed(), timeout=5)
        except TimeoutError:
            log.warning("receiver.close_timeout")
        log.info("receiver.stopped")

    # -- TCP ---------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        address = writer.get_extra_info("peername")
        peer, host = _peer(address), _host(address)
        if len(self._connections) >= self.settings.sia_receiver_max_connections and not self._make_room(host):
            # Closed before reading anything: a flood of idle connections cannot take every file
            # descriptor (the panels already connected keep theirs; a refused panel reconnects).
            telemetry.DC09_CONNECTIONS_REFUSED.inc()
            log.warning("receiver.connection_refused", peer=peer)
            writer.close()
            return
        state = self._connections[task] = _Connection(host, time.monotonic())
        self._per_host[host] += 1
        idle_s = self.settings.sia_receiver_idle_timeout_s
        # Only a frame that gets an answer (ACK, NAK, DUH) moves the deadline: a blank line is no
        # frame, and a sender writing one now and then must not hold its slot for ever.
        deadline = time.monotonic() + idle_s
        try:
            while not self._stopping:
                try:
                    raw = await asyncio.wait_for(
                        reader.readuntil(FRAME_END), timeout=max(deadline - time.monotonic(), 0.0)
                    )
                except TimeoutError:
                    log.info("receiver.idle_closed", peer=peer, idle_s=idle_s)
                    break
                except asyncio.LimitOverrunError:
                    state.busy = True
                    self.desk.log_budget.warning(
                        Reason.TOO_LONG.value, "receiver.refused", reason=Reason.TOO_LONG.value, peer=peer
                    )
                    await self._send(writer, _Answered(frames.nak(), "nak", UNREADABLE, Reason.TOO_LONG))
                    break
                except (asyncio.IncompleteReadError, OSError):
                    break  # the sender closed (or reset) the connection
                state.busy = True
                answered = await self._decide(raw, peer)
                await self._send(writer, answered)
                state.busy = False
                if answered.answer is not None:
                    state.idle_since = time.monotonic()
                    deadline = state.idle_since + idle_s
                # The next frame may be in the buffer already, and a refusal awaits nothing: without
                # this, a connection sending junk as fast as it reads NAKs would hold the loop.
                await asyncio.sleep(0)
        finally:
            self._forget(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):  # gone, or the shutdown's cancel
                await writer.wait_closed()

    def _make_room(self, host: str) -> bool:
        """At the cap: close the longest-idle connection of the address holding the most, when it holds
        at least two more than ``host``; False (refuse ``host``'s) when the slots are fairly shared.

        A connection busy with a frame is never closed: its frame is recorded and answered.
        """
        hog, held = self._per_host.most_common(1)[0]
        if held < self._per_host[host] + 2:
            return False
        idle = [(c.idle_since, t) for t, c in self._connections.items() if c.host == hog and not c.busy]
        if not idle:
            return False
        _, task = min(idle, key=lambda pair: pair[0])
        self._forget(task)
        task.cancel()
        telemetry.DC09_CONNECTIONS_EVICTED.inc()
        log.warning("receiver.connection_evicted", host=hog, held=held, for_host=host)
        return True

    def _forget(self, task: asyncio.Task[Any]) -> None:
        state = self._connections.pop(task, None)
        if state is not None:
            self._per_host[state.host] -= 1
            if self._per_host[state.host] <= 0:
                del self._per_host[state.host]

    async def _send(self, writer: asyncio.StreamWriter, answered: _Answered) -> None:
        if answered.answer is None:
            return
        delivered = True
        try:
            writer.write(answered.answer)
            await asyncio.wait_for(writer.drain(), timeout=WRITE_TIMEOUT_S)
        except (OSError, TimeoutError):
            delivered = False  # the panel did not wait for its answer; it will send the frame again
        _count(answered, delivered)

    # -- UDP ---------------------------------------------------------------------------------------

    def take_datagram(self, data: bytes, addr: Any, transport: asyncio.DatagramTransport) -> None:
        """Answer a datagram (its first frame) on a task of its own."""
        if len(self._datagrams) >= MAX_DATAGRAMS_IN_FLIGHT:
            self.desk.log_budget.warning(
                "datagram_dropped",
                "receiver.datagram_dropped",
                peer=_peer(addr),
                in_flight=len(self._datagrams),
            )
            telemetry.DC09_FRAMES.labels("none", UNREADABLE).inc()
            return
        task = asyncio.get_running_loop().create_task(self._answer_datagram(data, addr, transport))
        self._datagrams.add(task)
        task.add_done_callback(self._datagrams.discard)

    async def _answer_datagram(self, data: bytes, addr: Any, transport: asyncio.DatagramTransport) -> None:
        peer = _peer(addr)
        # One frame a datagram (module docstring): up to the first CR after any blank lines.
        frame, _, rest = data.lstrip().partition(FRAME_END)
        if not frame:
            return
        if rest.strip():
            self.desk.log_budget.warning(
                "datagram_rest", "receiver.datagram_rest", peer=peer, ignored_bytes=len(rest)
            )
        answered = await self._decide(frame + FRAME_END, peer)
        if answered.answer is None:
            return
        # A NAK or DUH to a datagram not DC-09 at all, or longer than it: nothing goes back to an
        # address that may be forged (counted all the same, as an answer not delivered). An ACK
        # always goes: its frame passed every check and was committed, the panel waits for it, and
        # it is the frame's header without its data (2 bytes more at most: "R0" for a receiver
        # number the frame left out).
        delivered = not transport.is_closing() and (
            answered.response == "ack"
            or (answered.reason != Reason.UNREADABLE and len(answered.answer) <= len(data))
        )
        if delivered:
            transport.sendto(answered.answer, addr)
        _count(answered, delivered)

    # -- both --------------------------------------------------------------------------------------

    async def _decide(self, raw: bytes, peer: str) -> _Answered:
        """The frame's answer: a refusal at once, or the ledger's outcome (ACK only after commit)."""
        try:
            verdict = self.desk.examine(raw, peer)
        except Exception:  # an error of ours on some frame: it gets a NAK, the listener lives on
            log.exception("receiver.examine_failed", peer=peer)
            return _Answered(frames.nak(), "nak", UNREADABLE, Reason.INTERNAL_ERROR)
        if verdict is None:
            return _Answered(None, "", "")
        if not verdict.needs_ledger:
            reason = verdict.refusal.reason if verdict.refusal is not None else None
            return _Answered(verdict.answer, verdict.response, verdict.frame_type, reason)
        try:
            outcome = await asyncio.wrap_future(
                self.pool.submit(verdict.rank, partial(self.desk.commit, verdict))
            )
        except Exception:  # commit() never raises; a stopped pool does
            log.exception("receiver.commit_failed", peer=peer)
            return _Answered(frames.nak(), "nak", verdict.frame_type, Reason.INTERNAL_ERROR)
        response = "nak" if outcome.refusal is not None else "ack"
        return _Answered(outcome.answer, response, verdict.frame_type, outcome.refusal)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # what a datagram endpoint is given

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.closed and self.transport is not None:
            self.receiver.take_datagram(data, addr, self.transport)

    def error_received(self, exc: Exception) -> None:
        log.info("receiver.udp_error", error=str(exc))  # e.g. an answer to a port that closed


def _count(answered: _Answered, delivered: bool) -> None:
    telemetry.DC09_FRAMES.labels(answered.response if delivered else "none", answered.frame_type).inc()
    if answered.reason is not None:
        telemetry.DC09_REFUSALS.labels(answered.reason.value).inc()


def _host(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0])
    return str(address or "")


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "")


def run(settings: Settings) -> int:
    """The process: log, share metrics with the host's processes, listen until SIGTERM or SIGINT."""
    configure_logging(settings)
    # pysiaalarm logs a frame's content with some of its warnings; only our own log lines say what
    # matters, without the alarm data.
    logging.getLogger("pysiaalarm").setLevel(logging.ERROR)
    telemetry.use_multiprocess_metrics(settings.prometheus_dir)
    if settings.sia_receiver_metrics_port is not None:
        telemetry.serve_metrics(settings.sia_receiver_metrics_port)
    _raise_file_limit(settings.sia_receiver_max_connections + 256)  # the pool, logs, metrics
    desk = Desk.from_settings(settings)
    if not any(source.kind == "dc09" for source in desk.sites.sources):
        log.warning("receiver.no_dc09_source", sites_file=settings.sites_file)  # every frame is refused
    try:
        asyncio.run(_serve_until_signalled(desk, settings))
    finally:
        desk.close()
    return 0


def _raise_file_limit(wanted: int) -> None:
    """Allow this process ``wanted`` open files, within the hard limit the system gives it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning("receiver.file_limit", hard=hard, wanted=wanted)


async def _serve_until_signalled(desk: Desk, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    receiver = Receiver(desk, settings)
    try:
        await receiver.serve(stop)
    finally:
        await asyncio.to_thread(receiver.pool.shutdown)  # frames still queued are recorded first
