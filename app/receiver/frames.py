"""SIA DC-09 frames on the wire, read and written through pysiaalarm (CONTRACTS §9).

pysiaalarm does the format: the data block's fields, the frame's timestamp, and the ACK / NAK / DUH
answers (encrypted, with the receiver's time inside, when the frame was). The header is read here
with pysiaalarm's pattern, widened to any ID token; the CRC (CRC-16/ARC) is ``app.receiver.crc``'s,
for frames and answers alike (pysiaalarm's own, a bit at a time, cost milliseconds a frame on the
connection loop); a frame is decrypted here, once (AES-CBC with the zero IV, its pad read as the
standard writes it), and pysiaalarm is handed the clear text. This module decides nothing: what a
frame is answered, and when, is ``app.receiver.desk``'s.

A received frame is checked in this order, and its first failure is its refusal: unreadable (not a
DC-09 frame, or not printable ASCII), longer than a frame can be (checked before the CRC: a flood of
large frames costs no CRC it can avoid), a bad CRC, an account no dc09 source claims, a plain frame
from an account that has a key (or an encrypted one from an account that has none), a frame that
does not decrypt with the account's key, an encrypted frame whose data block names another account
than its header (``#<acct>|`` inside: the header is in clear, so anyone can change it, and a frame
captured from one account and re-addressed to another that shares its key would be that other's
alarm), an encrypted frame without a timestamp (its replay protection), and a timestamp outside the
source's band. A plain frame without an account in its header is routed by the account its data
block names (``[#1234|…``), as pysiaalarm reads it (an encrypted one needs its header's account:
that picks the key). A plain frame whose data block names another account is not refused (anyone
can write both accounts of a plain frame; refusing proves nothing and loses an alarm): it is
recorded under its header's account, and its events say which account the data named. Each refusal
is answered with the standard's NAK, which carries the receiver's timestamp so that a panel whose
clock drifted can correct it. A bad CRC is NAKed too, although pysiaalarm's own servers leave it
unanswered: the NAK names no account and no sequence (``"NAK"0000R…L…A0[]``), and it makes the
panel send a garbled alarm again at once instead of after its ACK timeout.

The length field is not a reason to refuse: the CRC already covers the frame, and some senders
(pysiaalarm's own test frames among them) compute the length wrongly. Refusing their frames would
make such a panel retry its alarm for ever; a frame whose length field is wrong but whose CRC is good
is read, and the mismatch is logged for a person (``receiver.length_mismatch``).

A frame whose length and CRC are good but whose ID token the receiver does not take (it takes
``SIA-DCS``, ``ADM-CID`` and ``NULL``, plain or encrypted) is answered DUH at once (``Unsupported``):
ANSI/SIA DC-09-2013's answer when the receiver is unable to process an otherwise correctly received
message (5.5.3.3 in the public review draft). A NAK asks for the frame again, and the panel would
send this one for ever. The DUH is not encrypted (as pysiaalarm writes it), echoes the sequence,
receiver, line and account, and is given whatever the account: nothing of the frame is processed,
so nor is its timestamp checked (an encrypted one cannot be read without the key).

An account is hex digits, and their case does not matter (``#1a2b`` is ``#1A2B``): routing and the
keys ignore it, and so must the reading. pysiaalarm's Contact ID pattern takes upper-case hex only,
so a panel sending a lower-case account had its ADM-CID frames refused (and sent them for ever); it
is handed the block with the account upper-cased. The frame keeps the account as sent: the answers
echo it, and intake records it as the site lists it.

Keys are the source's ``encryption_keys``: AES key bytes. pysiaalarm's accounts take a 16/24/32
character string and use its ASCII bytes; here the bytes are set on the account directly, so a key
written as 32/48/64 hex digits (the standard's notation) and pysiaalarm's ASCII keys both work
(``encryption_keys_format`` in the sites file says which one a source uses).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import structlog
from Crypto.Cipher import AES
from pysiaalarm.account import SIAAccount
from pysiaalarm.event import SIAEvent
from pysiaalarm.utils.enums import ResponseType

from app.domain.sites import Site, Sites, Source
from app.receiver.crc import frame_crc

log = structlog.get_logger(__name__)

SIA_DCS, ADM_CID, NULL = "SIA-DCS", "ADM-CID", "NULL"
SUPPORTED = frozenset((SIA_DCS, ADM_CID, NULL))
UNREADABLE = "unreadable"  # the frame-type label of a frame that is not DC-09 at all
UNSUPPORTED = "unsupported"  # the frame-type label of a DC-09 frame whose ID token we do not take
# A frame ends with CR. Its length field is "0" and three hex digits (at most 4095 characters from the
# first quote); with the LF, the CRC, the length field itself and the CR, no frame is longer than this.
FRAME_END = b"\r"
MAX_BODY_CHARS = 0xFFF
MAX_FRAME_BYTES = 1 + 4 + 4 + MAX_BODY_CHARS + 1
# pysiaalarm's MAIN_MATCHER, but with any ID token (up to 32 characters but '"' and '*'): a frame of a
# token we do not take is answered DUH once its length and CRC are checked, not refused as unreadable.
_HEADER = re.compile(
    r'(?P<crc>[0-9A-Fa-f]{4})(?P<length>[0-9A-Fa-f]{4})"(?P<encrypted_flag>\*)?(?P<message_type>[^"*]{1,32})"'
    r"(?P<sequence>[0-9]{4})(?P<receiver>R[0-9A-Fa-f]{1,6})?(?P<line>L[0-9A-Fa-f]{1,6})"
    r"#?(?P<account>[0-9A-Fa-f]{3,16})?\[(?P<rest>.*)"
)
# The account that opens a data block: "#1a2b|…", or "|#1a2b|…" after an encrypted frame's pad.
_BLOCK_ACCOUNT = re.compile(r"\A(\|?#)([0-9A-Fa-f]{3,16})")
# The same, only when the account is whole (a "|" or the block's end follows): the data's account.
_DATA_ACCOUNT = re.compile(r"\A\|?#([0-9A-Fa-f]{3,16})(?=[|\]])")
TIMESTAMP_FORMAT = "_%H:%M:%S,%m-%d-%Y"  # GMT
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_PRINTABLE_BYTES = re.compile(rb"[\x20-\x7e]*")
_ZERO_IV = bytes(16)  # the standard's CBC starts from a zero IV
_NOT_IN_PAD = b"|[]"
# The shortest text after a non-printable pad a frame may decrypt to: "|", a data block, "]" and the
# 20-character timestamp make any real frame's at least 22.
_MIN_CLEAR = 16
_REPLY = re.compile(
    r'(?P<crc>[0-9A-Fa-f]{4})(?P<length>[0-9A-Fa-f]{4})(?P<body>"(?P<encrypted>\*)?(?P<kind>ACK|NAK|DUH|RSP)"'
    r"(?P<rest>.*))"
)
_STAMP = re.compile(r"_(\d\d:\d\d:\d\d,\d\d-\d\d-\d{4})")


class Reason(StrEnum):
    """Why a frame was answered NAK: the label of ``alarm_bridge_dc09_refusals`` (a bounded set)."""

    UNREADABLE = "unreadable"
    TOO_LONG = "too_long"
    BAD_CRC = "bad_crc"
    UNKNOWN_ACCOUNT = "unknown_account"
    UNENCRYPTED = "unencrypted"  # a plain frame from an account that has a key
    NO_KEY = "no_key"  # an encrypted frame from an account that has none
    DECRYPT_FAILED = "decrypt_failed"
    ACCOUNT_MISMATCH = "account_mismatch"  # an encrypted frame whose data names another account
    NO_TIMESTAMP = "no_timestamp"  # an encrypted frame must carry one
    TIMESTAMP = "timestamp"  # outside the source's band
    LEDGER_UNAVAILABLE = "ledger_unavailable"
    INTERNAL_ERROR = "internal_error"


@dataclass
class _Answer(SIAEvent):
    """pysiaalarm's event as the vehicle of an answer chosen here.

    Its own ``response`` is decided by pysiaalarm's code table (DUH for a code it does not know);
    ``create_response`` is only the format, which is what is wanted of it, with our CRC: a NAK is
    built for every bad frame of a flood.
    """

    chosen: ResponseType | None = None

    @property
    def response(self) -> ResponseType | None:
        return self.chosen

    @staticmethod
    def _crc_calc(msg: str | None) -> str | None:
        return None if msg is None else frame_crc(msg)


def sia_account(account: str, key: bytes | None, band: tuple[int, int] | None = None) -> SIAAccount:
    """pysiaalarm's account: AES ``key`` bytes (None: plain frames) and the band (seconds past, future)."""
    found = SIAAccount(account_id=account, key=None, allowed_timeband=band)
    found.key_b = key  # the key's bytes, whatever notation the sites file wrote it in
    return found


