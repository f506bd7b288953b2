"""``alarm-bridge send-test-event``: post one authenticated test signal to a running bridge and print
its answer.

Whoever wires a panel or an Alta deployment can check their work without writing a client: a panel
event with the source's bearer token or signed with its Standard Webhooks secret, an Alta zone
webhook, or (``--dc09``) a real DC-09 frame to the receiver.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import click

from cli.bridge_api import base_url, request
from cli.dc09 import DEFAULT_TEST_CODE, send_dc09_test

TEST_MESSAGE = "test event sent by alarm-bridge send-test-event"


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
    body: dict[str, str | None]
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
    target = base_url(url) + path
    click.echo(f"POST {target}: {what}, event id {event_id}")
    answer = request("POST", target, headers=headers, data=text.encode())
    click.echo(f"HTTP {answer.status} {answer.reason}".rstrip())
    click.echo(answer.shown())
    if not answer.ok:
        raise click.ClickException(f"the bridge did not accept the event: {answer.problem()}")


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
