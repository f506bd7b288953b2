"""The long-running processes the Procfile (and ``dev``) start by name: ``receiver`` (the SIA DC-09
receiver), ``flower`` (the Celery monitor) and ``sandbox`` (the vendor simulators).

``flower`` can revoke tasks and shut workers down: it serves anything but loopback only behind the
basic auth of ``FLOWER_BASIC_AUTH``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from cli.bridge_api import is_loopback

if TYPE_CHECKING:
    from config.settings import Settings

FLOWER_PORT = 5555  # Flower's own default; `dev` takes another free port when it is busy


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Defaults to SANDBOX_PORT (8100).")
@click.option("--config", "config_path", default=None, help="A sandbox TOML file (default: built in).")
@click.option(
    "--alta-webhook-base-url", default=None, help="Where Alta zone webhooks go (scheme://host:port)."
)
def sandbox(host: str, port: int | None, config_path: str | None, alta_webhook_base_url: str | None) -> None:
    """Run the vendor simulators (Alta, TrackTik, CallOnAlarm, RapidSOS, CAD) on one port."""
    from config.settings import load_settings

    args = ["--host", host, "--port", str(port if port is not None else load_settings().sandbox_port)]
    if config_path:
        args += ["--config", config_path]
    if alta_webhook_base_url:
        args += ["--alta-webhook-base-url", alta_webhook_base_url]
    from sandbox.server import main as sandbox_main

    sys.exit(sandbox_main(args))


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=FLOWER_PORT, show_default=True)
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="The interface to listen on; anything but loopback needs FLOWER_BASIC_AUTH.",
)
def flower(port: int, address: str) -> None:
    """Run Flower, the Celery monitor, with basic auth from FLOWER_BASIC_AUTH.

    Flower can revoke tasks and shut workers down, so it refuses to listen beyond loopback without
    FLOWER_BASIC_AUTH (user:password pairs, comma-separated).
    """
    import vendors
    from config.settings import ConfigurationError, load_settings

    settings = load_settings(vendors.SETTINGS)  # as the worker app Flower loads will
    try:
        settings.check_flower()
    except ConfigurationError as exc:
        sys.exit(f"alarm-bridge flower: {exc}")
    if not settings.flower_basic_auth and not is_loopback(address):
        sys.exit(
            f"alarm-bridge flower: refusing to serve Flower on {address or 'every interface'} without "
            "FLOWER_BASIC_AUTH (user:password pairs, comma-separated)"
        )
    _require_broker(settings)
    # Flower reads FLOWER_BASIC_AUTH itself; handing it over in the environment rather than as
    # --basic-auth keeps the passwords out of the process list. It gets exactly what Settings
    # parsed, or nothing.
    env = {k: v for k, v in settings.environ.items() if k != "FLOWER_BASIC_AUTH"}
    if settings.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = ",".join(settings.flower_basic_auth)
    argv = [sys.executable, "-m", "celery", "--app", "workers.celery_app", "flower",
            f"--port={port}", f"--address={address}"]  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    # Flower takes this process over, so the platform's signals reach it directly.
    os.execve(sys.executable, argv, env)  # noqa: S606 - a fixed argv, no shell


@click.command()
def receiver() -> None:
    """Run the SIA DC-09 receiver (the Procfile's `receiver`): TCP and UDP on SIA_RECEIVER_PORT.

    Panels and IP communicators send SIA-DCS, ADM-CID and NULL frames (AES-128/192/256 when their
    account has a key in the sites file); each is answered ACK only once what it reports is committed
    to the ledger. SIGTERM stops accepting, lets the frames in flight finish, and exits.
    """
    import vendors
    from app.receiver.server import run
    from config.settings import load_settings

    # The receiver uses no vendor's settings; reading them refuses a bad one here too, as everywhere.
    settings = load_settings(vendors.SETTINGS)
    _require_broker(settings)  # each frame's steps are sent to the workers through it
    sys.exit(run(settings))


def _require_broker(settings: Settings) -> None:
    """Exit with one line when REDIS_URL is unset (``dev`` sets it for every process it starts)."""
    from config.settings import ConfigurationError

    try:
        settings.check_broker()
    except ConfigurationError as exc:
        sys.exit(f"alarm-bridge: invalid configuration: {exc}")
