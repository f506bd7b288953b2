"""The settings of /metrics protection and of running behind HTTPS and proxies (issue 16)."""

from __future__ import annotations

import pytest

from config.settings import ConfigurationError, Settings, read_settings

pytestmark = pytest.mark.unit


def test_defaults_leave_metrics_open_cached_briefly_and_believe_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("METRICS_TOKEN", "METRICS_CACHE_S", "PREFERRED_URL_SCHEME", "TRUSTED_PROXY_COUNT"):
        monkeypatch.delenv(name, raising=False)
    settings = read_settings()
    assert (settings.metrics_token, settings.metrics_cache_s) == ("", 5.0)
    assert (settings.preferred_url_scheme, settings.trusted_proxy_count) == ("http", 0)


def test_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_TOKEN", "scrape-token-0123456789")
    monkeypatch.setenv("METRICS_CACHE_S", "2.5")
    monkeypatch.setenv("PREFERRED_URL_SCHEME", "https")
    monkeypatch.setenv("TRUSTED_PROXY_COUNT", "1")
    settings = read_settings()
    assert settings.metrics_token == "scrape-token-0123456789"
    assert "scrape-token" not in repr(settings)
    assert (settings.metrics_cache_s, settings.preferred_url_scheme, settings.trusted_proxy_count) == (
        2.5,
        "https",
        1,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METRICS_CACHE_S", "-1"),
        ("PREFERRED_URL_SCHEME", "ftp"),
        ("TRUSTED_PROXY_COUNT", "-1"),
        ("TRUSTED_PROXY_COUNT", "many"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        read_settings()


@pytest.mark.parametrize("token", ["short", "has a space in it, long enough", "tab\tinside-the-token"])
def test_a_guessable_or_unprintable_metrics_token_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(ConfigurationError, match="METRICS_TOKEN") as refused:
        Settings(metrics_token=token)
    assert token not in str(refused.value)
