"""The DC-09 receiver's settings (issue 18): where it listens, how long an idle connection may stay,
how many frames it records at once, and where it serves its metrics."""

from __future__ import annotations

import pytest

from config.settings import ConfigurationError, read_settings

pytestmark = pytest.mark.unit
NAMES = (
    "SIA_RECEIVER_HOST",
    "SIA_RECEIVER_PORT",
    "SIA_RECEIVER_IDLE_TIMEOUT_S",
    "SIA_RECEIVER_CONCURRENCY",
    "SIA_RECEIVER_METRICS_PORT",
)


def test_the_receiver_listens_on_port_7777_of_every_interface_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    settings = read_settings()

    assert (settings.sia_receiver_host, settings.sia_receiver_port) == ("0.0.0.0", 7777)  # noqa: S104
    assert (settings.sia_receiver_idle_timeout_s, settings.sia_receiver_concurrency) == (60.0, 8)
    assert settings.sia_receiver_metrics_port is None


def test_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in zip(NAMES, ("127.0.0.1", "12000", "15", "16", "9102"), strict=True):
        monkeypatch.setenv(name, value)
    settings = read_settings()

    assert (settings.sia_receiver_host, settings.sia_receiver_port) == ("127.0.0.1", 12000)
    assert (settings.sia_receiver_idle_timeout_s, settings.sia_receiver_concurrency) == (15.0, 16)
    assert settings.sia_receiver_metrics_port == 9102


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIA_RECEIVER_PORT", "0"),
        ("SIA_RECEIVER_PORT", "70000"),
        ("SIA_RECEIVER_IDLE_TIMEOUT_S", "0"),
        ("SIA_RECEIVER_CONCURRENCY", "0"),
        ("SIA_RECEIVER_METRICS_PORT", "seven"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError, match=name) as caught:
        read_settings()
    assert "\n" not in str(caught.value)
