"""Settings: embedded-mode defaults, and one clear line naming the variable when a value is bad."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from environs import Env
from gunicorn.arbiter import Arbiter

import vendors
from app.domain.intake import IntakeRules
from config.settings import (
    NOT_VARIABLES,
    ConfigurationError,
    Settings,
    VendorSettings,
    _read,
    load_settings,
    read_settings,
    setting,
)
from vendors.cad.settings import CadSettings
from vendors.callonalarm.settings import CallOnAlarmSettings
from vendors.rapidsos.settings import RapidSOSSettings
from vendors.tracktik.settings import TrackTikSettings

# A web worker that cannot start exits with this: gunicorn's master then stops instead of booting another.
WORKER_BOOT_ERROR = Arbiter.WORKER_BOOT_ERROR

pytestmark = pytest.mark.unit


def test_defaults_serve_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = read_settings()
    assert settings.database_url == "sqlite:///var/ledger.sqlite3"
    assert settings.redis_url is None
    assert settings.port == 8000


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/ledger", "postgresql+psycopg://u:p@db:5432/ledger"),
        ("postgresql://db/ledger", "postgresql+psycopg://db/ledger"),
        ("sqlite:////srv/ledger.sqlite3", "sqlite:////srv/ledger.sqlite3"),
    ],
)
def test_platform_database_urls_are_pinned_to_the_shipped_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    assert read_settings().database_url == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("DATABASE_URL", "mysql://db/ledger"),
        ("REDIS_URL", "http://localhost:6379"),
        ("LOG_LEVEL", "LOUD"),
        ("ACTION_LEASE_S", "30"),
        ("WEB_CONCURRENCY", "0"),
    ],
)
def test_an_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        read_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RAPIDSOS_BASE_URL", "api.rapidsos.com/v1"),
        ("TRACKTIK_BASE_URL", "ftp://tracktik.example.com"),
        ("ALTA_BASE_URL", "https://"),
        ("CAD_BASE_URL", "https://cad.example.com:port"),
        ("CALLONALARM_BASE_URL", "callonalarm"),
        ("WATCHDOG_HEARTBEAT_URL", "hc-ping.com/0f3c-secret-uuid"),
        ("WATCHDOG_HEARTBEAT_URL", "mailto:ops@example.com"),
    ],
)
def test_a_url_without_an_http_scheme_or_a_host_is_refused_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # Accepted, such a URL failed at its first use: a 911 step retried as "internal error" for minutes.
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=f"^{name}: must be an http:// or https:// URL") as refused:
        read_settings(vendors.SETTINGS)
    assert "secret-uuid" not in str(refused.value)


def test_http_and_https_urls_with_a_host_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_HEARTBEAT_URL", "https://hc-ping.com/0f3c")
    monkeypatch.setenv("CAD_BASE_URL", "http://[::1]:8100/cad")
    settings = read_settings(vendors.SETTINGS)
    assert settings.watchdog_heartbeat_url == "https://hc-ping.com/0f3c"
    assert settings.vendor(CadSettings).base_url == "http://[::1]:8100/cad"


def test_start_up_with_a_bad_value_exits_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from config.settings import load_settings; load_settings()"],
        env={"PORT": "eighty", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("alarm-bridge: invalid configuration:")
    assert "PORT" in lines[0]


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("SECRET_KEY", "s" * 31, True),
        ("OPERATOR_API_KEYS", "dev-operator", True),
        ("OPERATOR_API_KEYS", "a-long-enough-operator-key,short-key", True),
        ("OPERATOR_API_KEYS", "an operator key with spaces", True),
        ("AUTH_FAILURE_LIMIT", "often", False),
        ("AUTH_FAILURE_LIMIT", "0 per minute", False),  # would lock every operator out, right key or not
        ("AUTH_FAILURE_LIMIT", "0/hour", False),
    ],
)
def test_short_secrets_and_bad_limits_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, secret: bool
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name) as refused:
        read_settings()
    if secret:  # the message ends up in logs: it never shows the key
        assert all(part not in str(refused.value) for part in value.split(","))


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        (":", False),  # empty credentials (nothing to leak): Flower open to all
        ("ops:", True),
        (":a-long-flower-password", True),
        ("ops-without-a-password", True),  # locked out for good
        ("ops:a-long-flower-password,ops:short-pass", True),
    ],
)
def test_weak_flower_credentials_stop_flower_alone(
    monkeypatch: pytest.MonkeyPatch, value: str, secret: bool
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", value)
    settings = read_settings()  # the web, the workers and the receiver start: they never read it
    with pytest.raises(ConfigurationError, match="FLOWER_BASIC_AUTH") as refused:
        settings.check_flower()
    if secret:  # the message ends up in logs: it never shows the password
        assert all(part not in str(refused.value) for part in value.split(","))


def test_long_enough_secrets_and_a_rate_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "s" * 32)
    monkeypatch.setenv("OPERATOR_API_KEYS", "sixteen-chars-ok,another-operator-key")
    monkeypatch.setenv("AUTH_FAILURE_LIMIT", "5/minute")
    settings = read_settings()
    settings.check_web()
    assert settings.operator_api_keys == ("sixteen-chars-ok", "another-operator-key")
    assert settings.auth_failure_limit == "5/minute"
    assert Settings().auth_failure_limit == "10 per minute"


def test_flower_basic_auth_takes_user_password_pairs_with_long_passwords(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:twelve-chars,night:a:colon:is-fine")
    assert read_settings().flower_basic_auth == ("ops:twelve-chars", "night:a:colon:is-fine")


def test_the_processes_that_need_the_broker_need_redis_url() -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL is required"):
        Settings().check_broker()
    Settings(redis_url="redis://127.0.0.1:6379/0").check_broker()


def test_the_web_app_needs_a_secret_key() -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEY is required"):
        Settings().check_web()


@pytest.mark.parametrize(("secret_key", "problem"), [(None, "is required"), ("too-short", "at least 32")])
def test_the_web_process_refuses_to_start_without_a_proper_secret_key_in_one_line(
    tmp_path: Path, secret_key: str | None, problem: str
) -> None:
    env = {"PATH": "", "VAR_DIR": str(tmp_path / "var"), "LOG_FORMAT": "console"}
    if secret_key is not None:
        env["SECRET_KEY"] = secret_key
    done = subprocess.run(  # what gunicorn's workers run (config/gunicorn.conf.py)
        [sys.executable, "-c", "from app.web import create_app; create_app()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == WORKER_BOOT_ERROR  # gunicorn's master stops rather than boot another
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("alarm-bridge: invalid configuration: SECRET_KEY")
    assert problem in lines[0]
    assert "too-short" not in lines[0]


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings(
        redis_url="redis://:hunter2@cache:6379/0",
        operator_api_keys=("op-secret-0123456789",),
        secret_key="session-signing-secret-0123456789",
    )
    assert "hunter2" not in repr(settings)
    assert "op-secret" not in repr(settings)
    assert "session-signing-secret" not in repr(settings)


def test_load_settings_is_the_process_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_API_KEYS", "first-operator-key,second-operator-key")
    assert load_settings().operator_api_keys == ("first-operator-key", "second-operator-key")


def test_upstream_defaults_are_the_sandbox_and_the_environment_overrides_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for kind in vendors.SETTINGS:
        monkeypatch.delenv(kind.env_name("base_url"), raising=False)
    defaults = read_settings(vendors.SETTINGS)
    assert defaults.vendor(TrackTikSettings).base_url == "http://127.0.0.1:8100/tracktik"
    assert defaults.vendor(CadSettings).base_url == "http://127.0.0.1:8100/cad"
    monkeypatch.setenv("RAPIDSOS_BASE_URL", "http://127.0.0.1:9999/rapidsos")
    assert (
        read_settings(vendors.SETTINGS).vendor(RapidSOSSettings).base_url == "http://127.0.0.1:9999/rapidsos"
    )


def test_a_sandbox_credential_aimed_at_a_real_vendor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKTIK_BASE_URL", "https://acme.tracktik.com/rest")
    with pytest.raises(ConfigurationError, match="TRACKTIK_BASE_URL"):
        read_settings(vendors.SETTINGS)


@pytest.mark.parametrize("kind", vendors.SETTINGS, ids=lambda kind: kind.prefix)
def test_every_vendor_refuses_its_sandbox_credentials_at_a_real_url(
    monkeypatch: pytest.MonkeyPatch, kind: type[VendorSettings]
) -> None:
    url = kind.env_name("base_url")
    monkeypatch.setenv(url, "https://vendor.example.com/api")
    with pytest.raises(ConfigurationError, match=f"^{url} points at vendor.example.com"):
        read_settings(vendors.SETTINGS)
    with pytest.raises(ConfigurationError, match=url):  # built directly (a test) too
        kind(base_url="https://vendor.example.com/api")
    # With its own credentials, the same URL is accepted.
    secrets = [item for item in dataclasses.fields(kind) if not item.repr]
    assert secrets, f"{kind.__name__} declares no secret"
    for item in secrets:
        monkeypatch.setenv(kind.env_name(item.name), _LONG_PROBE)
    assert read_settings(vendors.SETTINGS).vendor(kind).base_url == "https://vendor.example.com/api"


def test_vendor_settings_built_directly_are_the_sandboxs() -> None:
    settings = Settings()
    assert settings.vendor(TrackTikSettings) == TrackTikSettings()
    assert settings.vendor(CallOnAlarmSettings).fallback_account is None
    centre = settings.with_vendor(CallOnAlarmSettings(fallback_account="9000"))
    assert centre.vendor(CallOnAlarmSettings).fallback_account == "9000"
    assert centre.vendor(TrackTikSettings) == TrackTikSettings()  # the others keep their defaults


def test_vendor_settings_not_read_at_start_up_are_a_bug_never_the_sandboxs() -> None:
    """An entry point that forgot to pass them must not run production on the sandbox's defaults."""
    settings = read_settings()
    with pytest.raises(LookupError, match="TrackTikSettings was not read at start-up"):
        settings.vendor(TrackTikSettings)
    with pytest.raises(LookupError):
        read_settings([CadSettings]).vendor(TrackTikSettings)
    assert read_settings([CadSettings]).vendor(CadSettings) == CadSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ALTA_LOOKUP_TIMEOUT_S", "soon"),
        ("ALTA_VIDEO_WAIT_S", "-1"),
        ("CALLONALARM_HOURLY_BUDGET", "0"),
        ("CALLONALARM_POLL_INTERVAL_S", "0.5"),
    ],
)
def test_an_invalid_vendor_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        read_settings(vendors.SETTINGS)


