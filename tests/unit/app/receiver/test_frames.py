"""Reading DC-09 frames (through pysiaalarm) and what they report: every refusal the standard prescribes
answered with its NAK, every key size decrypted, several events in one block, Contact ID mapped,
retransmissions given the same dedupe key, and the sender's side reading the answers back."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from Crypto.Cipher import AES

from app.domain import sia
from app.domain.sites_file import load_sites
from app.receiver.frames import (
    ADM_CID,
    NULL,
    UNSUPPORTED,
    Accounts,
    Frame,
    Reason,
    Refusal,
    Unsupported,
    build_frame,
    nak,
    read_frame,
    read_reply,
    standard_pad,
)
from app.receiver.reports import _CID_MAPPING, events_of
from app.receiver.server import PriorityPool

pytestmark = pytest.mark.unit

KEYS = {
    "128A": bytes.fromhex("000102030405060708090a0b0c0d0e0f"),
    "192B": bytes.fromhex("000102030405060708090a0b0c0d0e0f1011121314151617"),
    "256C": bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
}
ASCII_KEY = b"AAAAAAAAAAAAAAAA"
SITES = """
[sources.receiver]
kind = "dc09"
encryption_keys_env = "DC09_KEYS"

[sources.ajax]
kind = "dc09"
encryption_keys_env = "AJAX_KEYS"
encryption_keys_format = "ascii"

[plans.quiet]
default = []

[sites.hq]
name = "HQ"
sources = ["receiver"]
accounts = ["1234", "128A", "192B", "256C", "1A2B", "5678"]
timezone = "America/Montreal"
site_type = "COMMERCIAL"
plan = "quiet"
location = { address_line1 = "1 Main St" }

