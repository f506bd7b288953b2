"""RapidSOS's settings (``RAPIDSOS_*``): its Alert Management API and its OAuth2 client credentials."""

from dataclasses import dataclass
from typing import ClassVar

from config.settings import VendorSettings, setting


@dataclass(frozen=True, slots=True)
class RapidSOSSettings(VendorSettings):
    """RapidSOS's Alert Management API and the client credentials its tokens are issued for."""

    prefix: ClassVar[str] = "RAPIDSOS"
    description: ClassVar[str] = "RapidSOS Alert Management API"

    base_url: str = "http://127.0.0.1:8100/rapidsos"
    client_id: str = "sandbox-rapidsos-client"
    client_secret: str = setting("sandbox-rapidsos-secret", secret=True)
