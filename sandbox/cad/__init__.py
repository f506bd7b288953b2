"""The GovWorx CAD incident upload simulator, seed 003: one package, so a change to the CAD stays here.

`app` holds the route, the incident conversion and the store (its docstring records every choice seed
003 leaves open); `default.toml` is the `[cad]` table. The server finds `SIMULATOR` and mounts
`create_app`.
"""

from sandbox.cad.app import create_app
from sandbox.registry import Simulator

SIMULATOR = Simulator(create_app=create_app)

__all__ = ["SIMULATOR", "create_app"]
