"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from config.settings import Settings
from tests.sites_fixture import EXAMPLE_SITES, SOURCE_ENV
from workers import runtime as worker_runtime


@pytest.fixture
def rt(broker_settings: Settings) -> Iterator[worker_runtime.Runtime]:
    """The worker runtime on the real ledger and a private key prefix of the real Redis, with the
    example sites file: what perform() runs against."""
    settings = replace(broker_settings, sites_file=str(EXAMPLE_SITES), environ=SOURCE_ENV)
    runtime = worker_runtime.configure(settings)
    yield runtime
    runtime.engine.dispose()
