"""The CAD's settings (``CAD_*``): where incidents are uploaded, and the token that may upload them."""

from dataclasses import dataclass
from typing import ClassVar

from config.settings import VendorSettings, setting


@dataclass(frozen=True, slots=True)
class CadSettings(VendorSettings):
    """The CAD's incident upload and its API token."""

    prefix: ClassVar[str] = "CAD"
    description: ClassVar[str] = "the CAD incident upload (token with 'Manage Events')"

    base_url: str = "http://127.0.0.1:8100/cad"
    token: str = setting("sandbox-cad-token", secret=True)