[sites.home]
name = "Home"
sources = ["ajax"]
accounts = ["A1A1"]
timezone = "America/Montreal"
site_type = "RESIDENTIAL"
plan = "quiet"
location = { address_line1 = "2 Main St" }
"""
NAK = re.compile(r'\n[0-9A-F]{4}[0-9A-F]{4}"NAK"0000R1L1A0\[\]_\d\d:\d\d:\d\d,\d\d-\d\d-\d{4}\r')


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Accounts:
    path = tmp_path_factory.mktemp("sites") / "sites.toml"
    path.write_text(SITES, encoding="utf-8")
    environ = {
        "DC09_KEYS": ",".join(f"{account}={key.hex()}" for account, key in KEYS.items()),
        "AJAX_KEYS": f"A1A1={ASCII_KEY.decode()}",
    }
    return Accounts(load_sites(Path(path), environ))


def read(raw: bytes, accounts: Accounts) -> Frame:
    frame = read_frame(raw, accounts)
    assert isinstance(frame, Frame), frame
    return frame


def refused(raw: bytes, accounts: Accounts) -> Refusal:
    refusal = read_frame(raw, accounts)
    assert isinstance(refusal, Refusal), refusal
    return refusal


# --- accepted frames and their answers ----------------------------------------------------------------


def test_a_plain_frame_is_read_and_acknowledged_with_its_sequence_and_account(accounts: Accounts) -> None:
    frame = read(build_frame("1234", "BA", "03", sequence=42, area="1"), accounts)

    assert (frame.message_type, frame.sequence, frame.account, frame.encrypted) == (
        "SIA-DCS",
        "0042",
        "1234",
        False,
    )
    assert (frame.source.key, frame.site.key) == ("receiver", "hq")
    reply = read_reply(frame.ack())
    assert (reply.kind, reply.crc_ok, reply.encrypted) == ("ACK", True, False)
    assert reply.text.endswith('"ACK"0042R1L1#1234[]')


@pytest.mark.parametrize("account", ["128A", "192B", "256C"])
def test_aes_frames_of_each_key_size_decrypt_and_get_an_encrypted_ack(
    accounts: Accounts, account: str
) -> None:
    sent_at = datetime.now(UTC).replace(microsecond=0)
    frame = read(build_frame(account, "FA", "7", sequence=9, key=KEYS[account], timestamp=sent_at), accounts)

    assert frame.encrypted
    assert frame.timestamp == sent_at
    assert [(e.code, e.zone) for e in events_of(frame, sent_at)] == [("FA", "7")]
    reply = read_reply(frame.ack(), KEYS[account], account)
    assert (reply.kind, reply.crc_ok, reply.encrypted) == ("ACK", True, True)
    assert reply.timestamp is not None and abs(reply.timestamp - datetime.now(UTC)) < timedelta(seconds=5)


def test_an_ascii_key_source_decrypts_as_pysiaalarm_and_ajax_panels_encrypt(accounts: Accounts) -> None:
    frame = read(build_frame("A1A1", "BA", "1", key=ASCII_KEY), accounts)

    assert (frame.source.key, frame.encrypted) == ("ajax", True)


# "|#128A|NFA7]" and the 20-character timestamp are 32 bytes: the standard adds 16 pad bytes.
STANDARD_PADS = [
    pytest.param(bytes(range(16)), id="control-bytes-and-nul"),
    pytest.param(bytes(range(0x80, 0x90)), id="bytes-above-127"),
    pytest.param(b"\xff" * 16, id="all-ff"),
    pytest.param(b"\x15" + b"x" * 15, id="one-control-byte"),
    pytest.param(b"\n\r\x00 ~" * 3 + b"\x7f", id="line-ends"),
    pytest.param(b"0" * 16, id="printable-as-pysiaalarm"),
]


@pytest.mark.parametrize("pad", STANDARD_PADS)
@pytest.mark.parametrize("account", ["128A", "256C"])
def test_a_standard_panels_binary_pad_is_read_and_left_out_of_the_record(
    accounts: Accounts, account: str, pad: bytes
) -> None:
    """ANSI/SIA DC-09-2013 5.4.4.2: the pad is pseudo-random bytes 0-255 but "|", "[" and "]"."""
    sent_at = datetime.now(UTC).replace(microsecond=0)
    raw = build_frame(account, "FA", "7", sequence=12, key=KEYS[account], timestamp=sent_at, pad=pad)
    frame = read(raw, accounts)

    assert frame.timestamp == sent_at
    assert frame.content == f"|#{account}|NFA7]_{sent_at:%H:%M:%S,%m-%d-%Y}"
    (event,) = events_of(frame, sent_at)
    assert (event.code, event.zone, event.payload["dc09"]["data"]) == ("FA", "7", "NFA7")
    reply = read_reply(frame.ack(), KEYS[account], account)
    assert (reply.kind, reply.crc_ok, reply.encrypted) == ("ACK", True, True)


def test_an_encrypted_contact_id_frame_keeps_no_pad_in_its_payload(accounts: Accounts) -> None:
    raw = build_frame(
        "128A", message_type=ADM_CID, data="#128A|1130 01 003", key=KEYS["128A"], pad=bytes(range(9))
    )
    frame = read(raw, accounts)

    (event,) = events_of(frame, datetime.now(UTC))
    assert event.code == "BA"
    assert event.payload["dc09"]["data"] == "#128A|1130 01 003"


@pytest.mark.parametrize("message_type", ["SIA-DCS", ADM_CID, NULL])
def test_an_encrypted_frame_is_decrypted_once(
    accounts: Accounts, monkeypatch: pytest.MonkeyPatch, message_type: str
) -> None:
    data = {"SIA-DCS": None, ADM_CID: "#128A|1130 01 003", NULL: None}[message_type]
    raw = build_frame("128A", "BA", "1", key=KEYS["128A"], message_type=message_type, data=data)
    decryptions: list[int] = []
    real_new = AES.new

    def counted(key: bytes, mode: int, *args: object, **kwargs: object) -> object:
        cipher = real_new(key, mode, *args, **kwargs)  # type: ignore[call-overload]
        real_decrypt = cipher.decrypt

        def decrypt(data: bytes) -> bytes:
            decryptions.append(len(data))
            return real_decrypt(data)  # type: ignore[no-any-return]

        cipher.decrypt = decrypt
        return cipher

    monkeypatch.setattr(AES, "new", counted)

    frame = read(raw, accounts)

    assert frame.encrypted
    assert len(decryptions) == 1


def test_the_sender_pads_as_the_standard_says() -> None:
    """Pseudo-random pad bytes, never "|", "[" or "]", different from one frame to the next."""
    pads = [standard_pad(16) for _ in range(200)]

    assert all(len(pad) == 16 and not set(pad) & set(b"|[]") for pad in pads)
    assert len(set(pads)) == 200
    assert any(byte > 0x7E or byte < 0x20 for pad in pads for byte in pad)


def test_a_wrong_key_never_reads_a_standard_panels_frame(accounts: Accounts) -> None:
    """With a pad that is not printable, the text after it must be: noise passes below one in a million."""
    wrong = [KEYS["256C"][:16][::-1], KEYS["256C"][16:], ASCII_KEY]
    reasons = {
        refused(build_frame("128A", "BA", str(n % 9), sequence=n, key=wrong[n % 3]), accounts).reason
        for n in range(300)
    }

    assert reasons == {Reason.DECRYPT_FAILED}


# --- refusals ---------------------------------------------------------------------------------------------


def corrupt_crc(raw: bytes) -> bytes:
    crc = raw[1:5].decode()
    wrong = f"{(int(crc, 16) + 1) % 0x10000:04X}"
    return b"\n" + wrong.encode() + raw[5:]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda: corrupt_crc(build_frame("1234", "BA", "1")), Reason.BAD_CRC, id="bad-crc"),
        pytest.param(lambda: build_frame("9999", "BA", "1"), Reason.UNKNOWN_ACCOUNT, id="unknown-account"),
        pytest.param(
            lambda: build_frame("128A", "BA", "1", key=KEYS["256C"][:16][::-1]),
            Reason.DECRYPT_FAILED,
            id="wrong-key",
        ),
        pytest.param(
            lambda: build_frame("256C", "BA", "1", key=KEYS["128A"] * 2),
            Reason.DECRYPT_FAILED,
            id="wrong-key-256",
        ),
        pytest.param(
            lambda: build_frame("1234", "BA", "1", timestamp=datetime.now(UTC) - timedelta(seconds=90)),
            Reason.TIMESTAMP,
            id="stale",
        ),
        pytest.param(
            lambda: build_frame(
                "128A", "BA", "1", key=KEYS["128A"], timestamp=datetime.now(UTC) + timedelta(minutes=2)
            ),
            Reason.TIMESTAMP,
            id="from-the-future",
        ),
        pytest.param(
            lambda: build_frame("128A", "BA", "1"), Reason.UNENCRYPTED, id="plain-from-a-keyed-account"
        ),
        pytest.param(
            lambda: build_frame("1234", "BA", "1", key=KEYS["128A"]), Reason.NO_KEY, id="encrypted-no-key"
        ),
        pytest.param(
            # pysiaalarm's senders pad with "0": a printable pad, so the frame reads and the missing
            # timestamp is what refuses it.
            lambda: build_frame("128A", "BA", "1", key=KEYS["128A"], stamped=False, pad=b"0000"),
            Reason.NO_TIMESTAMP,
            id="encrypted-without-timestamp",
        ),
        pytest.param(lambda: b"\nthis is not a DC-09 frame\r", Reason.UNREADABLE, id="garbage"),
        pytest.param(
            lambda: build_frame("1234", "BA", "1").replace(b"BA", b"B\x00"), Reason.UNREADABLE, id="nul"
        ),
    ],
)
def test_each_refusal_is_the_standards_nak_with_the_receivers_timestamp(
    accounts: Accounts, make: object, reason: Reason
) -> None:
    refusal = refused(make(), accounts)  # type: ignore[operator]

    assert refusal.reason == reason
    if reason != Reason.UNREADABLE:
        assert NAK.fullmatch(refusal.answer.decode()), refusal.answer
    reply = read_reply(refusal.answer)
    assert (reply.kind, reply.crc_ok) == ("NAK", True)
    assert reply.timestamp is not None and abs(reply.timestamp - datetime.now(UTC)) < timedelta(seconds=5)


# --- an ID token the receiver does not take: DUH ------------------------------------------------------------


def unsupported(raw: bytes, accounts: Accounts) -> Unsupported:
    found = read_frame(raw, accounts)
    assert isinstance(found, Unsupported), found
    return found


def test_a_correct_frame_of_an_unsupported_id_token_is_answered_duh_not_nak(accounts: Accounts) -> None:
    """ANSI/SIA DC-09-2013: DUH for a message received correctly that the receiver cannot process; a
    NAK has the panel send it again, for ever."""
    found = unsupported(
        build_frame("1234", message_type="XYZ-DATA", data="#1234|hello", sequence=21), accounts
    )

    assert (found.token, found.account, found.source_key, found.encrypted) == (
        "XYZ-DATA",
        "1234",
        "receiver",
        False,
    )
    reply = read_reply(found.answer)
    assert (reply.kind, reply.crc_ok, reply.encrypted) == ("DUH", True, False)
    assert reply.text.endswith('"DUH"0021R1L1#1234[]')  # the sequence, receiver, line and account echoed


def test_an_encrypted_frame_of_an_unsupported_token_gets_the_plain_duh(accounts: Accounts) -> None:
    raw = build_frame("128A", message_type="XYZ-DATA", data="#128A|hello", key=KEYS["128A"], sequence=4)

    found = unsupported(raw, accounts)

    assert (found.token, found.encrypted) == ("XYZ-DATA", True)
    assert read_reply(found.answer).text.endswith('"DUH"0004R1L1#128A[]')


def test_an_unsupported_token_of_an_account_no_source_claims_is_answered_duh(accounts: Accounts) -> None:
    found = unsupported(build_frame("9999", message_type="MODEM IIe", data="x", sequence=2), accounts)

    assert (found.token, found.account, found.source_key) == ("MODEM IIe", "9999", None)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(lambda raw: corrupt_crc(raw), Reason.BAD_CRC, id="bad-crc"),
    ],
)
def test_a_damaged_frame_of_an_unsupported_token_is_still_nak(
    accounts: Accounts, damage: object, reason: Reason
) -> None:
    raw = build_frame("1234", message_type="XYZ-DATA", data="#1234|hello")

    refusal = refused(damage(raw), accounts)  # type: ignore[operator]

    assert (refusal.reason, refusal.frame_type) == (reason, UNSUPPORTED)  # a bounded label, not the token
    assert read_reply(refusal.answer).kind == "NAK"


def test_an_empty_line_is_not_answered(accounts: Accounts) -> None:
    assert read_frame(b"\n\r", accounts) is None


def test_a_nak_without_a_readable_header_names_receiver_and_line_zero() -> None:
    assert re.fullmatch(r'\n[0-9A-F]{8}"NAK"0000R0L0A0\[\]_[0-9:,-]+\r', nak().decode())


# --- what frames report -----------------------------------------------------------------------------------


def test_every_event_of_a_block_is_reported_with_its_zone_and_modifiers(accounts: Accounts) -> None:
    received = datetime.now(UTC)
    frame = read(build_frame("1234", data="#1234|Nri1/BA03/ri2/id7/BA04/AFront door", sequence=5), accounts)

    events = events_of(frame, received)

    assert [(e.code, e.zone, e.message) for e in events] == [
        ("BA", "03", "Front door"),
        ("BA", "04", "Front door"),
    ]
    assert events[0].payload["modifiers"] == {"area": "1"}
    assert events[1].payload["modifiers"] == {"area": "2", "user": "7"}
    assert events[0].dedupe_key().unique != events[1].dedupe_key().unique
    assert {e.source_key for e in events} == {"receiver"}


def test_a_block_without_an_event_code_goes_to_a_person_as_an_unknown_code(accounts: Accounts) -> None:
    events = events_of(read(build_frame("1234", data="#1234|Nri1/x?y"), accounts), datetime.now(UTC))

    assert len(events) == 1
    assert not events[0].classify().known
    assert "x?y" in (events[0].message or "")


def test_a_packet_that_is_not_understood_is_kept_in_the_message(accounts: Accounts) -> None:
    (event,) = events_of(read(build_frame("1234", data="#1234|NFA2/%%"), accounts), datetime.now(UTC))

    assert (event.code, event.zone, event.message) == ("FA", "2", "unread: %%")


@pytest.mark.parametrize(
    ("data", "reported"),
    [
        # Layouts real panels send (pysiaalarm's own cases, from its users' panels): a modifier run
        # into its event without a "/", and text between carets after the event.
        pytest.param("#1234|Nri1BA03", ("BA", "03", None, {"area": "1"}), id="modifier-run-in"),
        pytest.param("#1234|Nri1CL0^VX FRONTE ^", ("CL", "0", "VX FRONTE", {"area": "1"}), id="closing"),
        pytest.param("#1234|Nri0KR1^TAST. 001 ^", ("KR", "1", "TAST. 001", {"area": "0"}), id="restore"),
        pytest.param(
            "#1234|Nri1/BA03^Front door^", ("BA", "03", "Front door", {"area": "1"}), id="caret-text"
        ),
        pytest.param("#1234|Nti10:15id7BA05", ("BA", "05", None, {"time": "10:15", "user": "7"}), id="time"),
    ],
)
def test_an_event_run_into_its_modifiers_or_followed_by_caret_text_keeps_its_code(
    accounts: Accounts, data: str, reported: tuple[str, str, str | None, dict[str, str]]
) -> None:
    """Read as a modifier swallowing the rest ("ri" = "1BA03"), such a block had no code: the burglary
    became an unknown code, the restore opened an alarm instead of restoring one."""
    (event,) = events_of(read(build_frame("1234", data=data), accounts), datetime.now(UTC))

    assert (event.code, event.zone, event.message, event.payload.get("modifiers")) == reported
    assert event.classify().known


@pytest.mark.parametrize("key", [None, KEYS["128A"]], ids=["plain", "encrypted"])
def test_a_contact_id_frame_with_several_extended_blocks_is_read_and_keeps_them(
    accounts: Accounts, key: bytes | None
) -> None:
    """The standard allows several extended-data blocks (here longitude and latitude); pysiaalarm's
    Contact ID pattern takes one, and the frame was NAKed (an encrypted one blamed on its key)."""
    account = "128A" if key else "1234"
    data = f"#{account}|1130 01 003][X006E07.7777777][Y49N06.6666666"
    frame = read(build_frame(account, message_type=ADM_CID, data=data, key=key), accounts)

    (event,) = events_of(frame, datetime.now(UTC))

    assert (event.code, event.zone) == ("BA", "003")
    assert frame.extended == "X006E07.7777777][Y49N06.6666666"
    assert event.payload["dc09"]["extended"] == frame.extended


def test_contact_id_is_mapped_to_sia_and_an_unmapped_code_is_kept_for_a_person(accounts: Accounts) -> None:
    burglary = read(build_frame("1234", message_type=ADM_CID, data="#1234|1130 01 003"), accounts)
    odd = read(build_frame("1234", message_type=ADM_CID, data="#1234|1999 02 011"), accounts)

    (mapped,) = events_of(burglary, datetime.now(UTC))
    (unmapped,) = events_of(odd, datetime.now(UTC))

    assert (mapped.code, mapped.zone, mapped.classify().known) == ("BA", "003", True)
    assert (unmapped.code, unmapped.zone, unmapped.classify().known) == ("E999", "011", False)
    assert unmapped.message == "Contact ID E999 partition 02 zone 011"


@pytest.mark.parametrize(
    ("contact_id", "code"),
    [
        pytest.param("1602", "RP", id="periodic-test"),
        # pysiaalarm's table says TX (a test report of unknown kind): the periodic test would not count.
        pytest.param("1608", "RY", id="periodic-test-with-a-trouble-present"),
        pytest.param("1601", "RX", id="manual-test"),
    ],
)
def test_contact_id_periodic_tests_are_the_sia_automatic_tests(
    accounts: Accounts, contact_id: str, code: str
) -> None:
    frame = read(build_frame("1234", message_type=ADM_CID, data=f"#1234|{contact_id} 01 000"), accounts)

    (event,) = events_of(frame, datetime.now(UTC))

    assert (event.code, event.classify().known) == (code, True)
    assert event.message == f"Contact ID E{contact_id[1:]} partition 01 zone 000"


@pytest.mark.parametrize(
    ("contact_id", "code", "priority"),
    [
        # The fire group (110-118): water flow is the sprinkler's, not a leak; pull station and duct.
        pytest.param("1113", "SA", "life_safety", id="water-flow-is-a-sprinkler-alarm"),
        pytest.param("1115", "FA", "life_safety", id="pull-station"),
        pytest.param("1116", "FA", "life_safety", id="duct-detector"),
        pytest.param("1123", "PA", "life_safety", id="audible-panic"),
        # A silent burglary is no holdup; a high temperature (a freezer) is no fire.
        pytest.param("1146", "BA", "property", id="silent-burglary"),
        pytest.param("1158", "UA", "property", id="high-temperature"),
        # Restores and closings: never a second alarm, never a guard sent on a restore.
        pytest.param("3423", "DR", "property", id="door-restoral"),
        pytest.param("3654", "NS", "property", id="activity-resumed"),
        pytest.param("3470", "BU", "technical", id="unbypass"),
        pytest.param("3471", "FU", "technical", id="fire-unbypass"),
        # Openings and closings of every day, in seed 001's list (not a person paged at life-safety).
        pytest.param("1402", "OG", "informational", id="group-opening"),
        pytest.param("3402", "CG", "informational", id="group-closing"),
        pytest.param("1407", "OP", "informational", id="remote-disarm"),
        pytest.param("3407", "CL", "informational", id="remote-arm"),
        pytest.param("1441", "OP", "informational", id="disarmed-from-stay"),
        pytest.param("1456", "OG", "informational", id="partial-arm-opening"),
        pytest.param("3456", "CG", "informational", id="partial-arm-closing"),
        pytest.param("1384", "XT", "technical", id="rf-low-battery"),
        pytest.param("1459", "CR", "property", id="recent-closing"),
        pytest.param("1607", "TS", "informational", id="walk-test"),
    ],
)
def test_contact_id_events_pysiaalarm_misreads_are_their_sia_codes(
    accounts: Accounts, contact_id: str, code: str, priority: str
) -> None:
    frame = read(build_frame("1234", message_type=ADM_CID, data=f"#1234|{contact_id} 01 007"), accounts)

    (event,) = events_of(frame, datetime.now(UTC))

    classified = event.classify()
    assert (event.code, classified.known, str(classified.priority)) == (code, True, priority)


def test_no_contact_id_restore_opens_an_alarm() -> None:
    # Qualifier 3 is a restore (or a closing): read as an alarm, it would send a guard on a restore.
    alarms = {
        event_type: codes["3"]
        for event_type, codes in _CID_MAPPING.items()
        if "3" in codes and str(sia.lookup(codes["3"]).kind) == "alarm"
    }
    assert alarms == {}


def test_every_contact_id_alarm_of_the_life_safety_groups_is_a_known_code() -> None:
    # 100-199 (medical, fire, panic, burglary, general, 24-hour): an unknown code dispatches nothing.
    # 118 "near alarm" (a fire pre-alarm) is left to a person on purpose.
    mapped = {f"{n}" for n in range(100, 200)} & set(_CID_MAPPING)
    unknown = {n: _CID_MAPPING[n]["1"] for n in mapped if not sia.lookup(_CID_MAPPING[n]["1"]).known}
    assert unknown == {}
    assert {"110", "111", "112", "113", "114", "115", "116", "117", "120", "121", "122", "123"} <= mapped


@pytest.mark.parametrize(
    ("header", "block"),
    [
        pytest.param("1a2b", "1a2b", id="lower-case"),
        pytest.param("1A2B", "1a2b", id="lower-case-block"),
        pytest.param("1a2b", "1A2B", id="lower-case-header"),
        pytest.param("1A2b", "1a2B", id="mixed"),
    ],
)
def test_a_contact_id_frame_is_read_whatever_the_case_of_its_hex_account(
    accounts: Accounts, header: str, block: str
) -> None:
    """DC-09 accounts are hex: pysiaalarm's Contact ID pattern took upper-case only, and NAKed the rest."""
    raw = build_frame(header, message_type=ADM_CID, data=f"#{block}|1130 01 003", sequence=3)

    frame = read(raw, accounts)

    assert (frame.account, frame.site.key, frame.source.key) == (header, "hq", "receiver")
    (event,) = events_of(frame, datetime.now(UTC))
    assert (event.account, event.code, event.zone) == (header, "BA", "003")
    assert event.payload["dc09"]["data"] == f"#{block}|1130 01 003"  # the block as sent
    assert read_reply(frame.ack()).text.endswith(f'"ACK"0003R1L1#{header}[]')  # echoed as sent


