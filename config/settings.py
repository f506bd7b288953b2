"""Runtime settings for every alarm-bridge process, read from the environment exactly once.

This is the only module that reads ``os.environ`` (it also hands a copy to the sites file loader,
which resolves the secrets each source names by variable). Every value has a default that serves the
embedded mode (``alarm-bridge dev``: SQLite ledger, embedded broker, sandbox upstreams), and an
invalid value stops start-up with one line naming the variable and why.

Each vendor declares its own settings (a ``VendorSettings`` in ``vendors/<key>/settings.py``); this
module cannot import them (the vendors import the domain), so a process that runs vendors hands them
over: ``load_settings(vendors.SETTINGS)`` reads them with the rest, and ``Settings.vendor()`` returns
them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeVar, get_type_hints
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
# Flower can revoke tasks and stop workers: its basic-auth passwords must not be guessable either.
MIN_FLOWER_PASSWORD_LENGTH = 12


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
    doc: str | None = None,
    env: str | None = None,
    example: str | None = None,
    parse: Callable[[Any], object] | None = None,
    secret: bool = False,
) -> Any:
    """A Settings field with what reading it from the environment needs: its ``check`` (an environs
    validator), its variable when that is not the field's name in capitals, ``parse`` (checks and
    normalises the raw value) and ``secret`` (kept out of repr, so out of logs). A vendor's setting
    also says what it means (``doc``, one line) and, when it is unset by default, an ``example`` value
    for ``.env.example``: both documents are generated from them (``make docs``)."""
    metadata = {"check": check, "parse": parse, "doc": doc, "example": example} | (
        {"env": env} if env else {}
    )
    return field(default=default, repr=not secret, metadata=metadata)


def variable(item: Field[Any], prefix: str = "") -> str:
    """The environment variable a setting is read from: ``setting(env=...)``, else its name in capitals,
    after its section's prefix (``TRACKTIK`` + ``base_url`` -> ``TRACKTIK_BASE_URL``)."""
    return str(item.metadata.get("env") or f"{prefix}_{item.name}".lstrip("_").upper())


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_http_url(name: str, url: str) -> None:
    """Refuse a URL requests could not call (no http/https scheme, no host, a port that is not a number),
    at start rather than at its first use, naming the variable ``name`` (never the value: it may hold a
    credential)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in URL_SCHEMES or not parts.hostname:
        raise ConfigurationError(f"{name}: must be an http:// or https:// URL with a host")


class VendorSettings:
    """Base of a vendor's own settings (``vendors/<key>/settings.py``), read with the others at start-up.

    A subclass is a frozen slots dataclass whose fields use ``setting()``: each is read from
    ``<prefix>_<FIELD>``. ``base_url`` is mandatory. A field without ``doc`` belongs to the vendor's
    connection (its URL and credentials, whose defaults are the sandbox's): the generated docs list
    those in one row that ``description`` explains; a field with ``doc`` gets a row of its own.
    """

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # every subclass is a dataclass
    prefix: ClassVar[str]  # "TRACKTIK"
    description: ClassVar[str]  # one line: what its connection reaches ("TrackTik REST API and ...")
    base_url: str

    def __post_init__(self) -> None:
        _check_http_url(self.env_name("base_url"), self.base_url)
        # A sandbox credential aimed at a real vendor is a misconfiguration, never a test.
        host = urlsplit(self.base_url).hostname or ""
        items = fields(self)
        if host not in _LOOPBACK and any(
            not item.repr and "sandbox" in str(getattr(self, item.name) or "") for item in items
        ):
            raise ConfigurationError(
                f"{self.env_name('base_url')} points at {host} with the sandbox's {self.prefix} credentials"
            )

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable field ``name`` is read from (``base_url`` -> ``TRACKTIK_BASE_URL``)."""
        return variable(cls.__dataclass_fields__[name], cls.prefix)


V = TypeVar("V", bound=VendorSettings)


def _checked(kind: type[V]) -> type[V]:
    """``kind``, once checked to be a frozen dataclass with a prefix and a ``base_url`` (a mistake in
    a vendor's declaration: a TypeError, not a configuration error)."""
    params = getattr(kind, "__dataclass_params__", None)
    named = {item.name for item in fields(kind)} if params else set()  # fields(): ClassVars left out
    if not (params and params.frozen and getattr(kind, "prefix", "") and "base_url" in named):
        raise TypeError(
            f"{kind.__name__}: vendor settings are a frozen dataclass with a prefix and a base_url"
        )
    return kind


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
    worker_concurrency: int = setting(48, check=validate.Range(min=1, max=512))  # `worker` (default)
    # `urgent` (life_safety, dispatch)
    urgent_concurrency: int = setting(48, check=validate.Range(min=1, max=512))
    bulk_concurrency: int = setting(32, check=validate.Range(min=1, max=512))  # `bulk` (bulk)
    # Troubles yield to life-safety (workers/bulk_gate.py): while a life-safety step ran within
    # BULK_YIELD_S, bulk steps start at most BULK_YIELD_RATE a second across the deployment.
    bulk_yield_rate: int = setting(25, check=validate.Range(min=1, max=10_000))
    bulk_yield_s: float = setting(2.0, check=validate.Range(min=0.1, max=3600))
    broker_visibility_timeout_s: int = setting(3600, check=POSITIVE)
    sandbox_port: int = setting(8100, check=PORT)
    var_dir: str = "var"
    sites_file: str | None = None  # None: no sources, so every intake call is refused (401)
    grouping_window_s: float = setting(300.0, check=validate.Range(min=0))
    # Off: a dual-path panel's late copy of an opening signal may open an alarm and dispatch again;
    # on: it is attached to its alarm when the stamps say so (app/domain/intake.py), which can
    # absorb a real trip when a site's paths do not share one clock. Off by default: sent twice,
    # never lost.
    dual_path_copies: bool = False
    dedupe_window_s: float = setting(300.0, check=validate.Range(min=1))
    clock_skew_tolerance_s: float = setting(300.0, check=validate.Range(min=0))
    http_connect_timeout_s: float = setting(3.05, check=validate.Range(min=0.1))
    http_read_timeout_s: float = setting(10.0, check=validate.Range(min=0.1))
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
    archive_after_days: float = setting(180.0, check=validate.Range(min=1, max=36525))  # 100 years
    archive_batch_size: int = setting(500, check=validate.Range(min=1, max=10_000))
    # The environment the sites file's `token_env`/`signing_secrets_env` names are resolved in.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # Each vendor's own settings, by class, as read at start-up (``vendor()``); their reprs keep their
    # secrets out, but their URLs need not be in every Settings repr either.
    sections: Mapping[type[VendorSettings], VendorSettings] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    # True when read from the environment: a vendor whose settings were not read is then a bug.
    read_from_environment: bool = field(default=False, repr=False, compare=False)

    def vendor(self, kind: type[V]) -> V:
        """A vendor's settings: as read at start-up; for Settings a test built, ``kind()`` (the sandbox's).

        Raises LookupError when these Settings were read from the environment without ``kind``: the
        entry point forgot to pass it, and production must never run on the sandbox's defaults.
        """
        found = self.sections.get(kind)
        if isinstance(found, kind):
            return found
        if self.read_from_environment:
            raise LookupError(
                f"{kind.__name__} was not read at start-up: the process's entry point must pass "
                "vendors.SETTINGS to load_settings()"
            )
        return kind()

    def with_vendor(self, *sections: VendorSettings) -> Settings:
        """These settings with the given vendor settings in place of their own (tests use it)."""
        return replace(self, sections=MappingProxyType({**self.sections, **{type(s): s for s in sections}}))

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

    def check_flower(self) -> None:
        """Refuse to serve Flower with credentials that would leave it open or locked (ConfigurationError).

        Checked by `alarm-bridge flower` alone: a weak Flower password must not stop intake, the
        workers or the receiver, which never read it.
        """
        for number, entry in enumerate(self.flower_basic_auth, start=1):
            user, colon, password = entry.partition(":")
            if not (user and colon and len(password) >= MIN_FLOWER_PASSWORD_LENGTH):
                raise ConfigurationError(  # never the entry itself: it holds a password
                    f"FLOWER_BASIC_AUTH: entry {number} must be user:password, with a user and a password "
                    f"of at least {MIN_FLOWER_PASSWORD_LENGTH} characters"
                )

    def check_broker(self) -> None:
        """Refuse to run a process that needs the Celery broker (the workers, beat, the receiver,
        Flower) without REDIS_URL: Celery would fall back to amqp://guest@localhost// in silence."""
        if self.redis_url is None:
            raise ConfigurationError(
                "REDIS_URL is required by this process (the Celery broker: redis://, rediss:// or "
                "unix://; only `alarm-bridge dev` starts one of its own)"
            )

    @property
    def broker_url(self) -> str | None:
        """The Celery broker: the Redis instance, or None when none is configured."""
        return self.redis_url

    def __post_init__(self) -> None:
        if self.watchdog_heartbeat_url is not None:
            _check_http_url("WATCHDOG_HEARTBEAT_URL", self.watchdog_heartbeat_url)
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
            limit = parse_rate_limit(self.auth_failure_limit)
        except ValueError:
            raise ConfigurationError(
                f"AUTH_FAILURE_LIMIT: {self.auth_failure_limit!r} is not a rate like '10 per minute'"
            ) from None
        if limit.amount < 1:  # a budget of 0 is spent before the first try: every operator locked out
            raise ConfigurationError(
                f"AUTH_FAILURE_LIMIT: {self.auth_failure_limit!r} allows no attempt at all; at least 1"
            )


# The Settings fields the reader fills itself: they are not variables.
NOT_VARIABLES: Final = frozenset({"environ", "sections", "read_from_environment"})


def read_settings(sections: Iterable[type[VendorSettings]] = ()) -> Settings:
    """Build Settings, and each vendor's of ``sections``, from the process environment; raise
    ConfigurationError naming the variable.

    Each setting is read by its field's type, from the variable its field names (its name in capitals
    unless ``setting(env=...)`` says otherwise, after a vendor's prefix), with its field's default and
    ``check``.
    """
    env = Env(eager=True)  # a .env file is never read implicitly
    try:
        values = _read_fields(env, Settings)
        read = {kind: kind(**_read_fields(env, _checked(kind), kind.prefix)) for kind in sections}
        given = {
            "environ": dict(os.environ),
            "sections": MappingProxyType(read),
            "read_from_environment": True,
        }
        return Settings(**values, **given)  # type: ignore[arg-type]
    except EnvError as exc:
        raise ConfigurationError(str(exc).replace("\n", " ")) from None


def _read_fields(env: Env, kind: type[Settings | VendorSettings], prefix: str = "") -> dict[str, object]:
    """Every setting of ``kind`` (Settings, or a vendor's with its prefix), by field name: the one reader."""
    types = get_type_hints(kind)
    return {
        item.name: _read(env, item, types[item.name], prefix)
        for item in fields(kind)
        if item.name not in NOT_VARIABLES
    }


def _read(env: Env, item: Field[Any], kind: object, prefix: str = "") -> object:
    name = variable(item, prefix)
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
    elif kind is bool:
        value = env.bool(name, default)
    elif kind == tuple[str, ...]:
        value = tuple(entry for entry in env.list(name, list(default)) if entry)
    else:
        raise TypeError(f"{name}: no reader for {kind!r}")
    parse = item.metadata.get("parse")
    return parse(value) if parse else value


def load_settings(sections: Iterable[type[VendorSettings]] = ()) -> Settings:
    """Read the process environment once, with the vendor settings of ``sections`` (a process that
    runs vendors passes ``vendors.SETTINGS``); on a bad value exit with one line naming the variable."""
    try:
        return read_settings(sections)
    except ConfigurationError as exc:
        sys.exit(f"alarm-bridge: invalid configuration: {exc}")
