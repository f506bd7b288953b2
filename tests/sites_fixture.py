"""The example sites file with test credentials: shared by the intake tests."""

from __future__ import annotations

import base64
from pathlib import Path

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
