"""The RapidSOS Alert Management API simulator, seed 004: one package, so a change to RapidSOS stays here.

`app` holds the routes (its docstring records every choice seed 004 leaves open), `schema` the alert
body's field table and its validator, `store` the tokens, rate windows, coverage map and alerts;
`default.toml` is the `[rapidsos]` table. The server finds `SIMULATOR` and mounts `create_app`.
"""

from sandbox.rapidsos.app import create_app
from sandbox.registry import Simulator

SIMULATOR = Simulator(create_app=create_app)

__all__ = ["SIMULATOR", "create_app"]