def answer(
    kind: ResponseType,
    *,
    sequence: str,
    receiver: str | None,
    line: str | None,
    account: str,
    encrypted: bool,
    sia: SIAAccount,
) -> bytes:
    """The answer frame; an ACK to an encrypted frame is encrypted with the account's key."""
    return _Answer(
        chosen=kind,
        sequence=sequence,
        receiver=receiver or "R0",
        line=line or "L0",
        account=account,
        encrypted=encrypted,
        sia_account=sia,
    ).create_response()


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame that passed every check, with the dc09 source and the site its account belongs to."""

    message_type: str  # SIA-DCS, ADM-CID or NULL
    sequence: str
    receiver: str | None
    line: str | None
    account: str
    encrypted: bool
    timestamp: datetime | None  # the panel's clock, GMT
    content: str  # what follows "[" (decrypted, from the pad's closing "|" on), through the timestamp
    source: Source
    site: Site
    adm: tuple[str, str, str, str] | None = None  # ADM-CID: qualifier, event type, partition, zone
    extended: str | None = None  # extended data blocks ([X…], [K…]) as sent
    data_account: str | None = None  # the account the data block names (``#<acct>|``), as sent
    sia: SIAAccount = field(default_factory=SIAAccount, repr=False, compare=False)

    def ack(self) -> bytes:
        """The ACK (encrypted when the frame was): send it only once the frame is committed."""
        return answer(
            ResponseType.ACK,
            sequence=self.sequence,
            receiver=self.receiver,
            line=self.line,
            account=self.account,
            encrypted=self.encrypted,
            sia=self.sia,
        )

    def nak(self) -> bytes:
        """The NAK with the receiver's timestamp: the panel sends the frame again."""
        return nak(self.receiver, self.line)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A frame answered NAK at once, and why."""

    reason: Reason
    frame_type: str  # SIA-DCS, ADM-CID, NULL, unreadable or unsupported: a bounded metric label
    answer: bytes
    account: str | None = None
    source_key: str | None = None  # the dc09 source of the account, when one claims it
    data_account: str | None = None  # the account the data block names, when it is not ``account``


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A frame received correctly (length, CRC) whose ID token the receiver does not take: DUH at once."""

    token: str  # as sent, without the encryption's "*" (printable, at most 32 characters)
    answer: bytes
    account: str | None = None
    encrypted: bool = False
    source_key: str | None = None  # the dc09 source of the account, when one claims it