def test_an_encrypted_contact_id_frame_of_a_lower_case_account_is_read(accounts: Accounts) -> None:
    raw = build_frame("128a", message_type=ADM_CID, data="#128a|3130 02 011", key=KEYS["128A"])

    frame = read(raw, accounts)

    (event,) = events_of(frame, datetime.now(UTC))
    assert (frame.account, frame.encrypted, event.code, event.zone) == ("128a", True, "BH", "011")


def test_an_sia_frame_of_a_lower_case_account_is_read(accounts: Accounts) -> None:
    frame = read(build_frame("1a2b", "BA", "4"), accounts)

    assert [(e.code, e.zone) for e in events_of(frame, datetime.now(UTC))] == [("BA", "4")]


def test_a_null_frame_reports_no_event(accounts: Accounts) -> None:
    frame = read(build_frame("1234", message_type=NULL, sequence=0), accounts)

    assert frame.message_type == NULL
    assert events_of(frame, datetime.now(UTC)) == []


def test_a_retransmission_has_the_dedupe_key_of_the_first_sending_and_a_new_event_another(
    accounts: Accounts,
) -> None:
    stamp = datetime.now(UTC)
    first = build_frame("1234", "BA", "1", sequence=7, timestamp=stamp)
    again = events_of(read(first, accounts), stamp + timedelta(seconds=20))[0]
    once = events_of(read(first, accounts), stamp)[0]
    newer = events_of(read(build_frame("1234", "BA", "1", sequence=8, timestamp=stamp), accounts), stamp)[0]

    assert once.dedupe_key() == again.dedupe_key()
    assert once.dedupe_key() != newer.dedupe_key()


