"""The Avigilon Alta Video (Alta Protect) simulator, seed 002: one package, so a change to Alta stays here.

`app` holds the routes and control views (its docstring records every choice seed 002 leaves open),
`alerts` the zones and alerts behind them, `sessions` the `va` cookie and `webhook` the zone webhook
sent to the bridge; `default.toml` is the `[alta]` table. The server finds `SIMULATOR`, mounts
`create_app` and offers `--alta-webhook-base-url`; `deployment` is how tests point the webhooks elsewhere.
"""

from sandbox.alta.app import add_arguments, configure, create_app, deployment
from sandbox.registry import Simulator

SIMULATOR = Simulator(create_app=create_app, add_arguments=add_arguments, configure=configure)

__all__ = ["SIMULATOR", "create_app", "deployment"]
