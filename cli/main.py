"""The ``alarm-bridge`` command group: ``dev`` (the whole service in one command), ``db upgrade``,
``ledger archive`` (retention), ``receiver`` (the SIA DC-09 receiver), ``flower``, ``sandbox``, and the
integrator's tools (``sites check``, ``send-test-event``, ``alarms show``).

Each subcommand lives in the module its job names and imports what it runs only when it runs, so
``alarm-bridge --help`` loads neither Flask, the ledger nor the receiver.
"""

from __future__ import annotations

import click

from cli.alarms import alarms
from cli.dev import dev
from cli.ledger import db, ledger
from cli.processes import flower, receiver, sandbox
from cli.send_test_event import send_test_event
from cli.sites import sites


@click.group()
def main() -> None:
    """alarm-bridge: alarm signals in, a coordinated and audited response out."""


for command in (sites, send_test_event, alarms, db, ledger, sandbox, flower, receiver, dev):
    main.add_command(command)

if __name__ == "__main__":
    main()
