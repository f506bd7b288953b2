"""Fixtures for simulator contract tests: a fresh server per test on an OS-assigned port.

Use `serve_simulator(app)` with any simulator's `create_app(...)`; it returns a `LiveSimulator`
(harness.py) whose server is stopped and whose session is closed after the test.
"""

from collections.abc import Callable, Iterator

import pytest
import requests
from flask import Flask

from sandbox.server import RunningServer, serve_in_thread
from tests.contract.sandbox.harness import LiveSimulator

ServeSimulator = Callable[[Flask], LiveSimulator]


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A requests session closed after the test."""
    with requests.Session() as session:
        yield session


@pytest.fixture
def serve_simulator(http: requests.Session) -> Iterator[ServeSimulator]:
    """Start simulators on port 0 for this test; every one is stopped at teardown."""
    running: list[RunningServer] = []

    def serve(app: Flask) -> LiveSimulator:
        server = serve_in_thread(app, port=0)
        running.append(server)
        return LiveSimulator(server=server, http=http, app=app)

    yield serve
    for server in running:
        server.stop()
