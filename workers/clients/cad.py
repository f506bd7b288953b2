"""CadClient: placeholder until the cad client is written (it replaces this file)."""

from __future__ import annotations

from typing import Any

import redis

from config.settings import Settings
from workers.clients.base import BaseClient


class CadClient(BaseClient):
    upstream = "cad"

    @classmethod
    def from_settings(cls, settings: Settings, cache: redis.Redis[Any]) -> CadClient:
        """The client for this deployment; `cache` is the shared Redis (tokens, cookies, budgets)."""
        return cls(settings.cad_base_url, (settings.http_connect_timeout_s, settings.http_read_timeout_s))