def nak(receiver: str | None = None, line: str | None = None) -> bytes:
    """The standard's NAK: ``"NAK"0000R<r>L<l>A0[]<receiver's timestamp>``."""
    return answer(
        ResponseType.NAK,
        sequence="0000",
        receiver=receiver,
        line=line,
        account="",
        encrypted=False,
        sia=SIAAccount(),
    )


class Accounts:
    """pysiaalarm's view of each dc09 account (its key and band), built on first use from the sites."""

    def __init__(self, sites: Sites) -> None:
        self.sites = sites
        self._books: dict[tuple[str, str], SIAAccount] = {}

    def book(self, source: Source, account: str) -> SIAAccount:
        """The account's pysiaalarm record (one per account; frames only read it)."""
        key = (source.key, account.casefold())
        found = self._books.get(key)
        if found is None:
            band = (int(source.timestamp_past.total_seconds()), int(source.timestamp_future.total_seconds()))
            found = self._books[key] = sia_account(account, source.encryption_key(account), band)
        return found


def read_frame(
    raw: bytes, accounts: Accounts, warn: Callable[..., None] | None = None
) -> Frame | Refusal | Unsupported | None:
    """Check one received frame (module docstring); None for an empty line (nothing to answer).

    ``warn`` logs what a person should see of a frame that is read all the same (a wrong length
    field): the desk passes its log budget, so a sender writing such frames cannot flood the log."""
    text = raw.decode("ascii", "replace").strip()
    if not text:
        return None
    match = _HEADER.match(text)
    if match is None or not _PRINTABLE.fullmatch(text):
        return Refusal(Reason.UNREADABLE, UNREADABLE, nak(*_prefix(match)))
    token = match["message_type"]
    frame_type = token if token in SUPPORTED else UNSUPPORTED
    encrypted = bool(match["encrypted_flag"])
    account = match["account"]
    if account is None and not encrypted:
        # pysiaalarm's pattern makes the header's account optional, and reads the data's instead.
        # An encrypted frame cannot do without it: it picks the key the data is read with.
        account = data_account_of(match["rest"])

    def refuse(reason: Reason, source: Source | None = None, data_account: str | None = None) -> Refusal:
        answer = nak(*_prefix(match))
        return Refusal(reason, frame_type, answer, account, source.key if source else None, data_account)

    body = text[8:]  # from the first quote on: what the length field counts and the CRC covers
    if len(body) > MAX_BODY_CHARS:
        return refuse(Reason.TOO_LONG)
    crc = frame_crc(body)
    if crc != match["crc"].upper():
        return refuse(Reason.BAD_CRC)
    declared = int(match["length"], 16)
    if declared != len(body):  # read all the same (module docstring)
        warning = warn or log.warning
        warning("receiver.length_mismatch", account=account, declared=declared, actual=len(body))
    route = accounts.sites.dc09_route(account) if account else None
    if frame_type == UNSUPPORTED:
        duh = answer(
            ResponseType.DUH,
            sequence=match["sequence"],
            receiver=match["receiver"],
            line=match["line"],
            account=account or "",
            encrypted=False,
            sia=SIAAccount(),
        )
        return Unsupported(token, duh, account, encrypted, route[0].key if route else None)
    if route is None:
        return refuse(Reason.UNKNOWN_ACCOUNT)
    source, site = route
    book = accounts.book(source, account)
    if encrypted != book.encrypted:
        return refuse(Reason.NO_KEY if encrypted else Reason.UNENCRYPTED, source)
    content = match["rest"]
    if encrypted:
        clear = _unpadded(content, book.key_b)
        if clear is None:
            return refuse(Reason.DECRYPT_FAILED, source)
        content = clear
    data_account = data_account_of(content)
    if encrypted and data_account is not None and not same_account(data_account, account):
        # Decrypted with this account's key, yet another account's frame (module docstring).
        return refuse(Reason.ACCOUNT_MISMATCH, source, data_account)
    # pysiaalarm's Contact ID pattern takes one extended-data block; the standard allows several
    # ([X…] longitude, [Y…] latitude, [H…] time, …). They are kept here, as pysiaalarm keeps an SIA
    # block's ("X…][Y…"), and the frame is read without them: a valid alarm is not NAKed for them.
    extended: str | None = None
    if frame_type == ADM_CID and (many := _MANY_EXTENDED.search(content)) is not None:
        extended = many["blocks"][1:-1]
        content = content[: many.start("blocks")] + (many["tail"] or "")
    try:
        event = SIAEvent(
            full_message=body,
            msg_crc=match["crc"],
            calc_crc=crc,  # given, so pysiaalarm does not compute it again a bit at a time
            length=match["length"],
            encrypted=encrypted,
            message_type=frame_type,
            sequence=match["sequence"],
            receiver=match["receiver"],
            line=match["line"],
            account=account,
            # Decrypted already: pysiaalarm reads the clear text, as encrypted; the account in
            # upper case, the only case its Contact ID pattern takes.
            content=_BLOCK_ACCOUNT.sub(_upper_account, content, count=1),
            sia_account=book,
        )
    # On a block it cannot read pysiaalarm raises EventFormatError, ValueError, and more: each of
    # them is a refusal, never a dead listener.
    except Exception:  # noqa: BLE001
        return refuse(Reason.DECRYPT_FAILED if encrypted else Reason.UNREADABLE, source)
    timestamp = event.timestamp if isinstance(event.timestamp, datetime) else None
    if encrypted and timestamp is None:
        return refuse(Reason.NO_TIMESTAMP, source)
    if not event.valid_timestamp:
        return refuse(Reason.TIMESTAMP, source)
    adm = None
    if frame_type == ADM_CID:
        adm = (event.event_qualifier or "", event.event_type or "", event.partition or "", event.ri or "")
    return Frame(
        message_type=frame_type,
        sequence=match["sequence"],
        receiver=match["receiver"],
        line=match["line"],
        account=account,
        encrypted=encrypted,
        timestamp=timestamp,
        content=content,
        source=source,
        site=site,
        adm=adm,
        extended=extended if extended is not None else event.x_data,
        data_account=data_account,
        sia=book,
    )


