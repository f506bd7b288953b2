"""Capturing structlog output in a test, whatever level an earlier test configured.

``structlog.testing.capture_logs`` swaps the processors only: the wrapper class that filters by level
stays, so after any test that built an app with ``LOG_LEVEL=ERROR`` a captured warning would never
arrive, and a test asserting it would pass or fail by the order the suite ran in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.testing import capture_logs as _structlog_capture_logs


@contextmanager
def capture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every line logged through structlog inside the block, at any level, as a list of dicts."""
    wrapper_class = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET))
    try:
        with _structlog_capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=wrapper_class)