def test_an_unstamped_frame_is_recognised_by_its_sequence_within_the_window(accounts: Accounts) -> None:
    stamp = datetime.now(UTC)
    first = events_of(read(build_frame("1234", "BA", "1", sequence=7, stamped=False), accounts), stamp)[0]
    again = events_of(read(build_frame("1234", "BA", "1", sequence=7, stamped=False), accounts), stamp)[0]
    newer = events_of(read(build_frame("1234", "BA", "1", sequence=8, stamped=False), accounts), stamp)[0]

    assert (first.sender_event_id, first.occurred_at) == (None, None)
    assert first.dedupe_key().content == again.dedupe_key().content
    assert first.dedupe_key().content != newer.dedupe_key().content


# --- the ledger threads -------------------------------------------------------------------------------------


def test_the_ledger_threads_take_the_most_urgent_waiting_frame_first() -> None:
    pool = PriorityPool(threads=1)
    gate = threading.Event()
    order: list[str] = []
    try:
        blocker = pool.submit(0, gate.wait)  # holds the only thread
        waiting = [
            pool.submit(rank, lambda name=name: order.append(name))
            for rank, name in ((3, "test"), (2, "trouble"), (0, "fire"), (1, "burglary"))
        ]
        gate.set()
        for future in (blocker, *waiting):
            future.result(timeout=10)
    finally:
        pool.shutdown()

    assert order == ["fire", "burglary", "trouble", "test"]