def same_account(one: str, other: str) -> bool:
    """Whether two spellings name one account: in any case, with or without leading zeros (panels
    pad the data block's account their own way)."""
    return one.casefold().lstrip("0") == other.casefold().lstrip("0")


def data_account_of(content: str) -> str | None:
    """The account a data block names (``#<acct>|``, after an encrypted frame's pad), as sent."""
    found = _DATA_ACCOUNT.match(content)
    return found[1] if found else None


# Two or more extended-data blocks after a Contact ID block, then the timestamp if any.
_MANY_EXTENDED = re.compile(r"\](?P<blocks>(?:\[[^\[\]]*\]){2,})(?P<tail>_[0-9:,-]*)?\Z")


def _upper_account(found: re.Match[str]) -> str:
    return f"{found[1]}{found[2].upper()}"


def _prefix(match: re.Match[str] | None) -> tuple[str | None, str | None]:
    return (match["receiver"], match["line"]) if match else (None, None)


def _unpadded(cipher: str, key: bytes | None) -> str | None:
    """The decrypted text from the end of the pad on, or None when the account's key does not decrypt it.

    The standard's pad (ANSI/SIA DC-09-2013 5.4.4.2) is pseudo-random bytes, any value 0-255 but
    ``|``, ``[`` and ``]``, ended by the first ``|``; from there on the text is printable ASCII
    (pysiaalarm, which reads the content, drops the pad's bytes above 127 and keeps the rest). A wrong
    key decrypts to noise, so the text after the pad must be printable, and when the pad itself is not
    (a standard panel's), at least ``_MIN_CLEAR`` characters long: noise passes that with a chance
    below one in a million, before the content and timestamp checks that follow. A frame whose whole
    plaintext is printable (pysiaalarm's senders pad with ``0``) is read as before.
    """
    try:
        plain = AES.new(key or b"", AES.MODE_CBC, _ZERO_IV).decrypt(bytes.fromhex(cipher))
    except ValueError:  # no key, a key of the wrong length, not hex, a partial block
        return None
    end = plain.find(b"|")
    pad, text = (b"", plain) if end < 0 else (plain[:end], plain[end:])
    if not _PRINTABLE_BYTES.fullmatch(text):
        return None
    if not _PRINTABLE_BYTES.fullmatch(pad) and len(text) < _MIN_CLEAR:
        return None
    return text.decode("ascii")


