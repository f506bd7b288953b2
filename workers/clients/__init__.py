"""Upstream clients, one module per vendor on a shared transport (base.py, errors.py).

``Clients`` holds one instance of each per worker process, each built the same way:
``from_settings(settings, cache, session=...)``. What several processes must share — the TrackTik and
RapidSOS tokens and the Alta cookie (``credentials.SharedCredential``), CallOnAlarm's 100
requests/hour — lives in Redis (``cache``), under the deployment's key prefix, never in module globals.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
import requests

from config.settings import Settings
from workers.clients.alta import AltaClient
from workers.clients.base import DEFAULT_POOL_MAXSIZE, EnvironmentOnceSession
from workers.clients.cad import CadClient
from workers.clients.callonalarm import CallOnAlarmClient
from workers.clients.rapidsos import RapidSOSClient
from workers.clients.tracktik import TrackTikClient

__all__ = ["Clients"]


@dataclass(frozen=True, slots=True)
class Clients:
    """Every upstream client of one worker process."""

    alta: AltaClient
    tracktik: TrackTikClient
    callonalarm: CallOnAlarmClient
    rapidsos: RapidSOSClient
    cad: CadClient

    @classmethod
    def from_settings(cls, settings: Settings, cache: redis.Redis, *, pool_maxsize: int = 0) -> Clients:
        """Build them all from the settings and the shared Redis; ``pool_maxsize``: connections kept
        per upstream (the steps this process runs at once; 0: the default)."""

        def session() -> requests.Session | None:  # one session (and pool) per upstream
            return EnvironmentOnceSession(pool_maxsize) if pool_maxsize > DEFAULT_POOL_MAXSIZE else None

        return cls(
            alta=AltaClient.from_settings(settings, cache, session=session()),
            tracktik=TrackTikClient.from_settings(settings, cache, session=session()),
            callonalarm=CallOnAlarmClient.from_settings(settings, cache, session=session()),
            rapidsos=RapidSOSClient.from_settings(settings, cache, session=session()),
            cad=CadClient.from_settings(settings, cache, session=session()),
        )
