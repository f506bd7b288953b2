"""The Redis that upstream clients share across worker processes, and its key names.

Tokens, cookies (``credentials.SharedCredential``) and rate budgets live here, never in module
globals, under the deployment's prefix so that deployments (and test runs) sharing one Redis never
see each other's.
"""

from __future__ import annotations

import redis

from config.settings import Settings


def shared_cache(settings: Settings) -> redis.Redis:
    """The Redis that holds what clients share across processes (the broker's Redis)."""
    if settings.redis_url is None:
        raise RuntimeError("REDIS_URL is not set: workers need Redis")
    return redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)


def cache_key(settings: Settings, *parts: str) -> str:
    """A Redis key under the deployment's prefix, so deployments (and test runs) never collide."""
    return settings.broker_key_prefix + "ab:" + ":".join(parts)
