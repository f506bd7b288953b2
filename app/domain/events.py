"""Event: the single normalised shape of every signal, whatever sent it.

An Alta zone webhook and a panel's SIA event arrive in different bodies; from here on the ledger,
the plans and the workers see one shape. The dedupe key that recognises a retried delivery and the
classification (family, kind, priority) that picks the plan are decided here, once.

A retried or replayed delivery is recognised by the first of these the event has:

1. the sender's event id (per source): the same id is the same event, whenever it comes again;
   with a sequence number as well (a stamped DC-09 frame, whose id holds its timestamp), also what
   it says plus that number within the dedupe window, as in 3: a panel re-stamps a frame it
   retransmits once the first stamp is too old for the receiver;
2. its own time: a hash of what it says and when it says it happened (a retry carries both);
3. neither: a hash of what it says, matched against the events recorded within the dedupe window
   of its receive time (a sliding window, looked up by intake), and, for a signed delivery, its
   ``webhook-id`` (per source): a replay of a captured request is the same event for as long as the
   ledger keeps it, far beyond the ±5 minutes its signature can be replayed in. What it says includes
   the sender's sequence number when it has one (a DC-09 frame without a timestamp): a panel repeats
   the number when it retransmits and moves on for a new event, so a second real alarm of the same
   zone within the window is never taken for a retransmission of the first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from app.domain import sia
from app.domain.site_tables import normalise

SourceKind = Literal["panel", "alta"]

# An Alta Protect alarm zone reports people or vehicles detected where nobody should be: an
# intrusion, so it takes the burglary plan at property priority (a verified "Valid alarm" included).
ALTA_FAMILY = sia.Family.BURGLARY
ALTA_KIND = sia.Kind.ALARM
ALTA_PRIORITY = sia.Priority.PROPERTY


@dataclass(frozen=True, slots=True)
class Classification:
    """What an event means to the bridge: it selects the plan, the queue and the grouping."""

    family: str
    kind: str
    priority: str
    description: str
    known: bool = True  # False: a code outside the catalogue, flagged for a person


@dataclass(frozen=True, slots=True)
class Event:
    """One received signal, normalised.

    ``account`` is the routing identifier (the panel's account number, or the Alta alarm zone id);
    ``zone`` is the zone within it (the panel's zone, or the Alta zone id again).
    """

    source_key: str
    source_kind: SourceKind
    received_at: datetime
    account: str
    code: str | None = None  # SIA code; None for Alta
    zone: str | None = None
    message: str | None = None
    occurred_at: datetime | None = None  # the sender's clock, kept beside ours
    sender_event_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # source-specific extras (Alta device, url...)
    payload: dict[str, Any] = field(default_factory=dict)  # the body as received
    # The signed delivery's `webhook-id` (with `#index` for an item of a batch); None when unsigned.
    delivery_id: str | None = None
    # A sender time that was given but could not be used (it was dropped; the receive time stands).
    unusable_time: str | None = None
    # The sender's own message number (DC-09: the frame's sequence number, with the event's place in
    # a frame of several); part of what an event without an id or a time of its own says.
    sequence: str | None = None

    def classify(self) -> Classification:
        """Family, kind and priority from the SIA catalogue (or the Alta convention above)."""
        if self.source_kind == "alta":
            name = self.details.get("alarm_zone_name") or self.account
            return Classification(ALTA_FAMILY, ALTA_KIND, ALTA_PRIORITY, f"Alta alarm zone {name}")
        entry = sia.lookup(self.code or "")
        description = entry.description if entry.known else f"unknown event code {self.code!r}"
        return Classification(entry.family, entry.kind, entry.priority, description, entry.known)

    def dedupe_key(self, *, per_account: bool = False) -> DedupeKey:
        """The keys that make a retried delivery of this event recognisable (module docstring).

        The first two are the keys rows were always written with: a retry that spans an upgrade is
        still recognised. ``per_account``: the sender's id scoped by the account too, for an id that
        another account of the same source already used (panels behind one gateway number their
        events each from 1): intake falls back to it only then, so every key written before stands.
        """
        if self.sender_event_id and per_account:
            said = f"{self.source_key}\x00{normalise(self.account)}\x00{self.sender_event_id}"
            content = self._content_digest(None) if self.sequence is not None else None
            return DedupeKey(f"id-account:{hashlib.sha256(said.encode()).hexdigest()}", content)
        if self.sender_event_id:
            digest = hashlib.sha256(f"{self.source_key}\x00{self.sender_event_id}".encode()).hexdigest()
            # A sequence number too (a stamped DC-09 frame): a retransmission the panel stamps anew
            # has another id, and is the same event when it says the same under the same number
            # within the window, whichever receiver process takes it.
            content = self._content_digest(None) if self.sequence is not None else None
            return DedupeKey(f"id:{digest}", content)
        if self.occurred_at is not None:
            return DedupeKey(f"content:{self._content_digest(self.occurred_at.isoformat())}")
        content = self._content_digest(None)
        if self.delivery_id:
            digest = hashlib.sha256(f"{self.source_key}\x00{self.delivery_id}".encode()).hexdigest()
            return DedupeKey(f"delivery:{digest}", content)
        # Unique per receive time: two rows of one content collide only when received at the same
        # instant, which makes them the same event anyway.
        received = hashlib.sha256(f"{content}\x00{self.received_at.isoformat()}".encode()).hexdigest()
        return DedupeKey(f"window:{received}", content)

    def _content_digest(self, when: str | None) -> str:
        said = [
            self.source_key,
            self.account,
            self.code,
            self.zone,
            self.message,
            when,
            self.details.get("phase"),
        ]
        if self.sequence is not None:  # appended only when set: the keys of every other event stand
            said.append(self.sequence)
        content = json.dumps(said, separators=(",", ":"), default=str)
        return hashlib.sha256(content.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DedupeKey:
    """How intake recognises a retried delivery of an event.

    ``unique``: the event row's ``dedupe_key``, which the database keeps unique. ``content``: set only
    for an event without an id or a time of its own; an event of the same content recorded within
    the dedupe window of this one's receive time is this event.
    """

    unique: str
    content: str | None = None
