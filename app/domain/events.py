"""Event: the single normalised shape of every signal, whatever sent it.

An Alta zone webhook and a panel's SIA event arrive in different bodies; from here on the ledger,
the plans and the workers see one shape. The dedupe key that recognises a retried delivery and the
classification (family, kind, priority) that picks the plan are decided here, once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from app.domain import sia

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

    def classify(self) -> Classification:
        """Family, kind and priority from the SIA catalogue (or the Alta convention above)."""
        if self.source_kind == "alta":
            name = self.details.get("alarm_zone_name") or self.account
            return Classification(ALTA_FAMILY, ALTA_KIND, ALTA_PRIORITY, f"Alta alarm zone {name}")
        entry = sia.lookup(self.code or "")
        description = entry.description if entry.known else f"unknown event code {self.code!r}"
        return Classification(entry.family, entry.kind, entry.priority, description, entry.known)

    def dedupe_key(self, window_s: float) -> str:
        """The key that makes a retried delivery of this event recognisable.

        With a sender event id: source + id. Without one: a hash of what the event says, and of its
        own time when it carries one (a retry carries the same time); otherwise of the receive time
        rounded to ``window_s``, so a re-sent identical body within the window is one event.
        """
        if self.sender_event_id:
            digest = hashlib.sha256(f"{self.source_key}\x00{self.sender_event_id}".encode()).hexdigest()
            return f"id:{digest}"
        when = (
            self.occurred_at.isoformat()
            if self.occurred_at is not None
            else f"bucket:{int(self.received_at.timestamp() // max(window_s, 1))}"
        )
        content = json.dumps(
            [
                self.source_key,
                self.account,
                self.code,
                self.zone,
                self.message,
                when,
                self.details.get("phase"),
            ],
            separators=(",", ":"),
            default=str,
        )
        return f"content:{hashlib.sha256(content.encode()).hexdigest()}"
