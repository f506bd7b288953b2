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
threads = _settings.web_threads
timeout = _settings.web_timeout_s
graceful_timeout = _settings.web_timeout_s
keepalive = 5
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
    multiprocess.mark_process_dead(worker.pid, _settings.prometheus_dir)
