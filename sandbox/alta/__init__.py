"""The Avigilon Alta Video (Alta Protect) simulator, seed 002: one package, so a change to Alta stays here.

`app` holds the routes and control views (its docstring records every choice seed 002 leaves open),
`alerts` the zones and alerts behind them, `sessions` the `va` cookie and `webhook` the zone webhook
sent to the bridge. The server mounts `create_app`; `deployment` is how it points the webhooks elsewhere.
"""

from sandbox.alta.app import create_app, deployment

__all__ = ["create_app", "deployment"]
