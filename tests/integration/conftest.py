"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from config.settings import Settings
from tests.sites_fixture import EXAMPLE_SITES, SOURCE_ENV
from workers.runtime import Runtime, build_runtime


@pytest.fixture
def rt(broker_settings: Settings) -> Iterator[Runtime]:
    """A worker runtime on the real ledger and a private key prefix of the real Redis, with the
    example sites file: what perform() runs against (passed to it, as a task passes its own)."""
    settings = replace(broker_settings, sites_file=str(EXAMPLE_SITES), environ=SOURCE_ENV)
    runtime = build_runtime(settings)
    yield runtime
    runtime.engine.dispose()
