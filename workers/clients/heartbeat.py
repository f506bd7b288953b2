"""The watchdog's outbound heartbeat: a GET to a dead-man's-switch URL after every check.

A monitor on the other end (healthchecks.io, Cronitor, an Alertmanager heartbeat) raises the alarm
when the pings stop, which is how a dead watchdog (or a dead beat, broker or urgent worker) is
noticed. The URL may carry its own secret; only its path is logged.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from config.settings import Settings
from workers.clients.base import BaseClient


class HeartbeatClient(BaseClient):
    """One GET to a fixed URL."""

    upstream = "heartbeat"

    @classmethod
    def from_settings(cls, settings: Settings) -> HeartbeatClient | None:
        """The client for WATCHDOG_HEARTBEAT_URL, or None when none is configured."""
        if not settings.watchdog_heartbeat_url:
            return None
        return cls(
            settings.watchdog_heartbeat_url,
            timeout=(settings.http_connect_timeout_s, settings.http_read_timeout_s),
        )

    def ping(self) -> None:
        """Raises the client error family when the monitor does not answer 2xx."""
        self._request("GET", "", idempotent=True)

    def __repr__(self) -> str:
        return f"HeartbeatClient({urlsplit(self.base_url).hostname})"