def test_a_frames_own_text_is_the_events_message_the_alarm_and_its_vendors_read(accounts: Accounts) -> None:
    """The panel's words for the zone ("Front door") reach the alarm's page and every step's context
    (TrackTik's note, the call's message), which read an event's text from its payload's `message`."""
    frame = read(build_frame("1234", data="#1234|Nri1/BA03^Front door^"), accounts)

    (event,) = events_of(frame, datetime.now(UTC))
    assert (event.code, event.zone, event.message) == ("BA", "03", "Front door")
    assert event.payload["message"] == "Front door"


def test_a_frame_without_text_puts_no_message_in_its_payload(accounts: Accounts) -> None:
    (event,) = events_of(read(build_frame("1234", data="#1234|Nri1/BA03"), accounts), datetime.now(UTC))
    assert event.message is None and "message" not in event.payload


@pytest.mark.parametrize("named", ["#128A", "#128a", "#00128A"])
def test_an_encrypted_frame_whose_data_names_its_own_account_another_way_is_read(
    accounts: Accounts, named: str
) -> None:
    """Panels pad or case the account in the data block their own way: the same account, not a
    mismatch (a NAK would lose the alarm: the panel sends it again, NAKed again, for ever)."""
    frame = read(build_frame("128A", key=KEYS["128A"], data=f"{named}|NBA03"), accounts)
    assert frame.account == "128A"


def test_an_encrypted_frame_whose_data_names_another_account_is_refused_as_a_mismatch(
    accounts: Accounts,
) -> None:
    refusal = refused(build_frame("128A", key=KEYS["128A"], data="#1128A|NBA03"), accounts)
    assert refusal.reason == "account_mismatch"
