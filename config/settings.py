"""Runtime settings for every alarm-bridge process, read from the environment exactly once.

This is the only module that reads ``os.environ`` (it also hands a copy to the sites file loader,
which resolves the secrets each source names by variable). Every value has a default that serves the
embedded mode (``alarm-bridge dev``: SQLite ledger, embedded broker, sandbox upstreams), and an
invalid value stops start-up with one line naming the variable and why.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from environs import Env, EnvError, validate
from limits import parse as parse_rate_limit

DEFAULT_DATABASE_URL = "sqlite:///var/ledger.sqlite3"
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Celery pools alarm-bridge runs under: threads (the default, sized for I/O), prefork, solo (one at a time).
WORKER_POOLS = ("threads", "prefork", "solo")
URL_SCHEMES = ("http", "https")
# A bearer credential for /metrics: long enough not to be guessed, printable ASCII without spaces.
METRICS_TOKEN_MIN_LENGTH = 16
_BEARER_TOKEN = re.compile(r"[\x21-\x7e]+")
# The dashboard cookie's signing key, and the operator keys (the rule the sites file applies to source
# tokens, app/domain/sites.py MIN_TOKEN_LENGTH): out of reach of guessing.
MIN_SECRET_KEY_LENGTH = 32
MIN_OPERATOR_KEY_LENGTH = 16


class ConfigurationError(ValueError):
    """A setting is missing or invalid; the message is one line naming the variable."""


WEB_WORKER_CLASSES = ("gevent", "gthread", "sync")


POSITIVE = validate.Range(min=1)
PORT = validate.Range(min=1, max=65535)


def _database_url(raw: str) -> str:
    """Accept the URL forms platforms hand out and pin the PostgreSQL driver we ship (psycopg 3)."""
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://") :]
    if raw.startswith("postgresql://"):
        raw = "postgresql+psycopg://" + raw[len("postgresql://") :]
    if not raw.startswith(("sqlite://", "postgresql+psycopg://")):
        raise ConfigurationError("DATABASE_URL: only sqlite:/// and postgresql:// URLs are supported")
    return raw


def _redis_url(raw: str | None) -> str | None:
    if raw in (None, ""):
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError("REDIS_URL: must start with redis://, rediss:// or unix://")
    return raw


def setting(
    default: Any,
    *,
    check: Callable[[Any], object] | None = None,
    env: str | None = None,
    parse: Callable[[Any], object] | None = None,
    secret: bool = False,
) -> Any:
    """A Settings field with what reading it from the environment needs: its ``check`` (an environs
    validator), its variable when that is not the field's name in capitals, ``parse`` (checks and
    normalises the raw value) and ``secret`` (kept out of repr, so out of logs)."""
    metadata = {"check": check, "parse": parse} | ({"env": env} if env else {})
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process needs to know about its environment; tests build it directly."""

    database_url: str = setting(DEFAULT_DATABASE_URL, parse=_database_url)
    # None: no broker configured. `alarm-bridge dev` starts an embedded one and sets REDIS_URL
    # for its children; web and worker processes started any other way need a real Redis.
    redis_url: str | None = setting(None, parse=_redis_url, secret=True)
    broker_key_prefix: str = ""
    host: str = "0.0.0.0"  # noqa: S104 - platforms route to the container; dev binds loopback
    port: int = setting(8000, check=PORT)
    web_concurrency: int = setting(2, check=POSITIVE)
    # gevent: a connection costs a greenlet, not a worker, so no slow client can hold the door shut;
    # gthread/sync stay available (WEB_THREADS threads each) for a platform without gevent.
    web_worker_class: str = setting("gevent", check=validate.OneOf(WEB_WORKER_CLASSES))
    web_worker_connections: int = setting(1000, check=POSITIVE)
    web_threads: int = setting(1, check=POSITIVE)
    web_timeout_s: int = setting(30, check=POSITIVE)
    # A request's head must arrive within it, each read of its body too; an idle connection is closed.
    web_read_timeout_s: int = setting(5, check=validate.Range(min=1, max=300))
    # Life-safety first at the door: at most this many other events are recorded at once per web
    # process (app/web/admission.py); 0 turns the gate off. 1 measured best with the ledger near.
    web_intake_concurrency: int = setting(1, check=validate.Range(min=0, max=1000))
    max_body_bytes: int = setting(1_048_576, check=validate.Range(min=1024))
    log_level: str = setting("INFO", check=validate.OneOf(LOG_LEVELS))
    log_format: str = setting("json", check=validate.OneOf(LOG_FORMATS))
    operator_api_keys: tuple[str, ...] = setting((), secret=True)
    action_lease_s: float = setting(90.0, check=validate.Range(min=1))
    action_max_attempts: int = setting(8, check=POSITIVE)
    dispatch_interval_s: float = setting(1.0, check=validate.Range(min=0.1))
    dispatch_batch_size: int = setting(500, check=POSITIVE)
    # TASK_SOFT_TIME_LIMIT_S is also every step's own deadline, which alarm-bridge enforces itself on
    # any pool (workers/perform.py): the thread pool enforces no Celery time limit.
    task_soft_time_limit_s: int = setting(45, check=POSITIVE)
    task_time_limit_s: int = setting(60, check=POSITIVE)
    # Workers are sized for the vendors' latency, not the CPU: each thread holds one upstream call.
    worker_pool: str = setting("threads", check=validate.OneOf(WORKER_POOLS))
    worker_concurrency: int = setting(48, check=validate.Range(min=1, max=512))  # `worker` (default, bulk)
    # `urgent` (life_safety, dispatch)
    urgent_concurrency: int = setting(48, check=validate.Range(min=1, max=512))
    broker_visibility_timeout_s: int = setting(3600, check=POSITIVE)
    sandbox_port: int = setting(8100, check=PORT)
    var_dir: str = "var"
    sites_file: str | None = None  # None: no sources, so every intake call is refused (401)
    grouping_window_s: float = setting(300.0, check=validate.Range(min=0))
    dedupe_window_s: float = setting(300.0, check=validate.Range(min=1))
    clock_skew_tolerance_s: float = setting(300.0, check=validate.Range(min=0))
    http_connect_timeout_s: float = setting(3.05, check=validate.Range(min=0.1))
    http_read_timeout_s: float = setting(10.0, check=validate.Range(min=0.1))
    alta_base_url: str = "http://127.0.0.1:8100/alta"
    alta_username: str = "api@sandbox.alta.example"
    alta_password: str = setting("sandbox-alta-password", secret=True)
    # how long to keep looking for a webhook's ongoing alert
    alta_lookup_timeout_s: float = setting(120.0, check=validate.Range(min=1))
    # how long a TrackTik alarm waits for the video links
    alta_video_wait_s: float = setting(30.0, check=validate.Range(min=0))
    tracktik_base_url: str = "http://127.0.0.1:8100/tracktik"
    tracktik_client_id: str = "sandbox-tracktik-client"
    tracktik_client_secret: str = setting("sandbox-tracktik-secret", secret=True)
    tracktik_username: str = "alarm-bridge-api"
    tracktik_password: str = setting("sandbox-tracktik-password", secret=True)
    callonalarm_base_url: str = "http://127.0.0.1:8100/callonalarm"
    callonalarm_api_key: str = setting("coa_sandbox_key_0001", secret=True)
    callonalarm_hourly_budget: int = setting(100, check=validate.Range(min=1))
    callonalarm_poll_interval_s: float = setting(30.0, check=validate.Range(min=1))
    callonalarm_fallback_account: str | None = None  # the monitoring centre's own connection
    rapidsos_base_url: str = "http://127.0.0.1:8100/rapidsos"
    rapidsos_client_id: str = "sandbox-rapidsos-client"
    rapidsos_client_secret: str = setting("sandbox-rapidsos-secret", secret=True)
    cad_base_url: str = "http://127.0.0.1:8100/cad"
    cad_token: str = setting("sandbox-cad-token", secret=True)
    # Signs the dashboard's session cookie (which holds only a session id; the session itself is in
    # Redis). The web process refuses to start without it (check_web); `alarm-bridge dev` makes one.
    secret_key: str = setting("", secret=True)
    # Wrong operator keys (sign-in form, operator API) and wrong source credentials per client address,
    # each kind counted on its own: past the limit, 429 with Retry-After (app/web/auth.py).
    auth_failure_limit: str = "10 per minute"
    flower_basic_auth: tuple[str, ...] = setting((), secret=True)  # "user:password" pairs
    # Where every process on this host writes its Prometheus samples (prometheus_client multiprocess
    # mode); None: `{var_dir}/prometheus`.
    metrics_dir: str | None = setting(None, env="PROMETHEUS_MULTIPROC_DIR")
    # a worker host without a web process serves /metrics here
    worker_metrics_port: int | None = setting(None, check=PORT)
    # The SIA DC-09 receiver (`alarm-bridge receiver`): TCP and UDP on one port. 7777 is the port
    # pysiaalarm's and Home Assistant's examples use, so many communicators' guides already name it.
    sia_receiver_host: str = "0.0.0.0"  # noqa: S104 - panels reach it from outside; dev binds loopback
    sia_receiver_port: int = setting(7777, check=PORT)
    # A TCP connection must bring its next complete frame within this time, or it is closed: an idle
    # or trickling panel cannot hold a connection (panels reconnect for their next frame).
    sia_receiver_idle_timeout_s: float = setting(60.0, check=validate.Range(min=1, max=3600))
    # frames recorded in the ledger at once (a thread each)
    sia_receiver_concurrency: int = setting(8, check=validate.Range(min=1, max=256))
    # Open TCP connections the receiver keeps at once; one more is closed at once (counted), so a
    # flood of idle connections cannot exhaust the process's file descriptors.
    sia_receiver_max_connections: int = setting(5000, check=validate.Range(min=1, max=1_000_000))
    # the receiver serves this host's /metrics here
    sia_receiver_metrics_port: int | None = setting(None, check=PORT)
    # Set: the web process's /metrics answers only `Authorization: Bearer <METRICS_TOKEN>` (401 else).
    metrics_token: str = setting("", secret=True)
    # how long a process reuses its ledger and Redis gauges between scrapes
    metrics_cache_s: float = setting(5.0, check=validate.Range(min=0, max=300))
    # https: the app is reached over HTTPS only, so the session cookie is `Secure`.
    preferred_url_scheme: str = setting("http", check=validate.OneOf(URL_SCHEMES))
    # How many reverse proxies in front of the web process set X-Forwarded-For and X-Forwarded-Proto
    # (0: the headers are not believed; the client address is the peer's).
    trusted_proxy_count: int = setting(0, check=validate.Range(min=0, max=10))
    watchdog_interval_s: float = setting(30.0, check=validate.Range(min=1))
    # how late a step may run before a person is called
    watchdog_grace_s: float = setting(60.0, check=validate.Range(min=1))
    # how long a step may keep failing before a person is called
    watchdog_failing_s: float = setting(300.0, check=validate.Range(min=1))
    watchdog_heartbeat_url: str | None = setting(None, secret=True)  # pinged after every check
    # `alarm-bridge ledger archive`: how long an ended alarm stays in the ledger, and its batch size.
    archive_after_days: float = setting(180.0, check=validate.Range(min=1))
    archive_batch_size: int = setting(500, check=validate.Range(min=1, max=10_000))
    # The environment the sites file's `token_env`/`signing_secrets_env` names are resolved in.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def prometheus_dir(self) -> str:
        """The directory this host's processes share their Prometheus samples through."""
        return self.metrics_dir or f"{self.var_dir}/prometheus"

    def check_web(self) -> None:
        """Refuse to serve the web app without a key to sign its sessions with (ConfigurationError)."""
        if not self.secret_key:
            raise ConfigurationError(
                f"SECRET_KEY is required to serve the web app (at least {MIN_SECRET_KEY_LENGTH} random "
                "characters; only `alarm-bridge dev` makes one up)"
            )

    @property
    def broker_url(self) -> str | None:
        """The Celery broker: the Redis instance, or None when none is configured."""
        return self.redis_url

    def __post_init__(self) -> None:
        if self.metrics_token and (
            len(self.metrics_token) < METRICS_TOKEN_MIN_LENGTH
            or not _BEARER_TOKEN.fullmatch(self.metrics_token)
        ):
            raise ConfigurationError(
                f"METRICS_TOKEN: at least {METRICS_TOKEN_MIN_LENGTH} printable ASCII characters, no spaces"
            )
        # The lease must outlive the hard time limit, or the dispatcher would re-drive an
        # action whose first attempt is still legitimately running.
        if self.action_lease_s <= self.task_time_limit_s:
            raise ConfigurationError(
                f"ACTION_LEASE_S ({self.action_lease_s:g}) must be greater than "
                f"TASK_TIME_LIMIT_S ({self.task_time_limit_s}): a running action would be sent twice"
            )
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ConfigurationError("TASK_SOFT_TIME_LIMIT_S must be less than TASK_TIME_LIMIT_S")
        if self.secret_key and len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigurationError(f"SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters")
        for number, key in enumerate(self.operator_api_keys, start=1):
            if len(key) < MIN_OPERATOR_KEY_LENGTH or not _BEARER_TOKEN.fullmatch(key):
                raise ConfigurationError(  # never the key itself: this line ends up in logs
                    f"OPERATOR_API_KEYS: key {number} must be at least {MIN_OPERATOR_KEY_LENGTH} "
                    "printable ASCII characters, without spaces"
                )
        try:
            parse_rate_limit(self.auth_failure_limit)
        except ValueError:
            raise ConfigurationError(
                f"AUTH_FAILURE_LIMIT: {self.auth_failure_limit!r} is not a rate like '10 per minute'"
            ) from None
        # A sandbox credential aimed at a real vendor is a misconfiguration, never a test.
        for vendor, url, secret in (
            ("ALTA", self.alta_base_url, self.alta_password),
            ("TRACKTIK", self.tracktik_base_url, self.tracktik_client_secret),
            ("CALLONALARM", self.callonalarm_base_url, self.callonalarm_api_key),
            ("RAPIDSOS", self.rapidsos_base_url, self.rapidsos_client_secret),
            ("CAD", self.cad_base_url, self.cad_token),
        ):
            host = urlsplit(url).hostname or ""
            if "sandbox" in secret and host not in ("127.0.0.1", "localhost", "::1"):
                raise ConfigurationError(
                    f"{vendor}_BASE_URL points at {host} with the sandbox's {vendor} credentials"
                )


