"""Flask application factory: the only place a web application is assembled.

gunicorn calls ``create_app()`` in each worker (see config/gunicorn.conf.py); tests call it with their
own Settings and may replace the outbox and the broker check.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta

import redis
from flask import Flask, redirect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

import vendors
from app import telemetry
from app.domain.intake import IntakeRules
from app.domain.outbox import Outbox, make_producer
from app.domain.sites_file import read_sites
from app.ledger.session import make_engine, make_sessionmaker
from app.web import auth, errors, health, metrics, openapi
from app.web.admission import PriorityGate
from app.web.dashboard import bp as dashboard_bp
from app.web.intake import bp as intake_bp
from app.web.operator import bp as operator_bp
from app.web.services import AppServices
from config.logging import configure_logging
from config.settings import ConfigurationError, Settings, load_settings

BROKER_PING_TIMEOUT_S = 1.0
DASHBOARD_SESSION_LIFETIME = timedelta(hours=12)  # one shift; then the operator key is asked again
# gunicorn's exit status for a worker that cannot boot: its master then stops, non-zero. Any other
# status (1 included) makes the master boot another worker that fails the same way, forever, with the
# port open and every request hanging: a web process that looks alive but cannot work.
WORKER_BOOT_ERROR = 3


def create_app(
    settings: Settings | None = None,
    *,
    outbox: Outbox | None = None,
    ping_broker: Callable[[], None] | None = None,
) -> Flask:
    """Build the web app; gunicorn passes nothing, tests pass their own Settings and doubles.

    From gunicorn (no ``settings``), a configuration that cannot work (a bad setting, sites file or
    SECRET_KEY) prints its lines on stderr and exits with WORKER_BOOT_ERROR, which stops the master.
    """
    if settings is not None:
        return _assemble(settings, outbox, ping_broker)
    try:
        # The web uses no vendor's settings, but reads them so that a bad one stops it as it stops
        # every other process: one configuration, refused or accepted as a whole.
        settings = load_settings(vendors.SETTINGS)
        telemetry.use_multiprocess_metrics(settings.prometheus_dir)  # shared with the host's processes
        return _assemble(settings, outbox, ping_broker)
    except SystemExit as exc:  # load_settings, check_web and read_sites exit with their one-line reason
        if exc.code is not None and not isinstance(exc.code, int):
            sys.stderr.write(f"{exc.code}\n")
            sys.stderr.flush()
        raise SystemExit(WORKER_BOOT_ERROR) from None


def _assemble(settings: Settings, outbox: Outbox | None, ping_broker: Callable[[], None] | None) -> Flask:
    configure_logging(settings)
    try:
        settings.check_web()  # SECRET_KEY: the web process never signs sessions with a guessable key
    except ConfigurationError as exc:
        raise SystemExit(f"alarm-bridge: invalid configuration: {exc}") from None
    sites = read_sites(settings.sites_file, settings.environ)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.secret_key = settings.secret_key
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=DASHBOARD_SESSION_LIFETIME,
        # Behind HTTPS the cookie must never travel in clear: the browser sends it over HTTPS only.
        SESSION_COOKIE_SECURE=settings.preferred_url_scheme == "https",
        PREFERRED_URL_SCHEME=settings.preferred_url_scheme,
    )
    if settings.trusted_proxy_count:
        # The client's address (logs, rate limits) and scheme as the proxies in front saw them; only
        # as many hops as are configured are believed, so a client cannot forge its own.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxy_count, x_proto=settings.trusted_proxy_count
        )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = make_engine(settings.database_url, pre_ping=False)  # see make_engine
    sessions = make_sessionmaker(engine)
    app.extensions["alarm_bridge"] = AppServices(
        settings=settings,
        engine=engine,
        sessions=sessions,
        outbox=outbox or Outbox(make_producer(settings), sessions),
        ping_broker=ping_broker or _redis_ping(settings.broker_url),
        sites=sites,
        intake_rules=IntakeRules.from_settings(settings),
        gate=PriorityGate(settings.web_intake_concurrency),
    )
    errors.register(app)
    auth.init_app(app, settings)  # dashboard sessions and the limiter of wrong credentials
    app.after_request(_harden_answer)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(intake_bp, url_prefix="/v1")
    app.register_blueprint(operator_bp, url_prefix="/v1")
    app.register_blueprint(dashboard_bp, url_prefix="/dashboard")
    app.add_url_rule("/", "index", _open_dashboard)
    return app


def _open_dashboard() -> Response:
    return redirect("/dashboard/")


def _harden_answer(response: Response) -> Response:
    """No answer is MIME-sniffed; a JSON answer (the API, every error) is never stored by a cache."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.is_json:
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _redis_ping(broker_url: str | None) -> Callable[[], None]:
    if broker_url is None:

        def not_configured() -> None:
            raise health.BrokerNotConfiguredError("REDIS_URL is not set")

        return not_configured
    client = redis.Redis.from_url(
        broker_url, socket_timeout=BROKER_PING_TIMEOUT_S, socket_connect_timeout=BROKER_PING_TIMEOUT_S
    )

    def ping() -> None:
        client.ping()

    return ping
