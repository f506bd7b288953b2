"""The CallOnAlarm public API v1 simulator, seed 001: one package, so a change to CallOnAlarm stays here.

`app` holds the routes and the rate-limit hooks (its docstring records every choice seed 001 leaves
open), `settings` the `[callonalarm]` table (its default in `default.toml`), `store` the alerts'
clock-driven lifecycle and the rate window, `codes` the vendor's own SIA catalogue. The server finds
`SIMULATOR` and mounts `create_app`.
"""

from sandbox.callonalarm.app import create_app
from sandbox.registry import Simulator

SIMULATOR = Simulator(create_app=create_app)

__all__ = ["SIMULATOR", "create_app"]
