"""RapidSOS's table in a site, and what RapidSOS needs of the site's location (seed 004).

``[sites.<key>.rapidsos]`` holds the agreed call flow and the emergency contacts; the location must
be coordinates or a civic address within RapidSOS's limits, which the RapidSOS task maps through too.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, cast

from app.domain.site_tables import Report, Table, phone, show, toml_type
from vendors.base import SiteContext, SiteTable

KEYS: Final = ("callflow", "emergency_contacts", "alarm_permit_number", "site_phone")
CONTACT_KEYS: Final = ("name", "phone", "relationship", "language")

# Personal and vehicle sites are located by GPS coordinates (``variables.event.site_type``).
GEODETIC_SITE_TYPES: frozenset[str] = frozenset({"VEHICLE", "PERSONAL"})

# RapidSOS recommends at most three emergency contacts besides the primary keyholder (seed 004).
MAX_EMERGENCY_CONTACTS = 4

# RapidSOS's civic location limits (seed 004): a Location field -> (RapidSOS's name, min, max length).
# The sites file checks a site against them, and the RapidSOS task maps an address through them.
CIVIC: Mapping[str, tuple[str, int, int]] = MappingProxyType(
    {
        "name": ("name", 1, 200),
        "address_line1": ("street_1", 1, 200),
        "address_line2": ("street_2", 1, 200),
        "city": ("city", 1, 30),
        "state": ("state", 2, 2),
        "country": ("country", 1, 30),
        "postal_code": ("zip_code", 5, 5),
    }
)
CIVIC_REQUIRED = ("address_line1", "city", "state", "country", "postal_code")


@dataclass(frozen=True, slots=True)
class EmergencyContact:
    """A RapidSOS emergency contact; the first one is taken as the keyholder."""

    name: str
    phone: str  # E.164, with or without the leading "+"
    relationship: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class RapidSOSSite:
    """What RapidSOS needs besides the location and the site type (``POST /v1/alerts/``, seed 004)."""

    callflow: str
    emergency_contacts: tuple[EmergencyContact, ...] = ()
    alarm_permit_number: str | None = None
    site_phone: str | None = None


def load(report: Report, site: Table) -> RapidSOSSite | None:
    """The site's ``[sites.<key>.rapidsos]`` table, or None (absent, or its problems reported)."""
    raw = site.table("rapidsos")
    if raw is None:
        return None
    errors_before = len(report.lines)
    table = Table(report, site.at("rapidsos"), raw, KEYS)
    callflow = table.text(
        "callflow", required=True, example='the agreed flow name like "CentralStationABCFireAlarmFlow"'
    )
    permit = table.text("alarm_permit_number")
    site_phone = phone(report, table, "site_phone", required=False)
    raw_contacts = table.array(
        "emergency_contacts", example='an array like [{ name = "Jane Roe", phone = "+15145550100" }]'
    )
    contacts: list[EmergencyContact] = []
    if raw_contacts is not None and len(raw_contacts) > MAX_EMERGENCY_CONTACTS:
        report.add(
            table.at("emergency_contacts"),
            f"has {len(raw_contacts)} contacts; RapidSOS takes at most {MAX_EMERGENCY_CONTACTS} "
            "(the keyholder and three more)",
        )
    for index, raw_contact in enumerate(raw_contacts or ()):
        where = f"{table.at('emergency_contacts')}[{index}]"
        if not isinstance(raw_contact, dict):
            report.add(
                where, f"must be a table like {{ name = ..., phone = ... }}, not {toml_type(raw_contact)}"
            )
            continue
        contact = Table(report, where, raw_contact, CONTACT_KEYS)
        name = contact.text("name", required=True, example='a full name like "Jane Roe"')
        number = phone(report, contact, "phone", required=True)
        relationship = contact.text("relationship")
        language = contact.text("language")
        if name is not None and number is not None:
            contacts.append(
                EmergencyContact(name=name, phone=number, relationship=relationship, language=language)
            )
    if len(report.lines) > errors_before or callflow is None:
        return None
    return RapidSOSSite(
        callflow=callflow,
        emergency_contacts=tuple(contacts),
        alarm_permit_number=permit,
        site_phone=site_phone,
    )


def check(report: Report, context: SiteContext) -> None:
    """RapidSOS needs coordinates or a complete civic address within its limits (seed 004).

    Presence is judged from the file, so that a value already reported as malformed is not also
    reported as missing.
    """
    table, location, site_type = context.site, context.location, context.site_type
    if location is None or "rapidsos" not in table.raw:
        return
    where = table.at("location")
    present = cast(Mapping[str, object], table.raw["location"]).keys()
    has_coordinates = "latitude" in present and "longitude" in present
    for key, (rapidsos_name, low, high) in CIVIC.items():
        value = getattr(location, key)
        if value is not None and not low <= len(value) <= high:
            size = f"exactly {low}" if low == high else f"{low} to {high}"
            report.add(
                f"{where}.{key}",
                f"{show(value)} does not fit RapidSOS ({rapidsos_name} is {size} characters)",
            )
    missing = [key for key in CIVIC_REQUIRED if key not in present]
    if not has_coordinates and missing:
        report.add(
            f"{where}.{missing[0]}",
            "is required for RapidSOS: give latitude and longitude, or a full address "
            f"({', '.join(missing)} missing)",
        )
    if site_type in GEODETIC_SITE_TYPES and not has_coordinates:
        report.add(
            f"{where}.latitude", f"is required for RapidSOS: a {site_type} site is located by coordinates"
        )


TABLE: Final = SiteTable(name="rapidsos", type=RapidSOSSite, load=load, check=check)
