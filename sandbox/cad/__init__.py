"""The GovWorx CAD incident upload simulator, seed 003: one package, so a change to the CAD stays here.

`app` holds the route, the incident conversion and the store (its docstring records every choice seed
003 leaves open). The server mounts `create_app`.
"""

from sandbox.cad.app import create_app

__all__ = ["create_app"]
