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
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process needs to know about its environment; tests build it directly."""

    database_url: str = DEFAULT_DATABASE_URL
    # None: no broker configured. `alarm-bridge dev` starts an embedded one and sets REDIS_URL
    # for its children; web and worker processes started any other way need a real Redis.
    redis_url: str | None = field(default=None, repr=False)
    broker_key_prefix: str = ""
    host: str = "0.0.0.0"  # noqa: S104 - platforms route to the container; dev binds loopback
    port: int = 8000
    web_concurrency: int = 2
    # gevent: a connection costs a greenlet, not a worker, so no slow client can hold the door shut;
    # gthread/sync stay available (WEB_THREADS threads each) for a platform without gevent.
    web_worker_class: str = "gevent"
    web_worker_connections: int = 1000
    web_threads: int = 1
    web_timeout_s: int = 30
    # A request's head must arrive within it, each read of its body too; an idle connection is closed.
    web_read_timeout_s: int = 5
    # Life-safety first at the door: at most this many other events are recorded at once per web
    # process (app/web/admission.py); 0 turns the gate off. 1 measured best with the ledger near.
    web_intake_concurrency: int = 1
    max_body_bytes: int = 1_048_576
    log_level: str = "INFO"
    log_format: str = "json"
    operator_api_keys: tuple[str, ...] = field(default=(), repr=False)
    action_lease_s: float = 90.0
    action_max_attempts: int = 8
    dispatch_interval_s: float = 1.0
    dispatch_batch_size: int = 500
    # TASK_SOFT_TIME_LIMIT_S is also every step's own deadline, which alarm-bridge enforces itself on
    # any pool (workers/perform.py): the thread pool enforces no Celery time limit.
    task_soft_time_limit_s: int = 45
    task_time_limit_s: int = 60
    # Workers are sized for the vendors' latency, not the CPU: each thread holds one upstream call.
    worker_pool: str = "threads"
    worker_concurrency: int = 48  # `worker` (default, bulk)
    urgent_concurrency: int = 48  # `urgent` (life_safety, dispatch)
    broker_visibility_timeout_s: int = 3600
    sandbox_port: int = 8100
    var_dir: str = "var"
    sites_file: str | None = None  # None: no sources, so every intake call is refused (401)
    grouping_window_s: float = 300.0
    dedupe_window_s: float = 300.0
    clock_skew_tolerance_s: float = 300.0
    http_connect_timeout_s: float = 3.05
    http_read_timeout_s: float = 10.0
    alta_base_url: str = "http://127.0.0.1:8100/alta"
    alta_username: str = "api@sandbox.alta.example"
    alta_password: str = field(default="sandbox-alta-password", repr=False)
    alta_lookup_timeout_s: float = 120.0  # how long to keep looking for a webhook's ongoing alert
    alta_video_wait_s: float = 30.0  # how long a TrackTik alarm waits for the video links
    tracktik_base_url: str = "http://127.0.0.1:8100/tracktik"
    tracktik_client_id: str = "sandbox-tracktik-client"
    tracktik_client_secret: str = field(default="sandbox-tracktik-secret", repr=False)
    tracktik_username: str = "alarm-bridge-api"
    tracktik_password: str = field(default="sandbox-tracktik-password", repr=False)
    callonalarm_base_url: str = "http://127.0.0.1:8100/callonalarm"
    callonalarm_api_key: str = field(default="coa_sandbox_key_0001", repr=False)
    callonalarm_hourly_budget: int = 100
    callonalarm_poll_interval_s: float = 30.0
    callonalarm_fallback_account: str | None = None  # the monitoring centre's own connection
    rapidsos_base_url: str = "http://127.0.0.1:8100/rapidsos"
    rapidsos_client_id: str = "sandbox-rapidsos-client"
    rapidsos_client_secret: str = field(default="sandbox-rapidsos-secret", repr=False)
    cad_base_url: str = "http://127.0.0.1:8100/cad"
    cad_token: str = field(default="sandbox-cad-token", repr=False)
    # Signs the dashboard's session cookie (which holds only a session id; the session itself is in
    # Redis). The web process refuses to start without it (check_web); `alarm-bridge dev` makes one.
    secret_key: str = field(default="", repr=False)
    # Wrong operator keys (sign-in form, operator API) and wrong source credentials per client address,
    # each kind counted on its own: past the limit, 429 with Retry-After (app/web/auth.py).
    auth_failure_limit: str = "10 per minute"
    flower_basic_auth: tuple[str, ...] = field(default=(), repr=False)  # "user:password" pairs
    # Where every process on this host writes its Prometheus samples (prometheus_client multiprocess
    # mode); None: `{var_dir}/prometheus`.
    metrics_dir: str | None = None
    worker_metrics_port: int | None = None  # a worker host without a web process serves /metrics here
    # The SIA DC-09 receiver (`alarm-bridge receiver`): TCP and UDP on one port. 7777 is the port
    # pysiaalarm's and Home Assistant's examples use, so many communicators' guides already name it.
    sia_receiver_host: str = "0.0.0.0"  # noqa: S104 - panels reach it from outside; dev binds loopback
    sia_receiver_port: int = 7777
    # A TCP connection must bring its next complete frame within this time, or it is closed: an idle
    # or trickling panel cannot hold a connection (panels reconnect for their next frame).
    sia_receiver_idle_timeout_s: float = 60.0
    sia_receiver_concurrency: int = 8  # frames recorded in the ledger at once (a thread each)
    # Open TCP connections the receiver keeps at once; one more is closed at once (counted), so a
    # flood of idle connections cannot exhaust the process's file descriptors.
    sia_receiver_max_connections: int = 5000
    sia_receiver_metrics_port: int | None = None  # the receiver serves this host's /metrics here
    # Set: the web process's /metrics answers only `Authorization: Bearer <METRICS_TOKEN>` (401 else).
    metrics_token: str = field(default="", repr=False)
    metrics_cache_s: float = 5.0  # how long a process reuses its ledger and Redis gauges between scrapes
    # https: the app is reached over HTTPS only, so the session cookie is `Secure`.
    preferred_url_scheme: str = "http"
    # How many reverse proxies in front of the web process set X-Forwarded-For and X-Forwarded-Proto
    # (0: the headers are not believed; the client address is the peer's).
    trusted_proxy_count: int = 0
    watchdog_interval_s: float = 30.0
    watchdog_grace_s: float = 60.0  # how late a step may run before a person is called
    watchdog_failing_s: float = 300.0  # how long a step may keep failing before a person is called
    watchdog_heartbeat_url: str | None = field(default=None, repr=False)  # pinged after every check
    # `alarm-bridge ledger archive`: how long an ended alarm stays in the ledger, and its batch size.
    archive_after_days: float = 180.0
    archive_batch_size: int = 500
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


def read_settings() -> Settings:
    """Build Settings from the process environment; raise ConfigurationError naming the variable."""
    env = Env(eager=True)  # a .env file is never read implicitly
    default = Settings()  # each default is stated once: on its Settings field
    try:
        positive = validate.Range(min=1)
        return Settings(
            database_url=_database_url(env.str("DATABASE_URL", default.database_url)),
            redis_url=_redis_url(env.str("REDIS_URL", default.redis_url)),
            broker_key_prefix=env.str("BROKER_KEY_PREFIX", default.broker_key_prefix),
            host=env.str("HOST", default.host),
            port=env.int("PORT", default.port, validate=validate.Range(min=1, max=65535)),
            web_concurrency=env.int("WEB_CONCURRENCY", default.web_concurrency, validate=positive),
            web_worker_class=env.str(
                "WEB_WORKER_CLASS", default.web_worker_class, validate=validate.OneOf(WEB_WORKER_CLASSES)
            ),
            web_worker_connections=env.int(
                "WEB_WORKER_CONNECTIONS", default.web_worker_connections, validate=positive
            ),
            web_threads=env.int("WEB_THREADS", default.web_threads, validate=positive),
            web_timeout_s=env.int("WEB_TIMEOUT_S", default.web_timeout_s, validate=positive),
            web_read_timeout_s=env.int(
                "WEB_READ_TIMEOUT_S", default.web_read_timeout_s, validate=validate.Range(min=1, max=300)
            ),
            web_intake_concurrency=env.int(
                "WEB_INTAKE_CONCURRENCY",
                default.web_intake_concurrency,
                validate=validate.Range(min=0, max=1000),
            ),
            max_body_bytes=env.int(
                "MAX_BODY_BYTES", default.max_body_bytes, validate=validate.Range(min=1024)
            ),
            log_level=env.str("LOG_LEVEL", default.log_level, validate=validate.OneOf(LOG_LEVELS)),
            log_format=env.str("LOG_FORMAT", default.log_format, validate=validate.OneOf(LOG_FORMATS)),
            operator_api_keys=tuple(
                k for k in env.list("OPERATOR_API_KEYS", list(default.operator_api_keys)) if k
            ),
            action_lease_s=env.float(
                "ACTION_LEASE_S", default.action_lease_s, validate=validate.Range(min=1)
            ),
            action_max_attempts=env.int(
                "ACTION_MAX_ATTEMPTS", default.action_max_attempts, validate=positive
            ),
            dispatch_interval_s=env.float(
                "DISPATCH_INTERVAL_S", default.dispatch_interval_s, validate=validate.Range(min=0.1)
            ),
            dispatch_batch_size=env.int(
                "DISPATCH_BATCH_SIZE", default.dispatch_batch_size, validate=positive
            ),
            task_soft_time_limit_s=env.int(
                "TASK_SOFT_TIME_LIMIT_S", default.task_soft_time_limit_s, validate=positive
            ),
            task_time_limit_s=env.int("TASK_TIME_LIMIT_S", default.task_time_limit_s, validate=positive),
            worker_pool=env.str("WORKER_POOL", default.worker_pool, validate=validate.OneOf(WORKER_POOLS)),
            worker_concurrency=env.int(
                "WORKER_CONCURRENCY", default.worker_concurrency, validate=validate.Range(min=1, max=512)
            ),
            urgent_concurrency=env.int(
                "URGENT_CONCURRENCY", default.urgent_concurrency, validate=validate.Range(min=1, max=512)
            ),
            broker_visibility_timeout_s=env.int(
                "BROKER_VISIBILITY_TIMEOUT_S", default.broker_visibility_timeout_s, validate=positive
            ),
            sandbox_port=env.int(
                "SANDBOX_PORT", default.sandbox_port, validate=validate.Range(min=1, max=65535)
            ),
            var_dir=env.str("VAR_DIR", default.var_dir),
            sites_file=env.str("SITES_FILE", default.sites_file) or None,
            grouping_window_s=env.float(
                "GROUPING_WINDOW_S", default.grouping_window_s, validate=validate.Range(min=0)
            ),
            dedupe_window_s=env.float(
                "DEDUPE_WINDOW_S", default.dedupe_window_s, validate=validate.Range(min=1)
            ),
            clock_skew_tolerance_s=env.float(
                "CLOCK_SKEW_TOLERANCE_S", default.clock_skew_tolerance_s, validate=validate.Range(min=0)
            ),
            http_connect_timeout_s=env.float(
                "HTTP_CONNECT_TIMEOUT_S", default.http_connect_timeout_s, validate=validate.Range(min=0.1)
            ),
            http_read_timeout_s=env.float(
                "HTTP_READ_TIMEOUT_S", default.http_read_timeout_s, validate=validate.Range(min=0.1)
            ),
            alta_base_url=env.str("ALTA_BASE_URL", default.alta_base_url),
            alta_username=env.str("ALTA_USERNAME", default.alta_username),
            alta_password=env.str("ALTA_PASSWORD", default.alta_password),
            alta_lookup_timeout_s=env.float(
                "ALTA_LOOKUP_TIMEOUT_S", default.alta_lookup_timeout_s, validate=validate.Range(min=1)
            ),
            alta_video_wait_s=env.float(
                "ALTA_VIDEO_WAIT_S", default.alta_video_wait_s, validate=validate.Range(min=0)
            ),
            tracktik_base_url=env.str("TRACKTIK_BASE_URL", default.tracktik_base_url),
            tracktik_client_id=env.str("TRACKTIK_CLIENT_ID", default.tracktik_client_id),
            tracktik_client_secret=env.str("TRACKTIK_CLIENT_SECRET", default.tracktik_client_secret),
            tracktik_username=env.str("TRACKTIK_USERNAME", default.tracktik_username),
            tracktik_password=env.str("TRACKTIK_PASSWORD", default.tracktik_password),
            callonalarm_base_url=env.str("CALLONALARM_BASE_URL", default.callonalarm_base_url),
            callonalarm_api_key=env.str("CALLONALARM_API_KEY", default.callonalarm_api_key),
            callonalarm_hourly_budget=env.int(
                "CALLONALARM_HOURLY_BUDGET", default.callonalarm_hourly_budget, validate=validate.Range(min=1)
            ),
            callonalarm_poll_interval_s=env.float(
                "CALLONALARM_POLL_INTERVAL_S",
                default.callonalarm_poll_interval_s,
                validate=validate.Range(min=1),
            ),
            callonalarm_fallback_account=env.str(
                "CALLONALARM_FALLBACK_ACCOUNT", default.callonalarm_fallback_account
            )
            or None,
            rapidsos_base_url=env.str("RAPIDSOS_BASE_URL", default.rapidsos_base_url),
            rapidsos_client_id=env.str("RAPIDSOS_CLIENT_ID", default.rapidsos_client_id),
            rapidsos_client_secret=env.str("RAPIDSOS_CLIENT_SECRET", default.rapidsos_client_secret),
            cad_base_url=env.str("CAD_BASE_URL", default.cad_base_url),
            cad_token=env.str("CAD_TOKEN", default.cad_token),
            secret_key=env.str("SECRET_KEY", default.secret_key),
            auth_failure_limit=env.str("AUTH_FAILURE_LIMIT", default.auth_failure_limit),
            flower_basic_auth=tuple(
                a for a in env.list("FLOWER_BASIC_AUTH", list(default.flower_basic_auth)) if a
            ),
            metrics_dir=env.str("PROMETHEUS_MULTIPROC_DIR", default.metrics_dir) or None,
            worker_metrics_port=env.int(
                "WORKER_METRICS_PORT", default.worker_metrics_port, validate=validate.Range(min=1, max=65535)
            ),
            sia_receiver_host=env.str("SIA_RECEIVER_HOST", default.sia_receiver_host),
            sia_receiver_port=env.int(
                "SIA_RECEIVER_PORT", default.sia_receiver_port, validate=validate.Range(min=1, max=65535)
            ),
            sia_receiver_idle_timeout_s=env.float(
                "SIA_RECEIVER_IDLE_TIMEOUT_S",
                default.sia_receiver_idle_timeout_s,
                validate=validate.Range(min=1, max=3600),
            ),
            sia_receiver_concurrency=env.int(
                "SIA_RECEIVER_CONCURRENCY",
                default.sia_receiver_concurrency,
                validate=validate.Range(min=1, max=256),
            ),
            sia_receiver_max_connections=env.int(
                "SIA_RECEIVER_MAX_CONNECTIONS",
                default.sia_receiver_max_connections,
                validate=validate.Range(min=1, max=1_000_000),
            ),
            sia_receiver_metrics_port=env.int(
                "SIA_RECEIVER_METRICS_PORT",
                default.sia_receiver_metrics_port,
                validate=validate.Range(min=1, max=65535),
            ),
            metrics_token=env.str("METRICS_TOKEN", default.metrics_token),
            metrics_cache_s=env.float(
                "METRICS_CACHE_S", default.metrics_cache_s, validate=validate.Range(min=0, max=300)
            ),
            preferred_url_scheme=env.str(
                "PREFERRED_URL_SCHEME", default.preferred_url_scheme, validate=validate.OneOf(URL_SCHEMES)
            ),
            trusted_proxy_count=env.int(
                "TRUSTED_PROXY_COUNT", default.trusted_proxy_count, validate=validate.Range(min=0, max=10)
            ),
            watchdog_interval_s=env.float(
                "WATCHDOG_INTERVAL_S", default.watchdog_interval_s, validate=validate.Range(min=1)
            ),
            watchdog_grace_s=env.float(
                "WATCHDOG_GRACE_S", default.watchdog_grace_s, validate=validate.Range(min=1)
            ),
            watchdog_failing_s=env.float(
                "WATCHDOG_FAILING_S", default.watchdog_failing_s, validate=validate.Range(min=1)
            ),
            watchdog_heartbeat_url=env.str("WATCHDOG_HEARTBEAT_URL", default.watchdog_heartbeat_url) or None,
            archive_after_days=env.float(
                "ARCHIVE_AFTER_DAYS", default.archive_after_days, validate=validate.Range(min=1)
            ),
            archive_batch_size=env.int(
                "ARCHIVE_BATCH_SIZE", default.archive_batch_size, validate=validate.Range(min=1, max=10_000)
            ),
            environ=dict(os.environ),
        )
    except EnvError as exc:
        raise ConfigurationError(str(exc).replace("\n", " ")) from None


def load_settings() -> Settings:
    """Read the process environment once; on a bad value exit with one line naming the variable."""
    try:
        return read_settings()
    except ConfigurationError as exc:
        sys.exit(f"alarm-bridge: invalid configuration: {exc}")
