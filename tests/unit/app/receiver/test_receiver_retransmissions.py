"""A DC-09 retransmission the panel stamps anew keeps the sender event ids of its first sending within
the dedupe window, so the ledger records it once; a frame that says something else under the same
sequence number, or the same frame after the window, is a new event."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.domain.events import Event
from app.receiver.frames import ADM_CID, Accounts, Frame, build_frame, read_frame
from app.receiver.reports import Retransmissions, events_of
from tests.unit.app.receiver.test_frames import KEYS
from tests.unit.app.receiver.test_frames import accounts as accounts  # the fixture, shared

pytestmark = pytest.mark.unit

KEY = KEYS["128A"]
WINDOW = timedelta(seconds=300)
T0 = datetime(2026, 7, 12, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def memory() -> Retransmissions:
    return Retransmissions(WINDOW)


def frame_at(
    accounts: Accounts,
    stamp: datetime,
    account: str = "1234",
    code: str = "BA",
    zone: str = "3",
    sequence: int = 42,
    **options: object,
) -> Frame:
    """The frame a panel stamps at ``stamp``: built and read now (the band is around now), then stamped."""
    now = datetime.now(UTC)
    raw = build_frame(account, code, zone, sequence=sequence, timestamp=now, **options)  # type: ignore[arg-type]
    found = read_frame(raw, accounts)
    assert isinstance(found, Frame), found
    return restamped(found, stamp)


def restamped(frame: Frame, stamp: datetime) -> Frame:
    """``frame`` as sent again stamped at ``stamp``."""
    assert frame.timestamp is not None
    content = frame.content.replace(f"_{frame.timestamp:%H:%M:%S,%m-%d-%Y}", f"_{stamp:%H:%M:%S,%m-%d-%Y}")
    return replace(frame, timestamp=stamp, content=content)


def received(memory: Retransmissions, frame: Frame, at: datetime) -> list[Event]:
    """The events the receiver makes of ``frame`` received at ``at`` (as Desk.examine does)."""
    return events_of(frame, at, memory.first_timestamp(frame, at))


def keys(events: list[Event]) -> list[str]:
    return [e.dedupe_key().unique for e in events]


def test_a_restamped_retransmission_keeps_the_first_sendings_ids(
    accounts: Accounts, memory: Retransmissions
) -> None:
    first = received(memory, frame_at(accounts, T0), T0)
    again = received(memory, frame_at(accounts, T0 + timedelta(seconds=35)), T0 + timedelta(seconds=35))

    assert keys(again) == keys(first)
    assert again[0].sender_event_id == first[0].sender_event_id == "dc09/1234/0042/20260712T100000Z/0"
    assert again[0].occurred_at == T0 + timedelta(seconds=35)  # its own stamp, kept as sent


def test_without_the_memory_a_restamped_retransmission_was_a_new_event(accounts: Accounts) -> None:
    """What the review found: the event's dedupe key held the frame's timestamp."""
    first = events_of(frame_at(accounts, T0), T0)
    again = events_of(frame_at(accounts, T0 + timedelta(seconds=35)), T0 + timedelta(seconds=35))

    assert keys(again) != keys(first)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"zone": "4"}, id="another-zone"),
        pytest.param({"code": "FA"}, id="another-code"),
        pytest.param({"data": "#1234|Nri2/BA3"}, id="another-area"),
        pytest.param({"sequence": 43}, id="another-sequence"),
        pytest.param({"account": "5678"}, id="another-account"),
        pytest.param({"message_type": ADM_CID, "data": "#1234|1130 01 003"}, id="another-id-token"),
    ],
)
def test_a_frame_that_says_something_else_is_a_new_event(
    accounts: Accounts, memory: Retransmissions, other: dict[str, object]
) -> None:
    """A panel that restarted its numbering sends a new event under an old sequence number."""
    first = received(memory, frame_at(accounts, T0), T0)
    later = T0 + timedelta(seconds=10)
    new = received(memory, frame_at(accounts, later, **other), later)

    assert set(keys(new)).isdisjoint(keys(first))


def test_the_same_frame_after_the_window_is_a_new_event(accounts: Accounts, memory: Retransmissions) -> None:
    first = received(memory, frame_at(accounts, T0), T0)
    after = T0 + WINDOW + timedelta(seconds=1)
    again = received(memory, frame_at(accounts, after), after)

    assert keys(again) != keys(first)


def test_a_panel_that_goes_on_repeating_keeps_its_first_stamp(
    accounts: Accounts, memory: Retransmissions
) -> None:
    """The window runs from the last sending: each repetition within it of the one before."""
    first = received(memory, frame_at(accounts, T0), T0)
    repeats = [T0 + WINDOW * n * 0.9 for n in range(1, 5)]  # 18 minutes in all, 4.5 between two

    assert all(keys(received(memory, frame_at(accounts, at), at)) == keys(first) for at in repeats)


def test_an_encrypted_retransmission_is_recognised_whatever_its_new_pad(
    accounts: Accounts, memory: Retransmissions
) -> None:
    first = received(memory, frame_at(accounts, T0, account="128A", key=KEY), T0)
    later = T0 + timedelta(seconds=30)
    again = received(memory, frame_at(accounts, later, account="128A", key=KEY), later)  # another random pad

    assert keys(again) == keys(first)


def test_an_unstamped_frame_is_left_to_intakes_window(accounts: Accounts, memory: Retransmissions) -> None:
    raw = build_frame("1234", "BA", "3", stamped=False)
    frame = read_frame(raw, accounts)
    assert isinstance(frame, Frame)

    assert memory.first_timestamp(frame, T0) is None
    (event,) = events_of(frame, T0, None)
    assert (event.sender_event_id, event.sequence) == (None, "0001/0")


def test_frames_beyond_the_capacity_are_forgotten_oldest_first(accounts: Accounts) -> None:
    memory = Retransmissions(WINDOW, capacity=2)
    sent = [frame_at(accounts, T0, sequence=n) for n in (1, 2, 3)]
    for n, frame in enumerate(sent):
        memory.first_timestamp(frame, T0 + timedelta(seconds=n))
    later = T0 + timedelta(seconds=40)

    # The first was forgotten: its re-stamped retransmission is identified by its own stamp.
    assert memory.first_timestamp(restamped(sent[0], later), later) == later
    assert memory.first_timestamp(restamped(sent[2], later), later) == T0
