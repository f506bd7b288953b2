"""The vendor simulators for `make bench`, in a process of their own, sized for thousands of alarms.

The same simulators as `alarm-bridge sandbox`, with three changes a load run needs and nothing else:
the journal keeps every request (its default keeps the newest 10,000, fewer than a 200 alarms/s
minute produces), and the TrackTik and RapidSOS rate limits, which would answer 429 long before
the bridge reaches its own limits, are lifted. Timing, validation and answers are unchanged.

    python .ci/bench_sandbox.py --port 8100
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.clock import Clock
from sandbox.config import load_config
from sandbox.server import build_apps, combined_app, serve_in_thread
from sandbox.simulator import STATE_KEY

JOURNAL_ENTRIES = 2_000_000


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


if __name__ == "__main__":
    sys.exit(main())
