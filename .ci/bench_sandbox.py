"""The vendor simulators for `make bench`, in a process of their own, sized for thousands of alarms.

The same simulators as `alarm-bridge sandbox`, with the changes a load run needs and nothing else:
the journal keeps every request (its default keeps the newest 10,000, fewer than a 200 alarms/s
minute produces), and the TrackTik and RapidSOS rate limits, which would answer 429 long before
the bridge reaches its own limits, are lifted. Timing, validation and answers are unchanged.

They are served as the vendors serve their APIs: HTTP/1.1 connections kept alive between calls, by
gunicorn's threaded worker in one process (the simulators' state is in memory). werkzeug's server,
which `alarm-bridge sandbox` and the tests use, closes the connection after every answer, so each
vendor call cost the workers and the sandbox a TCP connection of its own that a real vendor's
keep-alive saves. `BENCH_SANDBOX_SERVER=werkzeug` serves them as before.

    python .ci/bench_sandbox.py --port 8100
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_stack import sandbox_server

from sandbox.clock import Clock
from sandbox.config import load_config
from sandbox.server import build_apps, combined_app, serve_in_thread
from sandbox.simulator import STATE_KEY

JOURNAL_ENTRIES = 2_000_000
# Enough threads for every call a slow-vendor phase keeps waiting at once (creates answered after
# 0.5-2 s at up to 60 alarms/s), and an idle keep-alive longer than any pause between phases' calls.
THREADS = 256
KEEPALIVE_S = 75


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    config = load_config()
    config["tracktik"]["rate_limit_per_minute"] = 10_000_000
    config["rapidsos"]["rate_limit"] = 0  # unlimited
    apps = build_apps(config, clock=Clock())
    for app in apps.values():
        app.extensions[STATE_KEY].journal.max_entries = JOURNAL_ENTRIES
    if sandbox_server() == "gunicorn":
        _Gunicorn(combined_app(apps), f"{args.host}:{args.port}").run()
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = serve_in_thread(combined_app(apps), args.host, args.port)
    print(f"bench sandbox on {server.base_url}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """One gthread worker (the simulators' state lives in this process), connections kept alive."""

    def __init__(self, app: Any, bind: str) -> None:
        self._app = app
        self._bind = bind
        super().__init__()

    def load_config(self) -> None:
        for name, value in {
            "bind": self._bind,
            "workers": 1,
            "worker_class": "gthread",
            "threads": THREADS,
            "keepalive": KEEPALIVE_S,
            "graceful_timeout": 5,
            "accesslog": None,
            "loglevel": "warning",
        }.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        return self._app


if __name__ == "__main__":
    sys.exit(main())
