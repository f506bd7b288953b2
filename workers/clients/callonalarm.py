"""CallOnAlarmClient: placeholder until the callonalarm client is written (it replaces this file)."""

from __future__ import annotations

from typing import Any

import redis

from config.settings import Settings
from workers.clients.base import BaseClient


class CallOnAlarmClient(BaseClient):
    upstream = "callonalarm"

    @classmethod
    def from_settings(cls, settings: Settings, cache: redis.Redis[Any]) -> CallOnAlarmClient:
        """The client for this deployment; `cache` is the shared Redis (tokens, cookies, budgets)."""
        return cls(
            settings.callonalarm_base_url, (settings.http_connect_timeout_s, settings.http_read_timeout_s)
        )
