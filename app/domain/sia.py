"""SIA DC-05 event-code catalogue: what each code a panel posts means to alarm-bridge.

A panel says "BA" or "FT"; which plan runs, which Celery queue carries the work, whether a cancel
window may hold it and which later code closes it all follow from what the code means. That meaning is
data: ``sia_codes.toml`` beside this module holds every code of seed 001 (the CallOnAlarm list) with
its family, kind, priority and the codes it clears. It is loaded and validated once, at import, so a
bad edit stops the process at start-up with the code named instead of misrouting the first alarm.

Lookups never raise. A code outside the catalogue is accepted as family and kind ``unknown``, marked
``known=False`` for a person to look at, and treated as a possible life-threatening alarm: life-safety
priority (the top of every queue), never held for a cancel window, and never dispatched on a guess:
only a plan list named ``unknown`` runs for it (CONTRACTS Part A item 17).

Decisions the contracts left open, recorded here and in the data file:

- A restore is not a cancel (CONTRACTS §6.4). Cancels are the ``cancel`` kind (``BC``, ``FC``, ``OC``)
  and openings by a user's code or key (``OP``, ``OR``, ``OH``, ``OL``, ``OJ``, ``OK``, ``OS``).
  ``OA`` (automatic), ``OZ`` (one point) and ``OG`` (a partial disarm reported by area, with no user)
  are not. Each cancel names the families it cancels (``cancels``): ``BC`` burglary; ``OC`` and the
  openings by a user the intrusion families (burglary, access); ``FC`` fire, which is never held, so
  it is recorded on the fire alarm and stops nothing.
- Never held for a cancel window: fire, sprinkler, heat, gas, medical, emergency, holdup and panic (the
  families whose alarm is life-safety, gas included because ``GA`` is CO), and unknown codes.
- Cancels carry no restore pairs: they act on the site's held alarms through the cancel window.
"""

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from importlib import resources
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar

# Below both the domain and the ledger (whose queries order by it); re-exported for this module's users.
from app.ledger.enums import Priority as Priority


class Family(StrEnum):
    """What a signal is about."""

    FIRE = "fire"
    BURGLARY = "burglary"
    HOLDUP = "holdup"
    PANIC = "panic"
    MEDICAL = "medical"
    EMERGENCY = "emergency"
    GAS = "gas"
    HEAT = "heat"
    WATER = "water"
    FREEZE = "freeze"
    SPRINKLER = "sprinkler"
    TAMPER = "tamper"
    ACCESS = "access"  # openings/closings, doors, user codes
    POWER = "power"
    SYSTEM = "system"
    NETWORK = "network"
    TEST = "test"
    UNTYPED = "untyped"
    UNKNOWN = "unknown"  # only for codes outside the catalogue


class Kind(StrEnum):
    """What a signal says happened (alarm, restore, cancel, ...)."""

    ALARM = "alarm"
    RESTORE = "restore"
    TROUBLE = "trouble"
    TROUBLE_RESTORE = "trouble_restore"
    SUPERVISORY = "supervisory"
    BYPASS = "bypass"
    UNBYPASS = "unbypass"
    CANCEL = "cancel"
    OPENING = "opening"
    CLOSING = "closing"
    TEST = "test"
    STATUS = "status"
    UNKNOWN = "unknown"  # only for codes outside the catalogue


QueueName = Literal["life_safety", "default", "bulk"]


class CatalogueError(ValueError):
    """The SIA data file is inconsistent; the message names the code at fault."""


@dataclass(frozen=True, slots=True)
class SiaCode:
    """One SIA event code and what it means to alarm-bridge."""

    code: str
    description: str
    family: Family
    kind: Kind
    priority: Priority
    restores: tuple[str, ...] = ()  # the condition codes this code clears or ends
    pairs: tuple[str, ...] = ()  # every code paired with this one, in either direction, sorted
    cleared_by: tuple[str, ...] = ()  # the codes that clear or end this condition
    by_user: bool = False  # an opening made with a user's code or key: a cancel
    from_alarm: bool = False  # an opening of an area that was in alarm (OR, OH, OL)
    raises_priority: bool = False  # makes the alarm it accompanies more likely real (CR)
    cancels: tuple[str, ...] = ()  # a cancel: the families of the account's alarms it cancels
    known: bool = True  # False: not in the catalogue; flag the event for a person


