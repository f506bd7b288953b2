"""The simulators' configuration: one table per vendor, each with a packaged default in its own folder.

Accounts, credentials, organizations, type codes, delay rules and coverage are data, not code, so a
demo or a test can change what an upstream "knows" without touching a simulator. Each simulator's
`sandbox/<key>/default.toml` holds its `[<key>]` table and works out of the box; a file given by the
user replaces, vendor by vendor, the tables it defines (a table it leaves out keeps its default), so a
one-table file is enough to change one vendor. Whole tables are replaced rather than merged key by key
so that a file can also remove an account or a token the default has.
"""

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from sandbox.registry import find_simulators

DEFAULT_FILE = "default.toml"


def load_default_config() -> dict[str, Any]:
    """Every simulator's packaged `sandbox/<key>/default.toml`, each its `[<key>]` table.

    A simulator without the file has no default table. The file is read as package data, so this works
    from an installed package too.

    Raises:
        ValueError: a simulator's file defines anything but its own table.
    """
    config: dict[str, Any] = {}
    for key in find_simulators():
        resource = resources.files(f"sandbox.{key}").joinpath(DEFAULT_FILE)
        if not resource.is_file():
            continue
        tables = tomllib.loads(resource.read_text(encoding="utf-8"))
        strays = sorted(set(tables) - {key})
        if strays:
            raise ValueError(f"sandbox/{key}/{DEFAULT_FILE} may only hold [{key}], not {', '.join(strays)}")
        if key in tables:
            config[key] = tables[key]
    return config


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Load the simulators' configuration: the default, with each vendor table of `path` replacing its own.

    Raises:
        FileNotFoundError: `path` does not exist.
        tomllib.TOMLDecodeError: `path` is not valid TOML.
    """
    config = load_default_config()
    if path is None:
        return config
    with Path(path).open("rb") as handle:
        config.update(tomllib.load(handle))
    return config


def vendor_table(config: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """One vendor's table from a whole configuration (None → the default), `{}` when it has none."""
    table = (config if config is not None else load_default_config()).get(name, {})
    if not isinstance(table, dict):
        raise TypeError(f"[{name}] in the sandbox configuration must be a table")
    return table
