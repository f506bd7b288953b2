"""The DC-09 receiver's test material: a sites file with two dc09 sources (hex and ASCII keys of
every AES size, and a plain account), the environment it names, and reading an answer off a socket."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.sites_fixture import new_york, site_toml

KEYS = {
    "128A": bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"),
    "192B": bytes.fromhex("8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b"),
    "256C": bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"),
}
ASCII_KEY = b"AAAAAAAAAAAAAAAA"
PLAIN = "1234"
SOURCE_ENV = {
    "ACME_DC09_KEYS": ",".join(f"{account}={key.hex()}" for account, key in KEYS.items()),
    "AJAX_DC09_KEYS": f"A1A1={ASCII_KEY.decode()}",
}
SITES = (
    """
[sources.acme-dc09]
kind = "dc09"
encryption_keys_env = "ACME_DC09_KEYS"

[sources.ajax-dc09]
kind = "dc09"
encryption_keys_env = "AJAX_DC09_KEYS"
encryption_keys_format = "ascii"

[plans.guarded]
fire = ["callonalarm.trigger"]
burglary = ["callonalarm.trigger"]
default = []
"""
    + site_toml(
        "hq",
        name="HQ",
        sources=["acme-dc09"],
        accounts=[PLAIN, *KEYS],
        plan="guarded",
        callonalarm={"account_number": "1001"},
        location=new_york("HQ"),
    )
    + site_toml(
        "home",
        name="Home",
        sources=["ajax-dc09"],
        accounts=["A1A1"],
        plan="guarded",
        callonalarm={"account_number": "1005"},
        location=new_york("Home", coordinates=False),
        site_type="RESIDENTIAL",
    )
)


def write_sites(directory: Path) -> Path:
    """The sites file above, as ``sites.toml`` in ``directory``."""
    path = directory / "sites.toml"
    path.write_text(SITES, encoding="utf-8")
    return path


def read_answer(sock: socket.socket) -> bytes:
    """Bytes up to the answer's CR (or until the receiver closes the connection)."""
    answer = b""
    while not answer.endswith(b"\r"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer
