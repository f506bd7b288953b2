"""Life-safety first at the door: a web process writes at most a few other events at once.

A storm of troubles (a city-wide power cut: thousands of AC-loss signals within a minute) reaches the
same web processes as the fire alarm that follows it. With gevent every connection is a greenlet, so
without a limit each of hundreds of trouble requests holds a ledger transaction open and takes its
turn on the CPU between round trips, and the fire request waits behind all of them at every round
trip. The gate bounds how many events of other priorities a process records at once (enough to keep
the CPU and the ledger busy); the others wait here, idle and cheap, admitted in priority order
(``sia.rank``: property, then technical, then informational; first come within each). A life-safety
event never waits at the gate, and while one is being recorded no other event starts: it shares the
process only with the few already inside.

Under gunicorn's gevent worker ``threading`` is monkey-patched, so the locks below are cooperative;
under gthread they are real locks, and under sync (one request at a time) the gate never waits.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app import telemetry
from app.domain import sia


class PriorityGate:
    """At most ``limit`` non-life-safety writes at once; 0 turns the gate off (nothing waits)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._busy = 0
        self._urgent = 0  # life-safety writes in progress: nothing else is admitted meanwhile
        self._waiting: list[tuple[int, int, threading.Event]] = []
        self._tickets = itertools.count()

    @property
    def waiting(self) -> int:
        """How many requests wait at the gate now (for tests and metrics)."""
        return len(self._waiting)

    @property
    def busy(self) -> int:
        """How many gated writes are in progress now."""
        return self._busy

    @contextmanager
    def admit(self, priority: str) -> Iterator[None]:
        """Hold a slot for one event of ``priority`` while it is recorded (its hand-off comes after)."""
        if self.limit <= 0:
            yield
            return
        if priority == sia.Priority.LIFE_SAFETY:
            with self._lock:
                self._urgent += 1
            try:
                yield
            finally:
                with self._lock:
                    self._urgent -= 1
                    if not self._urgent:
                        self._hand_out()
            return
        self._acquire(sia.rank(priority))
        try:
            yield
        finally:
            self._release()

    def _acquire(self, rank: int) -> None:
        with self._lock:
            if self._busy < self.limit and not self._waiting and not self._urgent:
                self._busy += 1
                return
            turn = threading.Event()
            entry = (rank, next(self._tickets), turn)
            heapq.heappush(self._waiting, entry)
            telemetry.INTAKE_GATE_WAITING.inc()
        # _hand_out counts the slot for this waiter before it sets the event.
        try:
            turn.wait()
        except BaseException:  # a killed greenlet or an interrupt: its place or its slot goes back
            with self._lock:
                handed = turn.is_set()
                if not handed:
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
                    telemetry.INTAKE_GATE_WAITING.dec()
            if handed:
                self._release()
            raise

    def _release(self) -> None:
        with self._lock:
            self._busy -= 1
            self._hand_out()

    def _hand_out(self) -> None:
        """Give free slots to the best waiters; the caller holds the lock."""
        while self._waiting and self._busy < self.limit and not self._urgent:
            _, _, turn = heapq.heappop(self._waiting)
            telemetry.INTAKE_GATE_WAITING.dec()
            self._busy += 1  # counted for the waiter before it wakes
            turn.set()
