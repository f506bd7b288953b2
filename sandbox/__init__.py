"""Faithful local simulators of the upstreams alarm-bridge drives, for tests and demos.

One package per vendor (`alta/`, `tracktik/`, `callonalarm/`, `rapidsos/`, `cad/`: its Flask app in
`app.py`, the state behind it in modules beside, its default configuration in `default.toml`, and in
`__init__.py` the `SIMULATOR` declaration by which the core finds it), each built on the shared core at
this level: `registry` (what a simulator declares, and finding them by folder), `clock` (simulated time
tests can advance), `journal` (every request, secrets masked), `faults` (the next N matching requests
fail: status, delay, drop, timeout after commit), `simulator` (the wiring and the `/_sandbox/` control
API), `config` (the vendors' tables, defaults from their folders, replaced by a user's file) and `server`
(run them in a thread, or all under one port by prefix). This package imports nothing from `app`,
`workers` or `config`: it stands in for the outside world.
"""
