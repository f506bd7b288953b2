"""The ingest ceiling of `make bench`: a bare Flask app that reads the body and answers 202.

Served by gunicorn with config/gunicorn.conf.py, exactly as the `web` process is, only with this app
in place of the factory's (`gunicorn --config config/gunicorn.conf.py --pythonpath .ci
bench_bare_app:app`). No auth, no validation, no ledger, no broker: what the framework and the
server cost on this machine, the figure alarm-bridge's ingest is compared with.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

app = Flask(__name__)


@app.post("/v1/events")
def accept() -> tuple[dict[str, Any], int]:
    """Read the body like a real handler would, answer like intake does."""
    request.get_data()
    return {"alarm_id": 1, "event_id": 1, "duplicate": False}, 202
