"""The worker's clients come from the registry: one per vendor, each found by its class."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import pytest

import vendors
from config.settings import Settings
from vendors.cad.client import CadClient
from vendors.tracktik.client import TrackTikClient
from vendors.tracktik.settings import TrackTikSettings
from workers.clients import Clients, vendor_clients

pytestmark = pytest.mark.unit


def test_one_client_per_vendor_of_the_registry(make_settings: Callable[..., Settings]) -> None:
    clients = Clients.from_settings(make_settings(), fakeredis.FakeRedis())
    assert len(clients.by_type) == len(vendors.VENDORS) == len(vendor_clients())
    tracktik = clients.get(TrackTikClient)
    assert isinstance(tracktik, TrackTikClient)
    assert tracktik.base_url == make_settings().vendor(TrackTikSettings).base_url.rstrip("/")


def test_a_client_not_built_is_named_when_asked_for(make_settings: Callable[..., Settings]) -> None:
    only = Clients.of(CadClient.from_settings(make_settings(), fakeredis.FakeRedis()))
    with pytest.raises(LookupError, match="no TrackTikClient"):
        only.get(TrackTikClient)


def test_a_client_module_without_its_client_class_fails_loudly() -> None:
    with pytest.raises(TypeError, match=r"vendors\.cad\.steps\.CLIENT"):
        vendor_clients(["vendors.cad.steps"])
