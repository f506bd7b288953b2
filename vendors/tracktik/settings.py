"""TrackTik's settings (``TRACKTIK_*``): its REST API and the OAuth2 password grant that signs in to it."""

from dataclasses import dataclass
from typing import ClassVar

from environs import validate

from config.settings import VendorSettings, setting


@dataclass(frozen=True, slots=True)
class TrackTikSettings(VendorSettings):
    """TrackTik's REST API and the credentials of its OAuth2 password grant."""

    prefix: ClassVar[str] = "TRACKTIK"
    description: ClassVar[str] = "TrackTik REST API and its OAuth2 password grant"

    base_url: str = "http://127.0.0.1:8100/tracktik"
    client_id: str = "sandbox-tracktik-client"
    client_secret: str = setting("sandbox-tracktik-secret", secret=True)
    username: str = "alarm-bridge-api"
    password: str = setting("sandbox-tracktik-password", secret=True)
    create_read_timeout_s: float = setting(
        35.0,
        check=validate.Range(min=0.1),
        doc=(
            "how long an alarm's create waits for TrackTik's answer; TrackTik itself answers 504 "
            "after 30 s, and a create given up earlier may still make its alarm after the search "
            "that looks for it, so a retry would dispatch a second guard. The step's deadline "
            "(TASK_SOFT_TIME_LIMIT_S) still bounds it"
        ),
    )
