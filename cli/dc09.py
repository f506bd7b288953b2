"""``alarm-bridge send-test-event --dc09``: one real SIA DC-09 frame to a running receiver, over TCP or
UDP, encrypted when a key is given, and the receiver's answer checked (ACK with a valid CRC)."""

from __future__ import annotations

import re
import secrets
import socket

import click

DC09_TIMEOUT_S = 10.0
DC09_ACCOUNT = re.compile(r"[0-9A-Fa-f]{3,16}")
# What the test frame may carry: a two-letter SIA code and a numeric zone (a letter there would read
# as part of another code; anything else would change the frame around it).
SIA_CODE = re.compile(r"[A-Za-z]{2}")
SIA_ZONE = re.compile(r"[0-9]{1,4}")
# SIA "Manual Test" (app/domain/sia_codes.toml): recorded as an event, opens no alarm, starts no step.
DEFAULT_TEST_CODE = "RX"


def send_dc09_test(
    to: str | None,
    *,
    account: str | None,
    code: str | None,
    zone: str | None,
    key: str | None,
    key_format: str,
    sequence: int | None,
    udp: bool,
    link_test: bool,
) -> None:
    """Send one DC-09 frame (encrypted with ``key``) to a receiver, print it and its answer.

    Exits 0 on an ACK whose CRC is right; a NAK, a DUH, silence or a garbled answer is one line and
    exit 1.
    """
    from app.receiver.frames import NULL, SIA_DCS, build_frame, read_reply

    if not account or not DC09_ACCOUNT.fullmatch(account):
        raise click.UsageError("--dc09 needs --account, 3 to 16 hex digits (the panel's DC-09 account)")
    if link_test and (code or zone):
        raise click.UsageError("--null sends a link test: it takes no --code or --zone")
    if code is not None and not SIA_CODE.fullmatch(code):
        raise click.BadParameter("an SIA event code is two letters, like BA", param_hint="--code")
    if zone is not None and not SIA_ZONE.fullmatch(zone):
        raise click.BadParameter("a zone in an SIA-DCS frame is 1 to 4 digits, like 3", param_hint="--zone")
    secret = None if key is None else _dc09_key(key, key_format)
    host, port = _dc09_address(to)
    code = None if link_test else (code or DEFAULT_TEST_CODE).upper()
    number = secrets.randbelow(9999) + 1 if sequence is None else sequence
    frame = build_frame(
        account, code, zone, sequence=number, key=secret, message_type=NULL if link_test else SIA_DCS
    )
    what = "NULL (link test)" if link_test else f"SIA-DCS {code}{f' zone {zone}' if zone else ''}"
    cipher = f", AES-{len(secret) * 8}" if secret else ""
    click.echo(
        f"DC-09 over {'UDP' if udp else 'TCP'} to {host}:{port}: {what} for account {account}, "
        f"sequence {number:04d}{cipher}"
    )
    click.echo(f"sent:   {frame.decode('ascii').strip()}")
    raw = _dc09_exchange(host, port, frame, udp=udp)
    reply = read_reply(raw, secret, account)
    click.echo(f"answer: {reply.text}")
    if not reply.crc_ok:
        raise click.ClickException("the answer is not a DC-09 answer with a valid CRC")
    if reply.kind != "ACK":
        hint = " (refused: see the receiver's log for the reason)" if reply.kind == "NAK" else ""
        raise click.ClickException(f"the receiver answered {reply.kind}{hint}")
    click.echo("ACK: the receiver has committed the frame")


def _dc09_key(text: str, key_format: str) -> bytes:
    """The AES key bytes of ``--key`` (the sites file's rule: 16, 24 or 32 bytes)."""
    try:
        secret = bytes.fromhex(text) if key_format == "hex" else text.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        secret = b""
    if len(secret) not in (16, 24, 32):
        shape = "32, 48 or 64 hex digits" if key_format == "hex" else "16, 24 or 32 ASCII characters"
        raise click.BadParameter(f"an AES key is {shape}", param_hint="--key")
    return secret


def _dc09_address(to: str | None) -> tuple[str, int]:
    """``--to`` as (host, port); the port defaults to SIA_RECEIVER_PORT."""
    from config.settings import load_settings

    if to is None:
        return "127.0.0.1", load_settings().sia_receiver_port
    if to.startswith("[") and "]:" in to:  # [IPv6]:PORT
        host, _, port = to[1:].partition("]:")
    else:
        host, _, port = to.rpartition(":") if to.count(":") == 1 else (to, "", "")
    if not port:
        return to.strip("[]"), load_settings().sia_receiver_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{to!r} is not HOST or HOST:PORT", param_hint="--to")
    return host, int(port)


def _dc09_exchange(host: str, port: int, frame: bytes, *, udp: bool) -> bytes:
    """Send ``frame`` and read one answer (up to its CR); a ClickException when none comes."""
    where = f"{host}:{port}"
    try:
        if udp:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(DC09_TIMEOUT_S)
                sock.sendto(frame, address)
                return sock.recvfrom(8192)[0]
        with socket.create_connection((host, port), timeout=DC09_TIMEOUT_S) as sock:
            sock.sendall(frame)
            answer = b""
            while not answer.endswith(b"\r") and len(answer) < 8192:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        raise click.ClickException(f"no answer from {where} within {DC09_TIMEOUT_S:g}s") from None
    except OSError as exc:
        raise click.ClickException(f"cannot reach {where}: {exc.strerror or exc}") from None
    if not answer:
        raise click.ClickException(f"{where} closed the connection without an answer")
    return answer
