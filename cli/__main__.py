"""``python -m cli``: the ``alarm-bridge`` command without its console script (how ``dev`` starts its
own subcommands)."""

from cli.main import main

main()
