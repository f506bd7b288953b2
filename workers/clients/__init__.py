"""The upstream clients of a worker process, on the transport every vendor's client shares.

Here: the shared base (``base.py``, ``errors.py``, ``transport.py``, ``credentials.py``, ``cache.py``)
and ``Clients``, one instance of each vendor's client per worker process. Each vendor's client lives
in its own package (``vendors.<key>.client``, its class named ``CLIENT``) and is built the same way:
``from_settings(settings, cache, session=...)``; ``Clients`` builds one per vendor in the registry,
so this module names no vendor. What several processes must share — a vendor's token or cookie
(``credentials.SharedCredential``), a vendor's hourly request budget — lives in Redis (``cache``),
under the deployment's key prefix, never in module globals.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, TypeGuard, TypeVar

import redis
import requests

from config.settings import Settings
from vendors import CLIENT_MODULES
from workers.clients.base import DEFAULT_POOL_MAXSIZE, BaseClient, EnvironmentOnceSession

__all__ = ["Clients", "VendorClient"]

C = TypeVar("C", bound=BaseClient)


class VendorClient(Protocol):
    """What a vendor's ``CLIENT`` is: a client class built from the settings and the shared Redis."""

    def from_settings(
        self, settings: Settings, cache: redis.Redis, *, session: requests.Session | None = None
    ) -> BaseClient:
        """The client for this deployment; ``session``: None for the default pool."""


def _is_vendor_client(found: object) -> TypeGuard[VendorClient]:
    return isinstance(found, type) and issubclass(found, BaseClient) and hasattr(found, "from_settings")


def vendor_clients(modules: Iterable[str] = CLIENT_MODULES) -> tuple[VendorClient, ...]:
    """Each vendor's client class, from its client module (imported here: only workers load them)."""
    found: list[VendorClient] = []
    for name in modules:
        client = getattr(importlib.import_module(name), "CLIENT", None)
        if not _is_vendor_client(client):
            raise TypeError(f"{name}.CLIENT must be a BaseClient subclass with from_settings()")
        found.append(client)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Clients:
    """Every upstream client of one worker process, one per vendor, found by its class."""

    by_type: Mapping[type[BaseClient], BaseClient]

    @classmethod
    def of(cls, *clients: BaseClient) -> Clients:
        """These clients (a test gives only the one its handler calls)."""
        return cls(MappingProxyType({type(client): client for client in clients}))

    @classmethod
    def from_settings(cls, settings: Settings, cache: redis.Redis, *, pool_maxsize: int = 0) -> Clients:
        """Build them all from the settings and the shared Redis; ``pool_maxsize``: connections kept
        per upstream (the steps this process runs at once; 0: the default)."""

        def session() -> requests.Session | None:  # one session (and pool) per upstream
            return EnvironmentOnceSession(pool_maxsize) if pool_maxsize > DEFAULT_POOL_MAXSIZE else None

        return cls.of(
            *(client.from_settings(settings, cache, session=session()) for client in vendor_clients())
        )

    def get(self, kind: type[C]) -> C:
        """This process's client of class ``kind``: a task asks for its vendor's (``CLIENT``) by class.

        Raises:
            LookupError: there is none (a test that built its ``Clients`` without it).
        """
        found = self.by_type.get(kind)
        if not isinstance(found, kind):
            raise LookupError(f"no {kind.__name__} among this process's clients")
        return found
