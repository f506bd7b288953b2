"""What a DC-09 frame reports, as the Events intake records.

An SIA-DCS data block is ``N`` (a new event) then packets separated by ``/``: modifiers (``ri`` area,
``id`` user, ``pi`` peripheral, ``ti`` time), events (a two-letter code and its address: the zone, or
the user for an opening or closing) and text (``A…``), e.g. ``Nri1/BA03`` or ``Nti10:15/ri4/FA2/BA05``.
The block is read here rather than through pysiaalarm's one-event reading, which keeps only the first
event of a block (the second alarm of ``Nri1/BA03/BA04`` would be lost) and misreads modifiers out of
its fixed order. Nothing is dropped: a packet that is neither a modifier, an event nor text is kept in
the event's message, and a block with no event in it is recorded as an unknown code for a person.

ADM-CID (Contact ID) is mapped to SIA codes with pysiaalarm's table (``1130`` → ``BA``, ``3130`` →
``BH``), but for ``1608`` (periodic test report with a trouble present), which the table makes ``TX``
(an unspecified test report) and which is ``RY`` (Test Off Normal): a periodic test as supervision
counts it (``app.domain.contact.AUTOMATIC_TEST_CODES``). A Contact ID code the table lacks is
recorded as itself (``E999``, ``R999``, ``P999``: new, restore, still present), which intake treats
as an unknown code: a person reads it.

Retransmissions: a panel repeats a frame it got no ACK for, with the same sequence number; it may
keep the frame's timestamp or stamp it anew (it must, once the first stamp is older than the
receiver's band). A stamped frame's events carry ``<account>/<sequence>/<timestamp>/<n>`` as their
sender event id, so the ledger's unique dedupe key answers a retransmission with the same stamp
whenever it comes. ``Retransmissions`` gives a re-stamped one the same ids: a frame that says the
same thing (account, ID token, sequence, data block) as one received within the dedupe window of it
keeps that frame's first timestamp in its ids, so the ledger answers it as a duplicate (ACK, no
second event). A frame of the same sequence that says something else (a panel that restarted its
numbering) is a new event, and so is the same frame once the window has passed (within it, the same
event sent anew under a used number is taken for a retransmission, as intake takes an unstamped
frame's). The memory is the process's; the ledger's window covers a restart: a stamped frame's
events carry the sequence number as well as their id, and intake takes an event that says the same
under the same number within the dedupe window for a retransmission (``Event.dedupe_key``). An
unstamped frame's events carry only the sequence number (``Event.sequence``): intake recognises them
within the dedupe window, and a new event a panel numbers anew is never taken for an old one even
when its sequence numbers wrap around or restart.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from pysiaalarm.data.adm_mapping import ADM_MAPPING

from app.domain.events import Event
from app.receiver.frames import ADM_CID, SIA_DCS, Frame, same_account

_MODIFIER = re.compile(r"(ri|id|pi|ti)(.{0,16})")
# A modifier run into the event that follows it, without a "/" (``ri1BA03``, ``ri0KR1^TAST. 001 ^``,
# as real panels send): numbers for area, user and peripheral, hh:mm[:ss] for the time.
_LEADING_MODIFIER = re.compile(r"(ri|id|pi)([0-9]{1,8})|(ti)([0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?)")
# An event with the text a panel may add between carets (``BA03^Front door^``).
_EVENT_WITH_TEXT = re.compile(r"([A-Z]{2})([0-9]{0,8})(?:\^([^^]*)\^?)?")
_MODIFIER_NAMES = {"ri": "area", "id": "user", "pi": "peripheral", "ti": "time"}
_CID_QUALIFIERS = {"1": "E", "3": "R", "6": "P"}  # new event or opening, restore or closing, still present
# Where pysiaalarm's table is wrong or silent, for events a panel reports every day. Qualifier 1 is a
# new event (or an opening), 3 a restore (or a closing):
# - 113 water flow is the sprinkler's (the fire group, 110-118): SA, not a water leak (WA);
# - 115 pull station and 116 duct detector are fire alarms, 123 an audible panic: pysiaalarm lacks
#   them, and an unknown code dispatches nothing (118 "near alarm", a pre-alarm, stays unknown: a
#   person decides);
# - 146 is a silent *burglary* (BA), not a holdup (HA: police told of a robbery, never cancelled);
# - 158 high temperature is an environmental sensor (a freezer, a server room), an untyped zone
#   alarm (UA), not a fire (KA would request a fire engine);
# - restores and closings pysiaalarm gives an alarm's or an opening's code: 3423 door restoral (DR,
#   not a second door forced), 3654 activity resumed (NS), 3470/3473/3471 unbypass (BU/FU), 1441
#   disarmed from stay (OP, an opening that cancels; CG was a closing), 456 partial arm (1 opens, 3
#   closes: pysiaalarm has them the other way round);
# - codes outside seed 001, which would page a person at life-safety priority for a routine event:
#   402 group opening/closing (OG/CG, not OB/CB), 407 remote disarm/arm (OP/CL, not OQ/CQ), 384 RF
#   battery (XT/XR), 459 recent closing (CR), 607 walk test (TS/TE);
# - 602 is the periodic test (RP) and 608 the same test sent with a trouble present, SIA's "Test Off
#   Normal" (RY), not a test report of unknown kind (TX).
_CID_MAPPING = {
    **ADM_MAPPING,
    "113": {"1": "SA", "3": "SH"},
    "115": {"1": "FA", "3": "FH"},
    "116": {"1": "FA", "3": "FH"},
    "123": {"1": "PA", "3": "PH"},
    "146": {"1": "BA", "3": "BH"},
    "158": {"1": "UA", "3": "UH"},
    "384": {"1": "XT", "3": "XR"},
    "402": {"1": "OG", "3": "CG"},
    "407": {"1": "OP", "3": "CL"},
    "423": {"1": "DF", "3": "DR"},
    "441": {"1": "OP", "3": "CG"},
    "456": {"1": "OG", "3": "CG"},
    "459": {"1": "CR", "3": "CR"},
    "470": {"1": "BB", "3": "BU"},
    "471": {"1": "FB", "3": "FU"},
    "473": {"1": "BB", "3": "BU"},
    "607": {"1": "TS", "3": "TE"},
    "608": {"1": "RY", "3": "RY"},
    "654": {"1": "NA", "3": "NS"},
}
MAX_MESSAGE_CHARS = 500
# Frames remembered at most (about 300 bytes each): at the receiver's measured 400 frames/s, two
# minutes of a storm; the oldest are forgotten first, and a forgotten frame's re-stamped
# retransmission is recorded a second time (never lost).
MAX_REMEMBERED_FRAMES = 50_000
_TRAILING_STAMP = re.compile(r"_\d\d:\d\d:\d\d,\d\d-\d\d-\d{4}\Z")


class Retransmissions:
    """The first timestamp of each frame received within the dedupe window, by what the frame says.

    Used from the connection loop only (one thread). A frame is remembered from its last sending:
    a panel that goes on repeating a frame, each time within the window of the one before, keeps
    its first timestamp however long it goes on.
    """

    def __init__(self, window: timedelta, capacity: int = MAX_REMEMBERED_FRAMES) -> None:
        self.window = window
        self.capacity = capacity
        self._frames: OrderedDict[bytes, tuple[datetime, datetime]] = OrderedDict()  # first stamp, last seen

    def first_timestamp(self, frame: Frame, received_at: datetime) -> datetime | None:
        """The timestamp ``frame``'s events are identified by: its first sending's, within the window.

        None for an unstamped frame (intake's window recognises its retransmissions).
        """
        if frame.timestamp is None:
            return None
        said = "\x00".join(
            (
                frame.source.key,
                frame.account.casefold(),
                frame.message_type,
                frame.sequence,
                _TRAILING_STAMP.sub("", frame.content),
            )
        )
        key = hashlib.blake2b(said.encode(), digest_size=16).digest()
        seen = self._frames.pop(key, None)
        first = seen[0] if seen is not None and received_at - seen[1] <= self.window else frame.timestamp
        self._frames[key] = (first, received_at)
        self._forget(received_at)
        return first

    def _forget(self, now: datetime) -> None:
        """Drop the frames last seen before the window (the oldest first), and any beyond capacity."""
        while self._frames:
            _, (_, last_seen) = next(iter(self._frames.items()))
            if now - last_seen <= self.window and len(self._frames) <= self.capacity:
                return
            self._frames.popitem(last=False)


def events_of(frame: Frame, received_at: datetime, first_timestamp: datetime | None = None) -> list[Event]:
    """The events ``frame`` reports, in the order it reports them; none for a NULL (link test) frame.

    ``first_timestamp`` (``Retransmissions``) identifies the events of a re-stamped retransmission as
    those of its first sending; by default the frame's own timestamp.
    """
    if frame.message_type == SIA_DCS:
        reported = _sia_events(_data_block(frame))
    elif frame.message_type == ADM_CID and frame.adm is not None:
        reported = [_contact_id_event(*frame.adm)]
    else:
        return []
    payload: dict[str, Any] = {
        "dc09": {
            "id": frame.message_type,
            "sequence": frame.sequence,
            "receiver": frame.receiver,
            "line": frame.line,
            "account": frame.account,
            "encrypted": frame.encrypted,
            "timestamp": frame.timestamp.isoformat() if frame.timestamp else None,
            "data": _data_block(frame) if frame.message_type == SIA_DCS else _block(frame),
            "extended": frame.extended,
            "data_account": frame.data_account,
        }
    }
    # A plain frame whose data names another account than its header: recorded under the header's
    # (the frames module's docstring), and the event's text says so for a person.
    mismatch = None
    if frame.data_account is not None and not same_account(frame.data_account, frame.account):
        mismatch = (
            f"the frame's data block names account {frame.data_account}, its header {frame.account}: "
            f"recorded as {frame.account}'s"
        )
    identified_by = first_timestamp or frame.timestamp
    stamp = identified_by.strftime("%Y%m%dT%H%M%SZ") if identified_by else None
    events = []
    for index, (code, zone, message, where) in enumerate(reported):
        if mismatch is not None:
            message = (f"{mismatch}; {message}" if message else mismatch)[:MAX_MESSAGE_CHARS]
        events.append(
            Event(
                source_key=frame.source.key,
                source_kind="panel",
                received_at=received_at,
                account=frame.account,
                code=code,
                zone=zone,
                message=message,
                occurred_at=frame.timestamp,
                sender_event_id=(
                    f"dc09/{frame.account.casefold()}/{frame.sequence}/{stamp}/{index}" if stamp else None
                ),
                sequence=f"{frame.sequence}/{index}",  # with the id: Event.dedupe_key
                payload={
                    **payload,
                    **({"modifiers": where} if where else {}),
                    # The text the alarm's page shows for an event (app.ledger.queries), and every
                    # step's context reads (app.domain.alarms): the panel's words for the zone.
                    **({"message": message} if message else {}),
                },
            )
        )
    return events


def _block(frame: Frame) -> str:
    """The block between ``[`` and ``]`` as sent, without the encryption's pad and its ``|``."""
    body = frame.content.removeprefix("|") if frame.encrypted else frame.content
    return body.split("]", 1)[0]


def _data_block(frame: Frame) -> str:
    """The block between ``[`` and ``]``, without the encryption's pad and the ``#<account>|`` prefix."""
    body = _block(frame)
    if body.startswith("#"):
        body = re.sub(r"^#[0-9A-Fa-f]*\|?", "", body)
    return body


_Reported = tuple[str, str | None, str | None, dict[str, str]]  # code, zone, message, modifiers


def _sia_events(block: str) -> list[_Reported]:
    """Each event of an SIA data block with its zone, the block's text and its modifiers."""
    packets = [p.strip() for p in re.split(r"[/|]", block.removeprefix("N"))]
    modifiers: dict[str, str] = {}
    found: list[tuple[str, str | None, dict[str, str]]] = []
    text: list[str] = []
    unread: list[str] = []
    for packet in packets:
        if (read := _modifiers_then_event(packet)) is not None:
            leading, code, zone, caret_text = read
            modifiers.update(leading)
            found.append((code, zone, dict(modifiers)))
            if caret_text:
                text.append(caret_text)
        elif (modifier := _MODIFIER.fullmatch(packet)) is not None:
            modifiers[_MODIFIER_NAMES[modifier[1]]] = modifier[2]
        elif packet.startswith("A") and len(packet) > 1:
            text.append(packet[1:])
        elif packet:
            unread.append(packet)
    message = " / ".join(text) or None
    if unread:
        message = f"{message + '; ' if message else ''}unread: {'/'.join(unread)}"
    if message is not None:
        message = message[:MAX_MESSAGE_CHARS]
    if not found:
        # Nothing a code could be read from: recorded as an unknown code, so a person reads the block.
        code = (unread[0] if unread else "N")[:16]
        return [(code, None, f"DC-09 data block {block!r} has no event code"[:MAX_MESSAGE_CHARS], modifiers)]
    return [(code, zone, message, where) for code, zone, where in found]


def _modifiers_then_event(packet: str) -> tuple[dict[str, str], str, str | None, str | None] | None:
    """A packet holding an event, after any modifiers run into it and with any text in carets:
    (modifiers, code, zone, text); None when the packet holds no event (a lone modifier, text)."""
    modifiers: dict[str, str] = {}
    rest = packet
    while (modifier := _LEADING_MODIFIER.match(rest)) is not None:
        name, value = (modifier[1], modifier[2]) if modifier[1] else (modifier[3], modifier[4])
        modifiers[_MODIFIER_NAMES[name]] = value
        rest = rest[modifier.end() :]
    event = _EVENT_WITH_TEXT.fullmatch(rest)
    if event is None:
        return None
    text = event[3].strip() if event[3] is not None else None
    return modifiers, event[1], event[2] or None, text or None


def _contact_id_event(qualifier: str, event_type: str, partition: str, zone: str) -> _Reported:
    """A Contact ID event as its SIA code (pysiaalarm's table, corrected above), or itself when unmapped."""
    code = _CID_MAPPING.get(event_type, {}).get(qualifier)
    contact_id = f"{_CID_QUALIFIERS.get(qualifier, qualifier)}{event_type}"
    message = f"Contact ID {contact_id} partition {partition} zone {zone}"
    return (code or contact_id, zone or None, message, {"area": partition} if partition else {})
