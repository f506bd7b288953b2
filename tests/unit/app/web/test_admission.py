"""The life-safety-first gate of the web process (app/web/admission.py), with real threads."""

from __future__ import annotations

import threading

import pytest

from app.web.admission import PriorityGate
from tests.polling import wait_until


def _enter(gate: PriorityGate, priority: str, order: list[str], leave: threading.Event) -> threading.Thread:
    def run() -> None:
        with gate.admit(priority):
            order.append(priority)
            leave.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_full_gate_admits_property_before_technical_and_never_holds_life_safety() -> None:
    gate = PriorityGate(1)
    order: list[str] = []
    leave = threading.Event()
    holder = _enter(gate, "technical", order, leave)
    wait_until(lambda: gate.busy == 1, timeout_s=5, interval_s=0.01)
    technical = _enter(gate, "technical", order, leave)
    wait_until(lambda: gate.waiting == 1, timeout_s=5, interval_s=0.01)
    prop = _enter(gate, "property", order, leave)
    wait_until(lambda: gate.waiting == 2, timeout_s=5, interval_s=0.01)

    with gate.admit("life_safety"):  # would block forever if the gate held it
        order.append("life_safety")
    assert order == ["technical", "life_safety"]

    leave.set()
    for thread in (holder, technical, prop):
        thread.join(5)
    assert order == ["technical", "life_safety", "property", "technical"]
    assert gate.busy == 0 and gate.waiting == 0


def test_the_gate_bounds_concurrent_writes_to_its_limit() -> None:
    gate = PriorityGate(3)
    inside = 0
    most = 0
    lock = threading.Lock()
    go = threading.Barrier(12)

    def run() -> None:
        nonlocal inside, most
        go.wait(5)
        for _ in range(50):
            with gate.admit("technical"):
                with lock:
                    inside += 1
                    most = max(most, inside)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=run) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most <= 3
    assert gate.busy == 0 and gate.waiting == 0


def test_a_slot_given_to_a_waiter_that_fails_goes_back() -> None:
    gate = PriorityGate(1)
    with gate.admit("property"):
        pass
    try:
        with gate.admit("property"):
            raise RuntimeError("the write failed")
    except RuntimeError:
        pass
    assert gate.busy == 0
    with gate.admit("technical"):  # a lost slot would block here forever
        assert gate.busy == 1


def test_limit_zero_turns_the_gate_off() -> None:
    gate = PriorityGate(0)
    with gate.admit("technical"), gate.admit("technical"), gate.admit("property"):
        assert gate.busy == 0 and gate.waiting == 0


class _Killed(BaseException):
    """What gevent raises in a greenlet that is killed (GreenletExit is a BaseException too)."""


def test_a_waiter_killed_before_its_turn_gives_its_place_back(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = PriorityGate(1)

    class KilledWhileWaiting(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            raise _Killed

    with gate.admit("technical"):
        monkeypatch.setattr("app.web.admission.threading.Event", KilledWhileWaiting)
        try:
            with gate.admit("property"):
                raise AssertionError("admitted through a full gate")
        except _Killed:
            pass
        assert gate.waiting == 0 and gate.busy == 1
    assert gate.busy == 0


def test_a_waiter_killed_as_its_turn_came_gives_the_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = PriorityGate(1)
    holder = gate.admit("technical")
    holder.__enter__()

    class KilledAsItsTurnCame(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            holder.__exit__(None, None, None)  # the slot is handed to this waiter...
            assert self.is_set()
            raise _Killed  # ...which dies before it uses it

    monkeypatch.setattr("app.web.admission.threading.Event", KilledAsItsTurnCame)
    try:
        with gate.admit("property"):
            raise AssertionError("the killed waiter ran")
    except _Killed:
        pass
    assert gate.busy == 0 and gate.waiting == 0


def test_nothing_else_starts_while_a_life_safety_event_is_being_recorded() -> None:
    gate = PriorityGate(2)
    order: list[str] = []
    leave = threading.Event()
    fire = gate.admit("life_safety")
    fire.__enter__()
    trouble = _enter(gate, "technical", order, leave)
    wait_until(lambda: gate.waiting == 1, timeout_s=5, interval_s=0.01)
    assert gate.busy == 0 and order == []  # a free slot, but the fire comes first
    fire.__exit__(None, None, None)
    wait_until(lambda: order == ["technical"], timeout_s=5, interval_s=0.01)
    leave.set()
    trouble.join(5)
    assert gate.busy == 0 and gate.waiting == 0