def read_settings() -> Settings:
    """Build Settings from the process environment; raise ConfigurationError naming the variable.

    Each setting is read by its field's type, from the variable its field names (its name in capitals
    unless ``setting(env=...)`` says otherwise), with its field's default and ``check``.
    """
    env = Env(eager=True)  # a .env file is never read implicitly
    types = get_type_hints(Settings)
    try:
        values = {
            item.name: _read(env, item, types[item.name])
            for item in fields(Settings)
            if item.name != "environ"
        }
        return Settings(**values, environ=dict(os.environ))  # type: ignore[arg-type]
    except EnvError as exc:
        raise ConfigurationError(str(exc).replace("\n", " ")) from None


def _read(env: Env, item: Field[Any], kind: object) -> object:
    name = item.metadata.get("env", item.name.upper())
    check = item.metadata.get("check")
    default: Any = item.default
    value: object
    if kind in (str, str | None):
        value = env.str(name, default, validate=check)
        value = value if kind is str else (value or None)
    elif kind in (int, int | None):
        value = env.int(name, default, validate=check)
    elif kind is float:
        value = env.float(name, default, validate=check)
    elif kind == tuple[str, ...]:
        value = tuple(entry for entry in env.list(name, list(default)) if entry)
    else:
        raise TypeError(f"Settings.{item.name}: no reader for {kind!r}")
    parse = item.metadata.get("parse")
    return parse(value) if parse else value


def load_settings() -> Settings:
    """Read the process environment once; on a bad value exit with one line naming the variable."""
    try:
        return read_settings()
    except ConfigurationError as exc:
        sys.exit(f"alarm-bridge: invalid configuration: {exc}")
