"""Alta's settings (``ALTA_*``): its API and login, and how long its steps wait for what Alta lists late."""

from dataclasses import dataclass
from typing import ClassVar

from environs import validate

from config.settings import VendorSettings, setting


@dataclass(frozen=True, slots=True)
class AltaSettings(VendorSettings):
    """Alta Video's API, its login, and the bounded waits of its steps."""

    prefix: ClassVar[str] = "ALTA"
    description: ClassVar[str] = "Alta Video API and its login"

    base_url: str = "http://127.0.0.1:8100/alta"
    username: str = "api@sandbox.alta.example"
    password: str = setting("sandbox-alta-password", secret=True)
    lookup_timeout_s: float = setting(
        120.0, check=validate.Range(min=1), doc="how long to keep looking for the ongoing alert of a webhook"
    )
    video_wait_s: float = setting(
        30.0,
        check=validate.Range(min=0),
        doc="how long a TrackTik alarm for an Alta alarm waits for the video links",
    )