@pytest.mark.parametrize(
    "entry",
    [
        "import vendors; from config.settings import load_settings; load_settings(vendors.SETTINGS)",
        "from app.web import create_app; create_app()",  # what gunicorn's workers run
        "import workers.celery_app",  # what worker, urgent and beat load
    ],
    ids=["load_settings", "web", "worker"],
)
def test_a_process_with_a_bad_vendor_value_exits_with_one_line_naming_it(tmp_path: Path, entry: str) -> None:
    env = {
        "PATH": "",
        "VAR_DIR": str(tmp_path / "var"),
        "LOG_FORMAT": "console",
        "SECRET_KEY": "s" * 32,
        "CALLONALARM_HOURLY_BUDGET": "lots",
    }
    done = subprocess.run([sys.executable, "-c", entry], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == (WORKER_BOOT_ERROR if "create_app" in entry else 1)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("alarm-bridge: invalid configuration:")
    assert "CALLONALARM_HOURLY_BUDGET" in lines[0]


def test_vendor_secrets_stay_out_of_repr() -> None:
    tracktik = TrackTikSettings(client_secret="tt-secret-0123", password="tt-password-0123")
    settings = Settings().with_vendor(tracktik)
    for shown in (repr(tracktik), repr(settings)):
        assert "tt-secret" not in shown
        assert "tt-password" not in shown


def test_vendor_settings_are_a_frozen_dataclass_with_a_prefix_and_a_base_url() -> None:
    """A mistake in a vendor's declaration is a bug: TypeError at start-up, not a configuration error."""

    @dataclasses.dataclass(frozen=True, slots=True)
    class NoURL(VendorSettings):
        prefix: ClassVar[str] = "NOURL"
        description: ClassVar[str] = "nothing"
        base_url: ClassVar[str] = "http://127.0.0.1/none"
        token: str = setting("t", secret=True)

    @dataclasses.dataclass(slots=True)
    class Mutable(VendorSettings):
        prefix: ClassVar[str] = "MUTABLE"
        description: ClassVar[str] = "nothing"
        base_url: str = "http://127.0.0.1/mutable"

    for kind in (NoURL, Mutable):
        with pytest.raises(TypeError, match=kind.__name__):
            read_settings([kind])


def _variable(item: dataclasses.Field[object], prefix: str = "") -> str:
    return str(item.metadata.get("env") or f"{prefix}_{item.name}".lstrip("_").upper())


_LONG_PROBE = "probe-value-long-enough-to-be-a-signing-key"


def _probe(item: dataclasses.Field[object], default: object) -> tuple[str, object] | None:
    """A value for the field's variable other than its default, and what it reads as (None: skip)."""
    check = item.metadata.get("check")
    if isinstance(default, bool) or item.name in ("database_url", "redis_url"):
        return None
    if isinstance(default, int | float):
        wanted = default + 1
    elif isinstance(default, tuple):
        return (  # long enough for an operator key, and a user:password for Flower
            "probe-one:0123456789xx,probe-two:0123456789yy",
            ("probe-one:0123456789xx", "probe-two:0123456789yy"),
        )
    elif isinstance(default, str | None) and check is None and item.name != "auth_failure_limit":
        text = "http://127.0.0.1:9/probe" if item.name.endswith("_url") else _LONG_PROBE
        return (text, text)
    else:
        return None
    try:
        if check is not None:
            check(wanted)
    except Exception:
        return None
    return (str(wanted), wanted)


def test_every_setting_is_read_from_its_variable_and_listed_in_the_readme(monkeypatch):
    """The reader loops over the fields: a new field is read (and must be documented) with no second list.

    The same holds for every vendor's settings, read through the same reader with its prefix.
    """
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    owners: list[tuple[type[Any], str]] = [(Settings, "")]
    owners += [(kind, kind.prefix) for kind in vendors.SETTINGS]
    probed, unprobed = 0, []
    for owner, prefix in owners:
        default = owner()
        for item in dataclasses.fields(owner):
            if item.name in NOT_VARIABLES:
                continue
            name = _variable(item, prefix)
            assert f"`{name}`" in readme, f"{name} is not in the README"
            probe = _probe(item, getattr(default, item.name))
            if probe is None:
                unprobed.append(name)
                continue
            monkeypatch.setenv(name, probe[0])
            read = read_settings(vendors.SETTINGS)
            found = read if owner is Settings else read.vendor(owner)
            assert getattr(found, item.name) == probe[1], name
            monkeypatch.delenv(name)
            probed += 1
    assert probed > 60
    assert not [name for name in unprobed if name.startswith(tuple(kind.prefix for kind in vendors.SETTINGS))]


def test_a_setting_without_a_reader_is_a_bug_at_start_up():
    item = dataclasses.field(default=b"")
    item.name = "blob"
    with pytest.raises(TypeError, match=r"^BLOB: no reader"):
        _read(Env(), item, bytes)


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False), ("", False)])
def test_dual_path_copies_is_read_as_a_yes_or_no(monkeypatch, value, expected):
    monkeypatch.setenv("DUAL_PATH_COPIES", value)
    if value == "":
        monkeypatch.delenv("DUAL_PATH_COPIES")
    assert read_settings().dual_path_copies is expected
    assert IntakeRules.from_settings(read_settings()).path_copies is expected


def test_dual_path_copies_refuses_what_is_not_a_yes_or_no(monkeypatch):
    monkeypatch.setenv("DUAL_PATH_COPIES", "perhaps")
    with pytest.raises(ConfigurationError, match="DUAL_PATH_COPIES"):
        read_settings()
