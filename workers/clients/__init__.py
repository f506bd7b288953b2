"""Upstream clients, one module per vendor on a shared transport (base.py, errors.py).

``Clients`` holds one instance of each per worker process. What several processes must share — the
RapidSOS token, the Alta cookie, CallOnAlarm's 100 requests/hour — lives in Redis (``cache``), under
the deployment's key prefix, never in module globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from config.settings import Settings
from workers.clients.alta import AltaClient
from workers.clients.cad import CadClient
from workers.clients.callonalarm import CallOnAlarmClient
from workers.clients.rapidsos import RapidSOSClient
from workers.clients.tracktik import TrackTikClient


@dataclass(frozen=True, slots=True)
class Clients:
    """Every upstream client of one worker process."""

    alta: AltaClient
    tracktik: TrackTikClient
    callonalarm: CallOnAlarmClient
    rapidsos: RapidSOSClient
    cad: CadClient

    @classmethod
    def from_settings(cls, settings: Settings, cache: redis.Redis[Any]) -> Clients:
        """Build them all from the settings and the shared Redis."""
        return cls(
            alta=AltaClient.from_settings(settings, cache),
            tracktik=TrackTikClient.from_settings(settings, cache),
            callonalarm=CallOnAlarmClient.from_settings(settings, cache),
            rapidsos=RapidSOSClient.from_settings(settings, cache),
            cad=CadClient.from_settings(settings, cache),
        )


def shared_cache(settings: Settings) -> redis.Redis[Any]:
    """The Redis that holds what clients share across processes (the broker's Redis)."""
    if settings.redis_url is None:
        raise RuntimeError("REDIS_URL is not set: workers need Redis")
    return redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)


def cache_key(settings: Settings, *parts: str) -> str:
    """A Redis key under the deployment's prefix, so deployments (and test runs) never collide."""
    return settings.broker_key_prefix + "ab:" + ":".join(parts)
