"""Which simulators exist: the declaration a vendor folder makes, and finding the folders that make one.

A simulator is a subpackage `sandbox/<key>/` whose `__init__` sets `SIMULATOR = Simulator(...)`; the
folder name is its key, which is also its mount prefix (`/<key>`), the name of its configuration table
(`[<key>]`, defaulted by `sandbox/<key>/default.toml`) and its `--only` name. The core finds them with
`find_simulators`, so a new simulated vendor touches only its own folder.
"""

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flask import Flask

import sandbox
from sandbox.clock import Clock


class AppFactory(Protocol):
    """A simulator's `create_app`: `config` is the whole loaded configuration (None = the default)."""

    def __call__(self, config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask: ...


@dataclass(frozen=True, slots=True)
class Simulator:
    """What the core needs from one simulated vendor.

    `add_arguments(parser)` adds the command-line options of this vendor (prefixed with its key, like
    `--alta-webhook-base-url`); `configure(app, args)` applies them to its built app. The command line
    calls `configure` only for the simulators it starts.
    """

    create_app: AppFactory
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    configure: Callable[[Flask, argparse.Namespace], None] | None = None


def find_simulators() -> dict[str, Simulator]:
    """Every simulator under `sandbox`, by key, in key order (so mounts and listings are stable).

    A subpackage without `SIMULATOR` is not a simulator and is skipped. An import error in a subpackage
    is not hidden: a broken simulator is a bug.

    Raises:
        TypeError: a subpackage's `SIMULATOR` is not a `Simulator`.
    """
    found: dict[str, Simulator] = {}
    for info in sorted(pkgutil.iter_modules(sandbox.__path__), key=lambda info: info.name):
        if not info.ispkg:  # the core's own modules (and `__main__`, which must not be imported)
            continue
        declared = getattr(importlib.import_module(f"{sandbox.__name__}.{info.name}"), "SIMULATOR", None)
        if declared is None:
            continue
        if not isinstance(declared, Simulator):
            raise TypeError(f"sandbox.{info.name}.SIMULATOR must be a sandbox.registry.Simulator")
        found[info.name] = declared
    return found
