"""Settings: embedded-mode defaults, and one clear line naming the variable when a value is bad."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from environs import Env

from config.settings import ConfigurationError, Settings, _read, load_settings, read_settings

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


def test_long_enough_secrets_and_a_rate_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "s" * 32)
    monkeypatch.setenv("OPERATOR_API_KEYS", "sixteen-chars-ok,another-operator-key")
    monkeypatch.setenv("AUTH_FAILURE_LIMIT", "5/minute")
    settings = read_settings()
    settings.check_web()
    assert settings.operator_api_keys == ("sixteen-chars-ok", "another-operator-key")
    assert settings.auth_failure_limit == "5/minute"
    assert Settings().auth_failure_limit == "10 per minute"


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
    assert done.returncode == 1
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
    for vendor in ("ALTA", "TRACKTIK", "CALLONALARM", "RAPIDSOS", "CAD"):
        monkeypatch.delenv(f"{vendor}_BASE_URL", raising=False)
    defaults = read_settings()
    assert defaults.tracktik_base_url == "http://127.0.0.1:8100/tracktik"
    assert defaults.cad_base_url == "http://127.0.0.1:8100/cad"
    monkeypatch.setenv("RAPIDSOS_BASE_URL", "http://127.0.0.1:9999/rapidsos")
    assert read_settings().rapidsos_base_url == "http://127.0.0.1:9999/rapidsos"


def test_a_sandbox_credential_aimed_at_a_real_vendor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKTIK_BASE_URL", "https://acme.tracktik.com/rest")
    with pytest.raises(ConfigurationError, match="TRACKTIK_BASE_URL"):
        read_settings()


def _variable(item: dataclasses.Field[object]) -> str:
    return str(item.metadata.get("env", item.name.upper()))


_LONG_PROBE = "probe-value-long-enough-to-be-a-signing-key"


def _probe(item: dataclasses.Field[object], default: object) -> tuple[str, object] | None:
    """A value for the field's variable other than its default, and what it reads as (None: skip)."""
    check = item.metadata.get("check")
    if isinstance(default, bool) or item.name in ("database_url", "redis_url"):
        return None
    if isinstance(default, int | float):
        wanted = default + 1
    elif isinstance(default, tuple):
        return (
            "probe-one-0123456789:x,probe-two-0123456789:y",
            ("probe-one-0123456789:x", "probe-two-0123456789:y"),
        )
    elif isinstance(default, str) and check is None and item.name != "auth_failure_limit":
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
    """The reader loops over the fields: a new field is read (and must be documented) with no second list."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    default = Settings()
    probed = 0
    for item in dataclasses.fields(Settings):
        if item.name == "environ":
            continue
        name = _variable(item)
        assert f"`{name}`" in readme, f"{name} is not in the README"
        probe = _probe(item, getattr(default, item.name))
        if probe is None:
            continue
        monkeypatch.setenv(name, probe[0])
        assert getattr(read_settings(), item.name) == probe[1], name
        monkeypatch.delenv(name)
        probed += 1
    assert probed > 50


def test_a_setting_without_a_reader_is_a_bug_at_start_up():
    item = dataclasses.field(default=b"")
    item.name = "blob"
    with pytest.raises(TypeError, match=r"Settings\.blob"):
        _read(Env(), item, bytes)
