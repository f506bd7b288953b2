"""The example sites file with test credentials, shared by the intake tests; and what the deployment
tests build their own sites files from (``site_toml``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from app.domain.sites import Sites
from app.domain.sites_file import load_sites

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SITES = REPO / "config" / "examples" / "sites.toml"
PANEL_TOKEN = "panel-token-0123456789abcdef"
PANEL_TOKEN_NEXT = "panel-token-rotated-456789ab"
ALTA_TOKEN = "alta-token-0123456789abcdef"
SIGNING_KEY = b"k" * 32
SIGNING_KEY_OLD = b"o" * 32
SIGNING_SECRET = "whsec_" + base64.b64encode(SIGNING_KEY).decode()
SIGNING_SECRET_OLD = "whsec_" + base64.b64encode(SIGNING_KEY_OLD).decode()
SOURCE_ENV = {
    "ACME_PANELS_TOKEN": f"{PANEL_TOKEN},{PANEL_TOKEN_NEXT}",
    "ACME_PANELS_WHSEC": f"{SIGNING_SECRET},{SIGNING_SECRET_OLD}",
    "ALTA_MAIN_TOKEN": ALTA_TOKEN,
}
MONTREAL_ACCOUNT = "ab-95367"  # commercial plan: burglary has a cancellable call after 60 s
NEWTON_ACCOUNT = "1f4a"  # residential plan
ALTA_ZONE = "az-5d1c"


def example_sites() -> Sites:
    """The example sites file, loaded with the test credentials."""
    return load_sites(EXAMPLE_SITES, SOURCE_ENV)


def dual_path_sites(directory: Path) -> Sites:
    """The example sites, with Montréal's panel also reporting through a second path: a gateway that
    posts the same signals as a source of its own, ``acme-gateway`` (as a DC-09 link beside an HTTP
    path would). Written to ``directory``/sites.toml."""
    text = EXAMPLE_SITES.read_text()
    text = text.replace(
        "[sources.alta-main]",
        '[sources.acme-gateway]\nkind = "panel"\ntoken_env = "ACME_GATEWAY_TOKEN"\n\n[sources.alta-main]',
        1,
    )
    listed = 'sources = ["acme-panels", "alta-main"]'
    assert listed in text
    text = text.replace(listed, 'sources = ["acme-panels", "acme-gateway", "alta-main"]', 1)
    path = directory / "sites.toml"
    path.write_text(text)
    return load_sites(path, {**SOURCE_ENV, "ACME_GATEWAY_TOKEN": "gateway-token-0123456789abcdef"})


# -- sites files of the deployment tests --------------------------------------------------------------
# Each stack writes a sites file of its own: its sources and plans as TOML text, and its sites with
# ``site_toml``, which renders one site's table and its location table from Python values.

TRACKTIK_FIRE = {"alarm_organization": 687, "alarm_type_codes": {"fire": "FIRE", "default": "INTRUSION"}}
TRACKTIK_INTRUSION = {"alarm_organization": 687, "alarm_type_codes": {"default": "INTRUSION"}}


def location(
    name: str,
    address_line1: str,
    city: str,
    state: str,
    country: str,
    postal_code: str,
    coordinates: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A site's ``location`` table; ``coordinates`` are (latitude, longitude)."""
    found: dict[str, Any] = {
        "name": name,
        "address_line1": address_line1,
        "city": city,
        "state": state,
        "country": country,
        "postal_code": postal_code,
    }
    if coordinates is not None:
        found["latitude"], found["longitude"] = coordinates
    return found


def new_york(name: str, *, coordinates: bool = True) -> dict[str, Any]:
    """A location at 350 5th Ave, New York, where most test sites are."""
    where = (40.7484, -73.9857) if coordinates else None
    return location(name, "350 5th Ave", "New York", "NY", "US", "10118", where)


def site_toml(
    key: str,
    *,
    location: dict[str, Any],
    timezone: str = "America/New_York",
    site_type: str = "COMMERCIAL",
    **fields: Any,
) -> str:
    """``[sites.<key>]`` with ``fields`` (tables inline) and ``[sites.<key>.location]``, as TOML."""
    values = {**fields, "timezone": timezone, "site_type": site_type}
    body = "".join(f"{name} = {toml_value(value)}\n" for name, value in values.items())
    where = "".join(f"{name} = {toml_value(value)}\n" for name, value in location.items())
    return f"\n[sites.{key}]\n{body}\n[sites.{key}.location]\n{where}"


def toml_value(value: Any) -> str:
    """A TOML value (inline) for a string, number, boolean, list or mapping."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML value for {value!r}")
