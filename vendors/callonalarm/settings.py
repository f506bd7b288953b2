"""CallOnAlarm's settings (``CALLONALARM_*``): its API, the deployment's hourly budget of requests, how
often a call is followed, and the monitoring centre's own connection for the phone fallback."""

from dataclasses import dataclass
from typing import ClassVar

from environs import validate

from config.settings import ConfigurationError, VendorSettings, setting


@dataclass(frozen=True, slots=True)
class CallOnAlarmSettings(VendorSettings):
    """CallOnAlarm's API and how the bridge spends it."""

    prefix: ClassVar[str] = "CALLONALARM"
    description: ClassVar[str] = "CallOnAlarm API"

    base_url: str = "http://127.0.0.1:8100/callonalarm"
    api_key: str = setting("coa_sandbox_key_0001", secret=True)
    hourly_budget: int = setting(
        100, check=validate.Range(min=1), doc="requests per hour shared by the whole deployment"
    )
    life_safety_reserve: int = setting(
        20,
        check=validate.Range(min=0),
        doc=(
            "requests of the hourly budget kept for life-safety triggers, phone fallbacks and "
            "restores: status polls and other triggers stop short of them"
        ),
    )
    poll_interval_s: float = setting(
        30.0, check=validate.Range(min=1), doc="how often a call's status is followed"
    )
    fallback_account: str | None = setting(
        None, doc="the monitoring centre's connection, called when a site has none", example="9000"
    )

    def __post_init__(self) -> None:
        VendorSettings.__post_init__(self)
        if self.life_safety_reserve >= self.hourly_budget:
            raise ConfigurationError(
                f"{self.env_name('life_safety_reserve')} ({self.life_safety_reserve}) must be less than "
                f"{self.env_name('hourly_budget')} ({self.hourly_budget}): nothing else could be sent"
            )
