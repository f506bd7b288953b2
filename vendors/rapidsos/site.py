"""RapidSOS's table in a site, and what RapidSOS needs of the site's location (seed 004).

``[sites.<key>.rapidsos]`` holds the agreed call flow and the emergency contacts; the location must
be coordinates or a civic address within RapidSOS's limits, which the RapidSOS task maps through too.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, cast

from app.domain.site_tables import ArrayOf, Phone, Report, TableOf, TableSchema, Text, show
from vendors.base import SiteContext, SiteTable

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


class _ContactSchema(TableSchema):
    """One of ``emergency_contacts``."""

    name = Text(required=True, example='a full name like "Jane Roe"')
    phone = Phone(required=True)
    relationship = Text()
    language = Text()

    def make(self, data: dict[str, Any]) -> EmergencyContact:
        return EmergencyContact(**data)


class RapidSOSSiteSchema(TableSchema):
    """``[sites.<key>.rapidsos]``."""

    # Read (and reported) in field order; an unknown key's hint lists them as the docs do.
    KEYS = ("callflow", "emergency_contacts", "alarm_permit_number", "site_phone")

    callflow = Text(required=True, example='the agreed flow name like "CentralStationABCFireAlarmFlow"')
    alarm_permit_number = Text()
    site_phone = Phone()
    emergency_contacts = ArrayOf(
        TableOf[EmergencyContact](_ContactSchema, example="a table like { name = ..., phone = ... }"),
        example='an array like [{ name = "Jane Roe", phone = "+15145550100" }]',
        too_many=(
            MAX_EMERGENCY_CONTACTS,
            lambda count: (
                f"has {count} contacts; RapidSOS takes at most {MAX_EMERGENCY_CONTACTS} "
                "(the keyholder and three more)"
            ),
        ),
    )

    def make(self, data: dict[str, Any]) -> RapidSOSSite:
        return RapidSOSSite(**data)


def check(report: Report, context: SiteContext) -> None:
    """RapidSOS needs coordinates or a complete civic address within its limits (seed 004).

    Presence is judged from the file, so that a value already reported as malformed is not also
    reported as missing.
    """
    location, site_type = context.location, context.site_type
    if location is None or "rapidsos" not in context.raw:
        return
    where = f"{context.where}.location"
    present = cast(Mapping[str, object], context.raw["location"]).keys()
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


TABLE: Final = SiteTable(name="rapidsos", type=RapidSOSSite, schema=RapidSOSSiteSchema, check=check)