def standard_pad(length: int) -> bytes:
    """``length`` pad bytes as the standard has a panel send them: pseudo-random, any value but |, [ and ]."""
    pad = b""
    while len(pad) < length:
        pad += bytes(b for b in os.urandom(length) if b not in _NOT_IN_PAD)
    return pad[:length]


# --------------------------------------------------------------------------------------------------
# The sender's side: `alarm-bridge send-test-event --dc09`, the tests and the benchmark


def build_frame(
    account: str,
    code: str | None = None,
    zone: str | None = None,
    *,
    sequence: int = 1,
    key: bytes | None = None,
    timestamp: datetime | None = None,
    stamped: bool = True,
    area: str | None = None,
    receiver: str = "R1",
    line: str = "L1",
    message_type: str = SIA_DCS,
    data: str | None = None,
    pad: bytes | None = None,
) -> bytes:
    """A DC-09 frame as a panel sends it: ``<LF><crc><length>"<id>"<seq>R…L…#<acct>[<data>]<time><CR>``.

    ``data`` is the block inside the brackets; by default ``#<acct>|N[ri<area>/]<code><zone>`` for
    SIA-DCS and empty for NULL. With ``key`` (AES key bytes) the frame is encrypted as the standard
    says: pad bytes, ``|``, then the data and the timestamp. The pad is ``pad`` when given (its length
    must bring the encrypted part to a multiple of 16), else pseudo-random bytes as the standard has
    panels send (``standard_pad``). ``timestamp`` defaults to now; ``stamped=False`` leaves it out
    (allowed for plain frames only).
    """
    if data is None:
        if message_type == SIA_DCS:
            data = f"#{account}|N{f'ri{area}/' if area else ''}{code or ''}{zone or ''}"
        elif message_type == NULL:
            data = ""
        else:
            raise ValueError(f"give the data block of an {message_type} frame")
    stamp = (timestamp or datetime.now(UTC)).astimezone(UTC).strftime(TIMESTAMP_FORMAT) if stamped else ""
    content = f"{data}]{stamp}"
    if key is not None:
        plain = f"|{content}".encode("ascii")
        # A part already a multiple of 16 long still gets a pad: 16 bytes of it (the standard's rule).
        pad = standard_pad(16 - len(plain) % 16) if pad is None else pad
        content = AES.new(key, AES.MODE_CBC, _ZERO_IV).encrypt(pad + plain).hex().upper()
    flag = "*" if key is not None else ""
    body = f'"{flag}{message_type}"{sequence:04d}{receiver}{line}#{account}[{content}'
    return f"\n{frame_crc(body)}{len(body):04X}{body}\r".encode("ascii")


