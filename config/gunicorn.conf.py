"""gunicorn configuration for the `web` process (Procfile), read from the same Settings as the rest.

gunicorn is pointed at the application factory, so no module holds a global app object.
"""

from config.settings import load_settings

_settings = load_settings()

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
