"""RapidSOS's settings (``RAPIDSOS_*``): its Alert Management API, its OAuth2 client credentials, and
how long an alert's create waits for its answer."""

from dataclasses import dataclass
from typing import ClassVar

from environs import validate

from config.settings import VendorSettings, setting


@dataclass(frozen=True, slots=True)
class RapidSOSSettings(VendorSettings):
    """RapidSOS's Alert Management API and the client credentials its tokens are issued for."""

    prefix: ClassVar[str] = "RAPIDSOS"
    description: ClassVar[str] = "RapidSOS Alert Management API"

    base_url: str = "http://127.0.0.1:8100/rapidsos"
    client_id: str = "sandbox-rapidsos-client"
    client_secret: str = setting("sandbox-rapidsos-secret", secret=True)
    # 30 s: the create is sent with ``blocking: true`` and its answer waits for RapidSOS's create job,
    # which "can take seconds" (seed 004 and issue 13 give no bound). A create given up at the general
    # HTTP_READ_TIMEOUT_S (10 s) is an unknown outcome, and the task then sends it again: a second 911
    # alert for one incident. Waiting longer delays nobody, since the 911 request has already left
    # (the steps held behind it start once it is written to the socket). 30 s stays below the step's
    # own deadline (TASK_SOFT_TIME_LIMIT_S, 45 s by default), which still cuts the wait, below
    # TASK_TIME_LIMIT_S (60 s) and the lease (ACTION_LEASE_S, 90 s), and leaves 15 s of the 45 before
    # it for a token call when the cached token has lapsed (only when that call and the create are
    # both at their slowest does the deadline cut the wait short). A value below HTTP_READ_TIMEOUT_S
    # is taken as HTTP_READ_TIMEOUT_S (client.py), as TrackTik's is: no create waits less than a read.
    create_read_timeout_s: float = setting(
        30.0,
        check=validate.Range(min=0.1),
        doc=(
            "how long an alert's create waits for RapidSOS's answer: it is sent blocking, so the "
            "answer waits for RapidSOS's create job, and a create given up sooner is sent again (a "
            "second 911 alert). Never less than HTTP_READ_TIMEOUT_S; the step's deadline "
            "(TASK_SOFT_TIME_LIMIT_S) still bounds it. 30 s stays below that deadline (45 s), "
            "TASK_TIME_LIMIT_S (60 s) and ACTION_LEASE_S (90 s) by default, leaving 15 s for a "
            "token call before it"
        ),
    )
