"""The TrackTik REST API simulator, seed 000: one package, so a change to TrackTik stays here.

`app` holds the routes, the bearer check and the rate limit (its docstring lists every choice the
documents leave open), `oauth` the OAuth2 server and its login block, `alarms` the alarm validation and
storage; `default.toml` is the `[tracktik]` table. The server finds `SIMULATOR` and mounts `create_app`.
"""

from sandbox.registry import Simulator
from sandbox.tracktik.app import create_app

SIMULATOR = Simulator(create_app=create_app)

__all__ = ["SIMULATOR", "create_app"]