@dataclass(frozen=True, slots=True)
class Reply:
    """What a receiver answered a frame."""

    kind: str  # ACK, NAK, DUH or RSP; "" when the answer is not a DC-09 answer at all
    crc_ok: bool
    encrypted: bool
    text: str  # as received, without the LF and CR
    timestamp: datetime | None = None  # the receiver's clock (a NAK's; an encrypted ACK's, decrypted)


def read_reply(raw: bytes, key: bytes | None = None, account: str = "") -> Reply:
    """Read a receiver's answer; ``key`` decrypts an encrypted ACK's timestamp."""
    text = raw.decode("ascii", "replace").strip()
    match = _REPLY.fullmatch(text)
    if match is None:
        return Reply("", crc_ok=False, encrypted=False, text=text)
    crc_ok = frame_crc(match["body"]) == match["crc"].upper()
    encrypted = bool(match["encrypted"])
    plain = match["rest"]
    if encrypted and key is not None and "[" in plain:
        opener = _Answer(sia_account=sia_account(account, key))
        opener.encrypted_content = plain.split("[", 1)[1]
        try:
            opener.decrypt_content()
        except ValueError:  # not hex, or not whole AES blocks
            opener.content = ""
        plain = opener.content or ""
    stamp = _STAMP.search(plain)
    when = datetime.strptime(stamp[1], TIMESTAMP_FORMAT[1:]).replace(tzinfo=UTC) if stamp else None
    return Reply(match["kind"], crc_ok=crc_ok, encrypted=encrypted, text=text, timestamp=when)