# Families whose alarms go out at once: nobody waits for a cancel that might come. "unknown" is in the
# set because a code we cannot read might be a fire, and a person is flagged to look at it anyway.
NEVER_HELD_FAMILIES: Final = frozenset(
    {
        Family.FIRE,
        Family.SPRINKLER,
        Family.HEAT,
        Family.GAS,
        Family.MEDICAL,
        Family.EMERGENCY,
        Family.HOLDUP,
        Family.PANIC,
        Family.UNKNOWN,
    }
)

_QUEUE_BY_PRIORITY: Final[Mapping[Priority, QueueName]] = MappingProxyType(
    {
        Priority.LIFE_SAFETY: "life_safety",
        Priority.PROPERTY: "default",
        Priority.TECHNICAL: "bulk",
        Priority.INFORMATIONAL: "bulk",
    }
)

_RESTORE_KINDS: Final = frozenset({Kind.RESTORE, Kind.TROUBLE_RESTORE})

# Which kinds may clear which. A kind absent from the keys may not carry `restores` at all (a cancel
# acts through the cancel window, not through a pair).
_CLEARABLE_KINDS: Final[Mapping[Kind, frozenset[Kind]]] = MappingProxyType(
    {
        Kind.RESTORE: frozenset({Kind.ALARM, Kind.SUPERVISORY, Kind.TROUBLE, Kind.STATUS}),
        Kind.TROUBLE_RESTORE: frozenset({Kind.TROUBLE}),
        Kind.UNBYPASS: frozenset({Kind.BYPASS}),
        Kind.TEST: frozenset({Kind.TEST}),  # test end closes test begin (TS -> TE, FI -> FK)
        Kind.STATUS: frozenset({Kind.STATUS}),  # session end closes session begin (LB -> LX, LF -> LE)
    }
)
# Kinds that only make sense as the clearing half of a pair.
_MUST_CLEAR_KINDS: Final = frozenset({Kind.RESTORE, Kind.TROUBLE_RESTORE, Kind.UNBYPASS})

_CODE_PATTERN: Final = re.compile(r"[A-Z]{2}")
_REQUIRED_KEYS: Final = ("description", "family", "kind", "priority")
_FLAG_KEYS: Final = ("by_user", "from_alarm", "raises_priority")
_ENTRY_KEYS: Final = frozenset({*_REQUIRED_KEYS, "restores", "cancels", *_FLAG_KEYS})
_DATA_FILE: Final = "sia_codes.toml"
_UNKNOWN_DESCRIPTION: Final = "Unknown code (not in the SIA catalogue)"

_FAMILIES: Final[Mapping[str, Family]] = MappingProxyType({family.value: family for family in Family})
_PRIORITIES: Final[Mapping[str, Priority]] = MappingProxyType(
    {priority.value: priority for priority in Priority}
)

_EnumT = TypeVar("_EnumT", Family, Kind, Priority)


def build_catalogue(document: Mapping[str, Any]) -> Mapping[str, SiaCode]:
    """Validate a parsed catalogue document (``{"codes": {code: entry}}``) and index it by code.

    The reverse side of every pair (``cleared_by``) is derived here, so the data file writes each pair
    once, on the clearing code.

    Raises:
        CatalogueError: the document is malformed; the message names the first code at fault.
    """
    if set(document) != {"codes"}:
        raise CatalogueError(f"the catalogue must hold exactly one table, [codes]; found {sorted(document)}")
    table = document["codes"]
    if not isinstance(table, Mapping) or not table:
        raise CatalogueError("[codes] must be a non-empty table")
    entries = {code: _parse_entry(code, entry) for code, entry in table.items()}

    cleared_by: dict[str, list[str]] = {code: [] for code in entries}
    for code, entry in entries.items():
        for target in entry.restores:
            target_entry = entries.get(target)
            if target_entry is None:
                raise CatalogueError(f"{code}: restores {target}, which is not in the catalogue")
            if target_entry.kind not in _CLEARABLE_KINDS[entry.kind]:
                raise CatalogueError(f"{code}: a {entry.kind} cannot clear {target}, a {target_entry.kind}")
            cleared_by[target].append(code)

    catalogue = {
        code: replace(
            entry,
            cleared_by=tuple(sorted(cleared_by[code])),
            pairs=tuple(sorted({*entry.restores, *cleared_by[code]})),
        )
        for code, entry in entries.items()
    }
    for code, entry in catalogue.items():
        for other in entry.pairs:
            if code not in catalogue[other].pairs:
                raise CatalogueError(f"{code}: pairs with {other}, but {other} does not pair back")
    return MappingProxyType(catalogue)


