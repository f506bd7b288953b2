"""gunicorn configuration for the `web` process (Procfile), read from the same Settings as the rest.

gunicorn is pointed at the application factory, so no module holds a global app object.
"""

import sys
from typing import Any

from prometheus_client import multiprocess

from config.settings import ConfigurationError, load_settings

_settings = load_settings()
try:
    # Checked here, in the master: inside a worker the exit would only make gunicorn start another.
    _settings.check_web()
except ConfigurationError as exc:
    sys.exit(f"alarm-bridge: invalid configuration: {exc}")

wsgi_app = "app.web:create_app()"
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency
# gevent (the default): every connection is a greenlet, so idle or slow clients cost memory, not the
# door; config/web_worker.py bounds how long any of them may take to send a request.
worker_class = (
    "config.web_worker.ReadTimeoutGeventWorker"
    if _settings.web_worker_class == "gevent"
    else _settings.web_worker_class
)
worker_connections = _settings.web_worker_connections
threads = _settings.web_threads
timeout = _settings.web_timeout_s
graceful_timeout = _settings.web_timeout_s
# With gevent this is also the deadline for a request's head, and each read of its body.
keepalive = _settings.web_read_timeout_s
# Each worker builds its own engine and broker connection after the fork (no preload): a
# connection pool shared across a fork corrupts both ends.
preload_app = False
accesslog = None  # request lines carry query strings (`?token=`); the app logs what matters
errorlog = "-"
loglevel = _settings.log_level.lower()


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited (killed, timed out, replaced): prometheus_client's bookkeeping for a dead process.

    It removes the worker's live-gauge files (``livesum``, ``liveall``…), whose values must vanish with
    it. Counter and histogram files stay on purpose: they hold counts /metrics must keep adding up, or
    the totals would go backwards.
    """
    multiprocess.mark_process_dead(worker.pid, _settings.prometheus_dir)  # type: ignore[no-untyped-call]
