"""How the dashboard shows ledger values: UTC times to the millisecond, ages, labels, and which of an
alarm's refs are upstream ids, video links or other notes.

Everything shown comes from outside at some point (zone names, descriptions, video links), so it
goes through Jinja's autoescaping; a link is only made clickable when it is plain http(s). Which refs
are upstream ids (and what they are called) and which hold video links, the vendors declare.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from app.domain.plans import format_duration
from vendors import UPSTREAM_IDS, VIDEO_LINK_REFS


@dataclass(frozen=True, slots=True)
class Link:
    """A link as shown: ``url`` is None when it is not plain http(s), and then only its text shows."""

    text: str
    url: str | None


@dataclass(frozen=True, slots=True)
class Refs:
    """An alarm's refs sorted for the page."""

    upstream_ids: list[tuple[str, str]]
    video_links: list[Link]
    other: list[tuple[str, str]]


def parse(iso: str | None) -> datetime | None:
    """The ledger's ISO-8601 time back as a datetime (the queries hand out strings)."""
    return datetime.fromisoformat(iso) if iso else None


def clock(iso: str | None) -> str:
    """``HH:MM:SS.mmm`` (UTC), or an empty string."""
    moment = parse(iso)
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}" if moment else ""


def stamp(iso: str | None) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm UTC``, or an empty string."""
    moment = parse(iso)
    return f"{moment:%Y-%m-%d} {clock(iso)} UTC" if moment else ""


def age(iso: str | None, now: datetime) -> str:
    """How long ago, coarsely: ``42 s``, ``7 min``, ``3 h 05 min``, ``2 d 4 h``."""
    moment = parse(iso)
    if moment is None:
        return ""
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours == 0:
        return f"{minutes} min"
    if days == 0:
        return f"{hours} h {minutes % 60:02d} min"
    return f"{days} d {hours % 24} h"


def duration(seconds: int | None) -> str:
    """A period in whole seconds as the sites file writes it (``"25h"``, ``"1h5m"``), or ``""``."""
    return "" if seconds is None else format_duration(timedelta(seconds=seconds))


def label(value: str | None) -> str:
    """A ledger word (``life_safety``, ``needs_person``) as people read it."""
    return (value or "").replace("_", " ")


def http_url(value: Any) -> str | None:
    """The value when it is an absolute http(s) URL (never ``javascript:`` and the like), else None."""
    if not isinstance(value, str):
        return None
    parts = urlsplit(value.strip())
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def sort_refs(refs: dict[str, Any] | None) -> Refs:
    """Upstream ids first (known names, in order), then the video links, then anything else."""
    refs = refs or {}
    upstream = [(name, _text(refs[key])) for key, name in UPSTREAM_IDS.items() if refs.get(key) is not None]
    video: list[Link] = []
    for ref in VIDEO_LINK_REFS:
        links = refs.get(ref)
        if isinstance(links, str | dict):
            links = [links]
        video += [_link(item) for item in links] if isinstance(links, list) else []
    other = [
        (label(key), _text(value))
        for key, value in sorted(refs.items())
        if key not in UPSTREAM_IDS and key not in VIDEO_LINK_REFS
    ]
    return Refs(upstream_ids=upstream, video_links=video, other=other)


def _link(item: Any) -> Link:
    # Workers write a list of URLs; a list of {"url": ...} objects is read the same way.
    url = item.get("url") if isinstance(item, dict) else item
    return Link(text=_text(url), url=http_url(url))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)