def _parse_entry(code: object, entry: object) -> SiaCode:
    """Check one ``[codes]`` entry on its own; pairs are checked by the caller."""
    if not isinstance(code, str) or not _CODE_PATTERN.fullmatch(code):
        raise CatalogueError(f"{code!r}: a code is two upper-case letters")
    if not isinstance(entry, Mapping):
        raise CatalogueError(f"{code}: the entry must be a table")
    unexpected = set(entry) - _ENTRY_KEYS
    if unexpected:
        raise CatalogueError(f"{code}: unexpected keys {sorted(unexpected)}")
    missing = [key for key in _REQUIRED_KEYS if key not in entry]
    if missing:
        raise CatalogueError(f"{code}: missing {missing}")

    description = entry["description"]
    if not isinstance(description, str) or not description.strip():
        raise CatalogueError(f"{code}: description must be non-empty text")
    family = _member(code, "family", Family, entry["family"])
    kind = _member(code, "kind", Kind, entry["kind"])
    priority = _member(code, "priority", Priority, entry["priority"])
    if family is Family.UNKNOWN or kind is Kind.UNKNOWN:
        raise CatalogueError(f"{code}: 'unknown' is reserved for codes outside the catalogue")
    flags = {key: entry.get(key, False) for key in _FLAG_KEYS}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise CatalogueError(f"{code}: {key} must be true or false")

    restores = entry.get("restores", [])
    if not isinstance(restores, list) or not all(isinstance(target, str) for target in restores):
        raise CatalogueError(f"{code}: restores must be a list of codes")
    if len(set(restores)) != len(restores) or code in restores:
        raise CatalogueError(f"{code}: restores lists a code twice, or the code itself")
    if restores and kind not in _CLEARABLE_KINDS:
        raise CatalogueError(f"{code}: a {kind} carries no restores (a cancel is not a restore)")
    if kind in _MUST_CLEAR_KINDS and not restores:
        raise CatalogueError(f"{code}: a {kind} must name the codes it restores")

    # Only alarms threaten life; a restore or a trouble of a fire zone is not itself life-safety.
    if priority is Priority.LIFE_SAFETY and kind is not Kind.ALARM:
        raise CatalogueError(f"{code}: only an alarm can be life_safety, not a {kind}")
    if (flags["by_user"] or flags["from_alarm"]) and kind is not Kind.OPENING:
        raise CatalogueError(f"{code}: by_user and from_alarm apply to openings only")
    if flags["from_alarm"] and not flags["by_user"]:
        raise CatalogueError(f"{code}: an opening from alarm is a disarm by a user (by_user = true)")
    cancels = _cancelled_families(code, entry.get("cancels"), kind is Kind.CANCEL or flags["by_user"])

    return SiaCode(
        code=code,
        description=description,
        family=family,
        kind=kind,
        priority=priority,
        restores=tuple(restores),
        by_user=flags["by_user"],
        from_alarm=flags["from_alarm"],
        raises_priority=flags["raises_priority"],
        cancels=cancels,
    )


def _cancelled_families(code: str, raw: object, is_a_cancel: bool) -> tuple[str, ...]:
    """A cancel must say which families it cancels, and nothing else may say it."""
    if raw is None:
        if is_a_cancel:
            raise CatalogueError(f"{code}: a cancel or an opening by a user must list what it cancels")
        return ()
    if not is_a_cancel:
        raise CatalogueError(f"{code}: only a cancel or an opening by a user (by_user) cancels families")
    if not isinstance(raw, list) or not raw or len(set(map(str, raw))) != len(raw):
        raise CatalogueError(f"{code}: cancels must be a non-empty list of distinct families")
    return tuple(_member(code, "cancels", Family, value).value for value in raw)


def _member(code: str, field: str, enum: type[_EnumT], value: object) -> _EnumT:
    """The enum member spelt ``value``, or a CatalogueError naming the code and the field."""
    for member in enum:
        if member.value == value:
            return member
    allowed = ", ".join(member.value for member in enum)
    raise CatalogueError(f"{code}: {field} {value!r} is not one of {allowed}")


def _load_packaged_catalogue() -> Mapping[str, SiaCode]:
    """Read and validate the data file shipped beside this module."""
    package = __name__.rpartition(".")[0]
    text = (resources.files(package) / _DATA_FILE).read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{_DATA_FILE}: {exc}") from exc
    return build_catalogue(document)


