"""`send-test-event --dc09 --to`: every way an integrator writes the receiver's address."""

from __future__ import annotations

import click
import pytest

from cli.dc09 import _dc09_address

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("to", "address"),
    [
        ("10.0.0.5:7777", ("10.0.0.5", 7777)),
        ("receiver.example:7000", ("receiver.example", 7000)),
        ("[::1]:7777", ("::1", 7777)),  # was read as host "::1]:7777"
        ("[2001:db8::7]:12000", ("2001:db8::7", 12000)),
    ],
)
def test_a_host_and_port_are_read(to: str, address: tuple[str, int]) -> None:
    assert _dc09_address(to) == address


@pytest.mark.parametrize("to", ["10.0.0.5", "::1", "[::1]"])
def test_a_host_alone_takes_the_configured_port(to: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIA_RECEIVER_PORT", "7123")
    assert _dc09_address(to) == (to.strip("[]"), 7123)


@pytest.mark.parametrize("to", ["10.0.0.5:0", "10.0.0.5:port", "[::1]:99999"])
def test_a_bad_port_is_refused_naming_the_option(to: str) -> None:
    with pytest.raises(click.BadParameter, match="HOST:PORT"):
        _dc09_address(to)
