"""The DC-09 CRC: CRC-16/ARC computed from a table is pysiaalarm's CRC exactly, on any input, and the
receiver no longer pays pysiaalarm's bit-by-bit one; the cheap checks (the frame's size, its length
field) refuse a frame before any CRC is computed."""

from __future__ import annotations

import timeit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pysiaalarm.event import BaseEvent, SIAEvent

from app.receiver import frames
from app.receiver.crc import crc16_arc, frame_crc
from app.receiver.frames import (
    ADM_CID,
    MAX_BODY_CHARS,
    Accounts,
    Frame,
    Reason,
    Refusal,
    build_frame,
    nak,
    read_frame,
    read_reply,
)
from tests.logs import capture_logs
from tests.unit.app.receiver.test_frames import KEYS
from tests.unit.app.receiver.test_frames import accounts as accounts  # the fixture, shared

pytestmark = pytest.mark.unit

KEY = KEYS["128A"]


def bit_by_bit(data: bytes) -> int:
    """CRC-16/ARC as its definition says it: reflected polynomial 0xA001, initial value 0, no final XOR."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


# --- the same CRC -------------------------------------------------------------------------------------------


@given(st.text())
def test_the_frame_crc_is_pysiaalarms_on_any_text(text: str) -> None:
    """Any text, the empty one and non-ASCII characters included (both encode it as UTF-8)."""
    assert frame_crc(text) == SIAEvent._crc_calc(text)


@given(st.binary(max_size=5000))
def test_the_table_computes_crc_16_arc_on_any_bytes(data: bytes) -> None:
    assert crc16_arc(data) == bit_by_bit(data)


def test_the_crc_is_the_catalogues_crc_16_arc() -> None:
    assert crc16_arc(b"123456789") == 0xBB3D  # the catalogue's check value for CRC-16/ARC
    assert crc16_arc(b"") == 0
    assert frame_crc("") == "0000"


def test_a_frame_of_the_readme_keeps_its_crc() -> None:
    body = '"SIA-DCS"0001R1L1#1234[#1234|Nri1/BA03]_14:03:07,12-06-2026'
    assert frame_crc(body) == SIAEvent._crc_calc(body)


# --- pysiaalarm's bit-by-bit CRC is not used ---------------------------------------------------------------


@pytest.fixture
def no_slow_crc(monkeypatch: pytest.MonkeyPatch) -> None:
    """pysiaalarm's bit-by-bit CRC raises: a frame read or written with it fails the test."""

    def slow(msg: str | None) -> str | None:
        if msg is None:  # an event built without a message: nothing is computed
            return None
        raise AssertionError("pysiaalarm's bit-by-bit CRC was computed")

    monkeypatch.setattr(BaseEvent, "_crc_calc", staticmethod(slow))


@pytest.mark.usefixtures("no_slow_crc")
def test_reading_and_answering_frames_never_computes_pysiaalarms_crc(accounts: Accounts) -> None:
    plain = read_frame(build_frame("1234", "BA", "3", sequence=5), accounts)
    encrypted = read_frame(build_frame("128A", "FA", "1", sequence=6, key=KEY), accounts)
    contact_id = read_frame(build_frame("1234", message_type=ADM_CID, data="#1234|1130 01 003"), accounts)
    bad_crc = build_frame("1234", "BA", "3")
    refused = read_frame(bad_crc[:1] + b"0000" + bad_crc[5:], accounts)

    assert isinstance(plain, Frame) and isinstance(encrypted, Frame) and isinstance(contact_id, Frame)
    assert isinstance(refused, Refusal) and refused.reason == Reason.BAD_CRC
    assert read_reply(plain.ack()).crc_ok
    assert read_reply(encrypted.ack(), KEY, "128A").crc_ok
    assert read_reply(refused.answer).crc_ok
    assert read_reply(nak()).kind == "NAK"


# --- the cheap checks first ---------------------------------------------------------------------------------


@pytest.fixture
def crc_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What a CRC was computed of, but the answers' (a NAK's is a few dozen characters)."""
    calls: list[str] = []

    def counted(text: str) -> str:
        if not text.startswith('"NAK"'):
            calls.append(text)
        return frame_crc(text)

    monkeypatch.setattr(frames, "frame_crc", counted)
    return calls


def with_length(raw: bytes, length: int) -> bytes:
    return raw[:5] + f"{length:04X}".encode() + raw[9:]


def test_a_length_field_that_is_not_the_frames_length_is_read_when_its_crc_is_good(
    accounts: Accounts,
) -> None:
    """Some senders compute the length wrongly; the CRC covers the frame. Refusing would have such a
    panel send its alarm for ever, so the frame is read and the mismatch logged for a person."""
    raw = build_frame("1234", "BA", "3")
    length = int(raw[5:9], 16)

    with capture_logs() as logs:
        longer = read_frame(with_length(raw, length + 1), accounts)
        shorter = read_frame(with_length(raw, length - 1), accounts)

    assert isinstance(longer, Frame) and isinstance(shorter, Frame)
    assert (longer.account, longer.content) == (shorter.account, shorter.content)
    mismatches = [e for e in logs if e["event"] == "receiver.length_mismatch"]
    assert [(e["declared"], e["actual"]) for e in mismatches] == [(length + 1, length), (length - 1, length)]


def test_a_wrong_length_field_does_not_save_a_bad_crc(accounts: Accounts) -> None:
    good = build_frame("1234", "BA", "3")
    raw = good[:1] + f"{(int(good[1:5], 16) + 1) % 0x10000:04X}".encode() + good[5:]

    refusal = read_frame(with_length(raw, int(raw[5:9], 16) + 1), accounts)

    assert isinstance(refusal, Refusal) and refusal.reason == Reason.BAD_CRC


def test_a_frame_longer_than_a_frame_can_be_is_refused_before_any_crc(
    accounts: Accounts, crc_calls: list[str]
) -> None:
    data = "#1234|NBA3/A" + "x" * MAX_BODY_CHARS
    raw = build_frame("1234", data=data)  # one character more than a length field can count
    crc_calls.clear()  # the sender's

    refusal = read_frame(raw, accounts)

    assert isinstance(refusal, Refusal) and refusal.reason == Reason.TOO_LONG
    assert crc_calls == []


def test_the_longest_frame_is_read(accounts: Accounts) -> None:
    raw = build_frame("1234", data="#1234|NBA3/A" + "x" * 4000)
    text = raw.decode().strip()
    pad = MAX_BODY_CHARS - len(text[8:])
    raw = build_frame("1234", data="#1234|NBA3/A" + "x" * (4000 + pad))

    assert len(raw) == frames.MAX_FRAME_BYTES
    assert isinstance(read_frame(raw, accounts), Frame)


# --- what it costs ------------------------------------------------------------------------------------------


def test_the_crc_of_a_4_kb_frame_costs_a_fraction_of_pysiaalarms() -> None:
    """Measured 3.3 ms (pysiaalarm) against 0.23 ms here; both are timed in this process, whatever its
    load or tracer, and the best of several runs is compared."""
    body = '"SIA-DCS"0001R1L1#1234[' + "A" * (MAX_BODY_CHARS - 23)

    ours = min(timeit.repeat(lambda: frame_crc(body), number=20, repeat=5))
    theirs = min(timeit.repeat(lambda: SIAEvent._crc_calc(body), number=20, repeat=5))

    assert ours * 5 < theirs