CATALOGUE: Final[Mapping[str, SiaCode]] = _load_packaged_catalogue()


def _normalise(code: object) -> str:
    """Trim and upper-case a code as panels and scripts send it ("ba " is BA)."""
    if not isinstance(code, str):
        return ""
    text = code.strip()
    # ASCII only: str.upper() turns "ß" into "SS" and "ﬀ" into "FF", making real codes out of garbage.
    return text.upper() if text.isascii() else text


def lookup(code: str) -> SiaCode:
    """The catalogue entry for ``code``; never raises.

    Surrounding blanks and lower case are forgiven. Anything else outside the catalogue (``JC``,
    ``"B"``, ``"garbage"``) comes back with family and kind ``unknown``, priority ``life_safety`` (when
    in doubt, it might be a fire: it goes to the top of the queue) and ``known=False``, so the caller
    raises it to a person.
    """
    normalised = _normalise(code)
    entry = CATALOGUE.get(normalised)
    if entry is not None:
        return entry
    return SiaCode(
        code=normalised,
        description=_UNKNOWN_DESCRIPTION,
        family=Family.UNKNOWN,
        kind=Kind.UNKNOWN,
        priority=Priority.LIFE_SAFETY,
        known=False,
    )


def restore_codes_for(code: str) -> tuple[str, ...]:
    """The codes that clear or end the condition ``code`` reports (``BA`` -> ``BH``, ``BR``).

    Never a cancel: cancels are found with :func:`is_cancel`, not by pairing.
    """
    return lookup(code).cleared_by


def conditions_cleared_by(code: str) -> tuple[str, ...]:
    """The condition codes that ``code`` clears or ends (``BR`` -> ``BA``, ``BM``, ``BS``, ...)."""
    return lookup(code).restores


_RANK: Final[Mapping[str, int]] = MappingProxyType({priority: priority.rank for priority in Priority})


def rank(priority: str) -> int:
    """Which signal goes first where several wait (the web's gate, the receiver's ledger threads):
    lower first; a priority outside the catalogue's goes last."""
    return _RANK.get(priority, len(_RANK))


def is_life_safety(code: str) -> bool:
    """True for the alarms that threaten life (FA, FM, SA, GA, KA, HA, PA, MA, QA) and unknown codes."""
    return lookup(code).priority is Priority.LIFE_SAFETY


def is_cancel(code: str) -> bool:
    """True for a cancel (``BC``, ``FC``, ``OC``) or an opening by a user's code or key.

    Restores are not cancels, and neither are openings nobody made (``OA`` automatic, ``OZ`` a point,
    ``OG`` an area). What a cancel acts on is :func:`families_cancelled_by`.
    """
    return bool(lookup(code).cancels)


def families_cancelled_by(code: str) -> tuple[str, ...]:
    """The families of the account's alarms ``code`` cancels (``BC`` -> burglary); empty if none.

    Within the site's cancel window the cancel stands those alarms' response down, except for the
    families that are never held (:func:`never_held_for_cancel`): ``FC`` lists fire, so it is recorded
    on the fire alarm, and stops nothing.
    """
    return lookup(code).cancels


def is_restore(code: str) -> bool:
    """True for an alarm restore or a trouble restore (``BH``, ``BR``, ``FJ``, ``AR``, ...).

    A restore records that a zone or device is back to normal; it does not stop the response.
    """
    return lookup(code).kind in _RESTORE_KINDS


def never_held_for_cancel(code_or_family: str) -> bool:
    """True when an alarm of this code or family must never wait for a cancel window.

    Accepts a family value (``"fire"``) or a code (``"FA"``). Fire, sprinkler, heat, gas, medical,
    emergency, holdup and panic are never held, nor is any code outside the catalogue.
    """
    family = _FAMILIES.get(code_or_family)
    if family is not None:
        return family in NEVER_HELD_FAMILIES
    entry = lookup(code_or_family)
    return entry.family in NEVER_HELD_FAMILIES or entry.priority is Priority.LIFE_SAFETY


def queue_for(priority_or_code: str) -> QueueName:
    """The Celery queue for a priority value (``"technical"``) or for a code's priority (``"FA"``).

    life_safety -> ``life_safety``; property -> ``default``; technical, informational -> ``bulk``.
    A code outside the catalogue goes to ``life_safety``: it might be a fire.
    """
    priority = _PRIORITIES.get(priority_or_code)
    if priority is None:
        priority = lookup(priority_or_code).priority
    return _QUEUE_BY_PRIORITY[priority]
