"""A simulator served over real loopback HTTP for one test, with its control API at hand.

Contract tests talk to simulators the way clients will: through a socket, with `requests`. The
`serve_simulator` fixture (conftest.py) starts an app on an OS-chosen port and returns a
`LiveSimulator`; the server and the session are closed when the test ends.
"""

from dataclasses import dataclass
from typing import Any

import requests
from flask import Flask

from sandbox.server import RunningServer
from sandbox.simulator import STATE_KEY, SimulatorState

DEFAULT_TIMEOUT_S = 5.0


@dataclass
class LiveSimulator:
    """One running simulator: `request()` for the vendor API, the other methods for `/_sandbox/`."""

    server: RunningServer
    http: requests.Session
    app: Flask | None = None
    prefix: str = ""  # the mount prefix when served by the combined app, e.g. "/cad"

    @property
    def base_url(self) -> str:
        """The simulator's root URL (server URL plus mount prefix)."""
        return self.server.base_url + self.prefix

    @property
    def state(self) -> SimulatorState:
        """The simulator's state object, for assertions from Python."""
        assert self.app is not None, "served without its Flask app"
        state: SimulatorState = self.app.extensions[STATE_KEY]
        return state

    def url(self, path: str) -> str:
        """Absolute URL of a simulator-relative path."""
        return self.base_url + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request (a 5 s timeout unless given)."""
        kwargs.setdefault("timeout", DEFAULT_TIMEOUT_S)
        return self.http.request(method, self.url(path), **kwargs)

    def journal(self, **filters: str) -> list[dict[str, Any]]:
        """`GET /_sandbox/journal` with optional `path=` / `method=` filters."""
        response = self.request("GET", "/_sandbox/journal", params=filters)
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()
        return entries

    def add_fault(self, **fault: Any) -> dict[str, Any]:
        """`POST /_sandbox/faults`; fails the test if the simulator refuses the fault."""
        response = self.request("POST", "/_sandbox/faults", json=fault)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """`POST /_sandbox/clock {"advance_s": seconds}`."""
        response = self.request("POST", "/_sandbox/clock", json={"advance_s": seconds})
        assert response.status_code == 200, response.text
        clock: dict[str, Any] = response.json()
        return clock

    def reset(self) -> None:
        """`POST /_sandbox/reset`."""
        assert self.request("POST", "/_sandbox/reset").status_code == 204
