"""The integrator's commands: ``sites check``, ``send-test-event`` and ``alarms show``.

Whoever wires a panel, an Alta deployment or a sites file can check their work from a terminal
without writing a client: validate a sites file exactly as the web process will load it, post an
authenticated (bearer token) or signed (Standard Webhooks) test signal to a running bridge, and read
an alarm's story with its times to the millisecond. ``app.cli`` registers them on ``alarm-bridge``.

HTTP goes through the standard library (nothing under ``app`` imports ``requests``): every call has a
timeout, redirects are not followed (a POST silently turned into a GET would hide the real answer),
and a loopback address is never sent through a proxy from the environment.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import re
import secrets
import socket
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from app.domain.plans import UNKNOWN_KEY, Plan, format_duration

if TYPE_CHECKING:
    from app.domain.sites import SupervisedAccount, Supervision

HTTP_TIMEOUT_S = 10.0
# SIA "Manual Test" (app/domain/sia_codes.toml): recorded as an event, opens no alarm, starts no step.
DEFAULT_TEST_CODE = "RX"
TEST_MESSAGE = "test event sent by alarm-bridge send-test-event"
USER_AGENT = "alarm-bridge-cli"
BODY_EXCERPT_CHARS = 500


# --------------------------------------------------------------------------------------------------
# alarm-bridge sites check


class _SecretsView(Mapping[str, str]):
    """The environment as ``load_sites`` reads it, noting which named variables are unset.

    With ``placeholders`` an unset variable reads as a stand-in secret, so the rest of the file (the
    sites that use that source, their routes and plans) is still checked on a machine that does not
    hold the production secrets. The stand-in is valid both as a bearer token and as a Standard
    Webhooks secret, and differs per variable name, so it raises no problem of its own; a dc09
    source's ``encryption_keys_env`` reads as a key for each account its sites route to it
    (``dc09_stand_ins``).
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        placeholders: bool,
        dc09_stand_ins: Mapping[str, str] | None = None,
    ) -> None:
        self._environ = environ
        self._placeholders = placeholders
        self._dc09_stand_ins = dc09_stand_ins or {}
        self.missing: list[str] = []

    def __getitem__(self, name: str) -> str:
        if name in self._environ:
            return self._environ[name]
        if name not in self.missing:
            self.missing.append(name)
        if not self._placeholders:
            raise KeyError(name)
        if name in self._dc09_stand_ins:
            return self._dc09_stand_ins[name]
        digest = hashlib.sha256(f"alarm-bridge sites check placeholder {name}".encode()).digest()
        return "whsec_" + base64.b64encode(digest).decode()

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def dc09_stand_ins(path: Path) -> dict[str, str]:
    """Stand-in values of the file's dc09 key variables: a well-formed key for every account its
    sites route through that source (so neither a stray key nor a missing one is reported)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}  # load_sites reports it
    sources, sites = document.get("sources"), document.get("sites")
    if not isinstance(sources, dict) or not isinstance(sites, dict):
        return {}
    found: dict[str, str] = {}
    for key, source in sources.items():
        if not isinstance(source, dict) or source.get("kind") != "dc09":
            continue
        name = source.get("encryption_keys_env")
        ascii_keys = source.get("encryption_keys_format") == "ascii"
        accounts = {
            account.strip()
            for site in sites.values()
            if isinstance(site, dict) and key in (site.get("sources") or ())
            for account in site.get("accounts") or ()
            if isinstance(account, str) and _DC09_ACCOUNT.fullmatch(account.strip())
        }
        if isinstance(name, str) and accounts:
            stand_in = "k" * 16 if ascii_keys else "0" * 32
            found[name] = ",".join(f"{account}={stand_in}" for account in sorted(accounts))
    return found


@click.group()
def sites() -> None:
    """The sites file: who may post signals, which site each belongs to, and what to do."""


@sites.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--ignore-missing-secrets",
    is_flag=True,
    help="Check a file whose token_env / signing_secrets_env variables are not set here, using "
    "stand-in values (the secrets themselves are then not checked).",
)
def sites_check(file: Path | None, ignore_missing_secrets: bool) -> None:
    """Validate a sites file (default: SITES_FILE) as the web process would load it.

    Secrets are read from the environment variables the file names, as at start-up. Prints one
    line per problem and exits 1, or a short summary and exits 0.
    """
    from app.domain.sites import SitesFileError
    from app.domain.sites_file import load_sites
    from config.settings import load_settings

    settings = load_settings()
    path = file or (Path(settings.sites_file) if settings.sites_file else None)
    if path is None:
        raise click.UsageError("give the FILE to check, or set SITES_FILE")
    environ = _SecretsView(
        settings.environ, placeholders=ignore_missing_secrets, dc09_stand_ins=dc09_stand_ins(path)
    )
    try:
        directory = load_sites(path, environ)
    except SitesFileError as exc:
        for line in exc.errors:
            click.echo(line)
        count = len(exc.errors)
        click.echo(f"{path}: {count} problem{'' if count == 1 else 's'}", err=True)
        if environ.missing and not ignore_missing_secrets:
            click.echo(
                f"{path}: {', '.join(environ.missing)} not set here; --ignore-missing-secrets checks "
                "the rest of the file without them",
                err=True,
            )
        raise SystemExit(1) from None
    sources = directory.sources
    kinds = {kind: sum(1 for source in sources if source.kind == kind) for kind in ("panel", "alta", "dc09")}
    dc09 = f", {kinds['dc09']} dc09" if kinds["dc09"] else ""
    accounts = sum(len(site.accounts) for site in directory.sites)
    zones = sum(len(site.alta_zones) for site in directory.sites)
    plans = len({site.plan.key for site in directory.sites})
    click.echo(
        f"{path}: ok: {_count(len(sources), 'source')} ({kinds['panel']} panel, {kinds['alta']} alta{dc09}), "
        f"{_count(len(directory.sites), 'site')}, {_count(accounts, 'panel account')}, "
        f"{_count(zones, 'Alta zone')}, {_count(plans, 'plan')} in use"
    )
    for plan in sorted({site.plan for site in directory.sites}, key=lambda p: p.key):
        click.echo(f"{path}: {_unknown_code_rule(plan)}")
    for line in _supervision_lines(directory.supervised_accounts):
        click.echo(f"{path}: {line}")
    if environ.missing:
        click.echo(f"{path}: not set here, checked with stand-ins: {', '.join(environ.missing)}")


def _supervision_lines(accounts: Sequence[SupervisedAccount]) -> list[str]:
    """Per site, what its supervised accounts must send and when a silence becomes a trouble."""
    by_site: dict[tuple[str, Supervision], int] = {}
    for account in accounts:
        key = (account.site_key, account.supervision)
        by_site[key] = by_site.get(key, 0) + 1
    lines = []
    for (site_key, rule), count in by_site.items():
        checks = []
        if rule.link is not None:
            checks.append(f"a link (any event or DC-09 frame) within {format_duration(rule.link)}")
        if rule.test_interval is not None:
            checks.append(
                f"an automatic test (RP) every {format_duration(rule.test_interval)} "
                f"(+{format_duration(rule.test_grace)} grace)"
            )
        lines.append(
            f'site "{site_key}": {_count(count, "account")} supervised: {" and ".join(checks)}, '
            "else a trouble for a person"
        )
    return lines


def _unknown_code_rule(plan: Plan) -> str:
    """What a plan does with a code outside the SIA catalogue: the integrator's explicit opt-in."""
    steps = plan.steps_by_key.get(UNKNOWN_KEY)
    if steps:
        names = ", ".join(step.kind for step in steps)
        return f'plan "{plan.key}": an unknown code asks a person and runs its "unknown" list ({names})'
    return (
        f'plan "{plan.key}": an unknown code asks a person and runs nothing (an "unknown" list would opt in)'
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# --------------------------------------------------------------------------------------------------
# HTTP to a running bridge


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the bridge answered: status, reason, and the body as JSON (or as text if not JSON)."""

    status: int
    reason: str
    body: Any
    is_json: bool

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def shown(self) -> str:
        """The body for the terminal: indented JSON, or the start of the text."""
        if self.is_json:
            return json.dumps(self.body, indent=2, ensure_ascii=False)
        text = str(self.body)
        return text if len(text) <= BODY_EXCERPT_CHARS else text[:BODY_EXCERPT_CHARS] + "…"

    def problem(self) -> str:
        """One line: the status and the bridge's own error and message, when it sent them."""
        if self.is_json and isinstance(self.body, dict) and "error" in self.body:
            return f"{self.status} {self.body['error']}: {self.body.get('message', '')}".rstrip(": ")
        return f"{self.status} {self.reason}".rstrip()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is answered as it is


def _base_url(url: str | None) -> str:
    """``--url``, or the bridge on this machine at PORT."""
    if url is None:
        from config.settings import load_settings

        return f"http://127.0.0.1:{load_settings().port}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (a host name is not resolved)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _request(method: str, url: str, *, headers: Mapping[str, str], data: bytes | None = None) -> _Answer:
    """One HTTP call; a ClickException with one readable line when no answer comes."""
    host = urllib.parse.urlsplit(url).hostname or ""
    proxies = urllib.request.ProxyHandler({}) if is_loopback(host) else urllib.request.ProxyHandler()
    opener = urllib.request.build_opener(proxies, _NoRedirects())
    request = urllib.request.Request(  # noqa: S310 - _base_url admits http(s) only
        url, data=data, method=method, headers={"User-Agent": USER_AGENT, **headers}
    )
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT_S) as response:
            return _answer(response.status, response.reason, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return _answer(exc.code, str(exc.reason), exc.read())
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, garbled answers
        raise click.ClickException(f"cannot reach {url}: {exc or type(exc).__name__}") from None


def _answer(status: int, reason: str, raw: bytes) -> _Answer:
    with contextlib.suppress(ValueError):  # an unlisted status keeps the server's own reason
        reason = HTTPStatus(status).phrase  # servers differ in case ("ACCEPTED", "Accepted")
    text = raw.decode("utf-8", "replace")
    try:
        return _Answer(status, reason, json.loads(text), True)
    except ValueError:
        return _Answer(status, reason, text, False)


# --------------------------------------------------------------------------------------------------
# alarm-bridge send-test-event


@click.command("send-test-event")
@click.option("--url", default=None, help="The bridge [default: http://127.0.0.1:$PORT].")
@click.option("--token", default=None, help="The source's bearer token.")
@click.option(
    "--signing-secret",
    default=None,
    help="The source's Standard Webhooks secret (whsec_…): sign the body instead of sending a token.",
)
@click.option("--account", default=None, help="The panel account number (panel events).")
@click.option(
    "--code",
    default=None,
    help=f"The SIA event code [default: {DEFAULT_TEST_CODE}, a manual test: recorded, opens no alarm].",
)
@click.option("--zone", default=None, help="The panel's zone; with --alta, the Alta alarm zone id.")
@click.option(
    "--alta",
    is_flag=True,
    help="Post an Alta zone webhook to /v1/webhooks/alta instead. Alta webhooks carry no code: this "
    "opens an alarm and starts the site's plan.",
)
@click.option(
    "--event-id",
    default=None,
    help="The sender's event id [default: a new one]; send one twice to see the duplicate answer (200).",
)
@click.option(
    "--dc09",
    is_flag=True,
    help="Send a real SIA DC-09 frame to the receiver (alarm-bridge receiver) instead, over TCP.",
)
@click.option(
    "--to",
    "dc09_to",
    default=None,
    metavar="HOST[:PORT]",
    help="With --dc09: the receiver [default: 127.0.0.1:$SIA_RECEIVER_PORT].",
)
@click.option("--udp", is_flag=True, help="With --dc09: send the frame in a UDP datagram.")
@click.option(
    "--key",
    default=None,
    help="With --dc09: the account's AES key; the frame is then encrypted (AES-128/192/256).",
)
@click.option(
    "--key-format",
    type=click.Choice(["hex", "ascii"]),
    default="hex",
    show_default=True,
    help="With --key: 32/48/64 hex digits, or the 16/24/32 characters themselves (pysiaalarm's form).",
)
@click.option(
    "--sequence",
    type=click.IntRange(0, 9999),
    default=None,
    help="With --dc09: the frame's sequence number [default: a random one]; the same number and "
    "timestamp again is a retransmission, recorded once.",
)
@click.option("--null", "link_test", is_flag=True, help="With --dc09: send a NULL (link test) frame.")
def send_test_event(
    url: str | None,
    token: str | None,
    signing_secret: str | None,
    account: str | None,
    code: str | None,
    zone: str | None,
    alta: bool,
    event_id: str | None,
    dc09: bool,
    dc09_to: str | None,
    udp: bool,
    key: str | None,
    key_format: str,
    sequence: int | None,
    link_test: bool,
) -> None:
    """Post one authenticated test signal to a running bridge and print its answer.

    \b
    alarm-bridge send-test-event --token "$ACME_PANELS_TOKEN" --account ab-95367
    alarm-bridge send-test-event --signing-secret "$ACME_PANELS_WHSEC" --account ab-95367 --code BA --zone 3
    alarm-bridge send-test-event --alta --token "$ALTA_MAIN_TOKEN" --zone az-5d1c
    alarm-bridge send-test-event --dc09 --account 1234 --code BA --zone 3 --key "$KEY_OF_1234"

    Exits 0 on a 2xx answer (202 recorded, 200 already recorded) or a DC-09 ACK, 1 otherwise.
    """
    if dc09:
        if token or signing_secret or alta or event_id or url:
            raise click.UsageError("--dc09 takes no --url, --token, --signing-secret, --alta or --event-id")
        send_dc09_test(
            dc09_to, account=account, code=code, zone=zone, key=key, key_format=key_format,
            sequence=sequence, udp=udp, link_test=link_test,
        )  # fmt: skip
        return
    if dc09_to or udp or key or sequence is not None or link_test:
        raise click.UsageError("--to, --udp, --key, --sequence and --null are for --dc09")
    if (token is None) == (signing_secret is None):
        raise click.UsageError("give either --token or --signing-secret")
    now = datetime.now(UTC)
    event_id = event_id or f"send-test-event-{uuid.uuid4().hex[:16]}"
    body: dict[str, Any]
    if alta:
        if account is not None or code is not None:
            raise click.UsageError("--account and --code are for panel events; --alta takes --zone")
        if not zone:
            raise click.UsageError("--alta needs --zone, the Alta alarm zone id")
        path, what = "/v1/webhooks/alta", f"Alta zone webhook for zone {zone}"
        body = {
            "source": "alta",
            "alarmZoneId": zone,
            "alarmZoneName": "alarm-bridge test",
            "deviceName": "alarm-bridge send-test-event",
            "triggerPhase": "Alarm",
            "detection": "Test",
            "description": TEST_MESSAGE,
            "timeIso": now.isoformat(timespec="milliseconds"),
            "eventId": event_id,
        }
    else:
        if not account:
            raise click.UsageError("give the panel's --account (or --alta with --zone)")
        code = (code or DEFAULT_TEST_CODE).upper()
        path, what = "/v1/events", f"panel event {code} for account {account}"
        body = {
            "account": account,
            "code": code,
            "zone": zone,
            "message": TEST_MESSAGE,
            "occurred_at": now.isoformat(timespec="milliseconds"),
            "event_id": event_id,
        }
    text = json.dumps(body)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if signing_secret is not None:
        headers.update(_signature_headers(signing_secret, text, now))
    else:
        headers["Authorization"] = f"Bearer {token}"
    target = _base_url(url) + path
    click.echo(f"POST {target}: {what}, event id {event_id}")
    answer = _request("POST", target, headers=headers, data=text.encode())
    click.echo(f"HTTP {answer.status} {answer.reason}".rstrip())
    click.echo(answer.shown())
    if not answer.ok:
        raise click.ClickException(f"the bridge did not accept the event: {answer.problem()}")


DC09_TIMEOUT_S = 10.0
_DC09_ACCOUNT = re.compile(r"[0-9A-Fa-f]{3,16}")


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

    if not account or not _DC09_ACCOUNT.fullmatch(account):
        raise click.UsageError("--dc09 needs --account, 3 to 16 hex digits (the panel's DC-09 account)")
    if link_test and (code or zone):
        raise click.UsageError("--null sends a link test: it takes no --code or --zone")
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


def _signature_headers(secret: str, body: str, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers (webhook-id, -timestamp, -signature) for ``body`` signed now."""
    from standardwebhooks.webhooks import Webhook

    msg_id = f"msg_{uuid.uuid4().hex}"
    try:
        signature = Webhook(secret).sign(msg_id, now, body)
    except Exception:  # noqa: BLE001 - the library raises several types for a malformed secret
        raise click.BadParameter(
            "not a Standard Webhooks secret (whsec_ then base64)", param_hint="--signing-secret"
        ) from None
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


# --------------------------------------------------------------------------------------------------
# alarm-bridge alarms show


@click.group()
def alarms() -> None:
    """Alarms in the ledger, read through the operator API of a running bridge."""


@alarms.command("show")
@click.argument("alarm_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--url", default=None, help="The bridge [default: http://127.0.0.1:$PORT].")
@click.option("--key", default=None, help="An operator key [default: the first of OPERATOR_API_KEYS].")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
def alarms_show(alarm_id: int, url: str | None, key: str | None, as_json: bool) -> None:
    """One alarm: its state, events, actions and timeline (times in UTC, to the millisecond)."""
    if key is None:
        from config.settings import load_settings

        keys = load_settings().operator_api_keys
        if not keys:
            raise click.UsageError("give --key, or set OPERATOR_API_KEYS")
        key = keys[0]
    target = f"{_base_url(url)}/v1/alarms/{alarm_id}"
    answer = _request("GET", target, headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
    if answer.status == 401:
        raise click.ClickException(f"the operator key was refused ({answer.problem()})")
    if answer.status == 404:
        raise click.ClickException(f"no alarm {alarm_id} at {_base_url(url)} ({answer.problem()})")
    if not answer.ok or not (answer.is_json and isinstance(answer.body, dict)):
        raise click.ClickException(f"GET {target} answered {answer.problem()}")
    if as_json:
        click.echo(answer.shown())
        return
    for line in render_alarm(answer.body):
        click.echo(line)


def ms(value: str | None) -> str:
    """An ISO time from the API as UTC to the millisecond (``2025-06-01 14:03:07.482Z``); ``-`` if none."""
    if not value:
        return "-"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> Iterator[str]:
    """Rows with each column padded to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(max((len(r) for r in rows), default=0))]
    for row in rows:
        yield indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()


def render_alarm(alarm: Mapping[str, Any]) -> Iterator[str]:
    """The terminal view of ``GET /v1/alarms/<id>``: header, events, actions, timeline."""
    yield f"Alarm {alarm.get('id')}: {_text(alarm.get('description'))}"
    reason = alarm.get("needs_person_reason")
    needs = f"yes: {_text(reason)}" if alarm.get("needs_person") else "no"
    origin = ", ".join(f"{name} {alarm[name]}" for name in ("account", "zone", "code") if alarm.get(name))
    header = [
        ["state", _text(alarm.get("state"))],
        ["outcome", _text(alarm.get("outcome"))],
        ["family", _text(alarm.get("family"))],
        ["priority", _text(alarm.get("priority"))],
        ["site", _text(alarm.get("site")) if alarm.get("site") else "(unrouted)"],
        ["needs person", needs],
        ["source", f"{_text(alarm.get('source'))}{', ' + origin if origin else ''}"],
    ]
    if alarm.get("verification"):
        header.append(["verification", str(alarm["verification"])])
    for name in ("opened_at", "last_event_at", "restored_at", "verified_at", "acknowledged_at", "ended_at"):
        if alarm.get(name) or name == "opened_at":
            header.append([name.removesuffix("_at").replace("_", " "), ms(alarm.get(name))])
    yield from _columns(header)

    events = alarm.get("events") or []
    yield ""
    yield f"Events ({len(events)})"
    rows = [["#", "received", "occurred", "source", "code", "zone", "skew"]]
    for event in events:
        skew = event.get("clock_skew_s")
        rows.append([
            str(event.get("event_id")), ms(event.get("received_at")), ms(event.get("occurred_at")),
            _text(event.get("source")), _text(event.get("code")), _text(event.get("zone")),
            "-" if skew is None else f"{skew:+.3f}s",
        ])  # fmt: skip
    yield from _columns(rows) if events else iter(["  (none)"])

    actions = alarm.get("actions") or []
    yield ""
    yield f"Actions ({len(actions)})"
    rows = [["#", "kind", "state", "attempts", "external id", "due"]]
    errors: dict[int, str] = {}
    for index, action in enumerate(actions, start=1):
        rows.append([
            str(action.get("id")), _text(action.get("kind")), _text(action.get("state")),
            _text(action.get("attempts")), _text(action.get("external_id")), ms(action.get("due_at")),
        ])  # fmt: skip
        if action.get("last_error"):
            errors[index] = str(action["last_error"])
    if not actions:
        yield "  (none)"
    for index, line in enumerate(_columns(rows)):
        yield line
        if index in errors:
            yield f"      last error: {errors[index]}"

    timeline = alarm.get("timeline") or []
    yield ""
    yield f"Timeline ({len(timeline)})"
    rows = []
    for entry in timeline:
        refs = [f"event {entry['event_id']}" if entry.get("event_id") else ""]
        refs.append(f"action {entry['action_id']}" if entry.get("action_id") else "")
        ref = ", ".join(r for r in refs if r)
        rows.append(
            [
                ms(entry.get("at")),
                _text(entry.get("kind")),
                _text(entry.get("what")) + (f" [{ref}]" if ref else ""),
            ]
        )
    yield from _columns(rows) if rows else iter(["  (none)"])
