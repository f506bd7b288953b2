"""The ``alarm-bridge`` command: ``dev`` (the whole service in one command), ``db upgrade``, ``flower``,
``receiver`` (the SIA DC-09 receiver), ``sandbox``, ``ledger archive`` (retention), and the
integrator's tools (``sites check``, ``send-test-event``, ``alarms show``, in ``app.cli_tools``).

``dev`` is the embedded mode a newcomer starts with: no Redis, no database server, no vendor
accounts. It picks an embedded broker (a private ``redis-server`` on a free loopback port when one is
installed, else fakeredis's TCP server in this process), migrates the SQLite ledger, and supervises
the same processes the Procfile runs in production — web (gunicorn), worker, urgent, beat, the DC-09
receiver, Flower and the sandbox — with real Celery messages. Ctrl-C stops all of them.

``flower`` runs the Celery monitor, which can revoke tasks and shut workers down: it serves anything
but loopback only behind the basic auth of ``FLOWER_BASIC_AUTH``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from app.cli_tools import alarms, is_loopback, send_test_event, sites

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = PACKAGE_ROOT / "app" / "ledger" / "migrations"
GUNICORN_CONF = PACKAGE_ROOT / "config" / "gunicorn.conf.py"
DEV_OPERATOR_KEY = "dev-operator-key"
EXAMPLE_SITES = PACKAGE_ROOT / "config" / "examples" / "sites.toml"
# Credentials the example sites file names, set for `dev` when the environment leaves them unset.
DEV_SOURCE_SECRETS = {
    "ACME_PANELS_TOKEN": "dev-panel-token-change-me",
    "ACME_PANELS_WHSEC": "whsec_ZGV2LXNpZ25pbmctc2VjcmV0LWNoYW5nZS1tZS0xMjM0",
    # The token the sandbox's Alta zones put on their webhooks (sandbox/default.toml), so a detection
    # played in the sandbox reaches this bridge as it would from Alta Protect.
    "ALTA_MAIN_TOKEN": "sandbox-alta-webhook-token",
}
BROKER_START_TIMEOUT_S = 10.0
FLOWER_PORT = 5555  # Flower's own default; `dev` takes another free port when it is busy
RECEIVER_PORT = 7777  # SIA_RECEIVER_PORT's default; `dev` takes another free port when it is busy
# What prometheus_client writes in a multiprocess directory: `dev` empties only a directory holding these.
PROMETHEUS_SAMPLE_GLOB = "*.db"


@click.group()
def main() -> None:
    """alarm-bridge: alarm signals in, a coordinated and audited response out."""


main.add_command(sites)
main.add_command(send_test_event)
main.add_command(alarms)


@main.group()
def db() -> None:
    """The alarm ledger's schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
def db_upgrade(revision: str) -> None:
    """Apply migrations to the ledger named by DATABASE_URL (the Procfile's `release`)."""
    from alembic import command

    from config.settings import load_settings

    settings = load_settings()
    command.upgrade(alembic_config(settings.database_url), revision)
    click.echo(f"ledger at {revision}: {display_url(settings.database_url)}")


@main.group()
def ledger() -> None:
    """Keeping the ledger small: let alarms that ended long ago go."""


AGE_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MIN_ARCHIVE_AGE_S = 86400.0  # an alarm that ended today is still somebody's evidence


def parse_age(text: str) -> float:
    """``180d``, ``36h``, ``90m`` or plain seconds, as seconds; a ClickException names the value."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in AGE_UNITS else "s"
    number = raw[:-1] if raw[-1:] in AGE_UNITS else raw
    try:
        seconds = float(number) * AGE_UNITS[unit]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an age like 180d, 36h or 90m") from None
    if not seconds >= MIN_ARCHIVE_AGE_S:  # also refuses NaN
        raise click.BadParameter(f"{text!r} is less than a day: an alarm that recent is kept")
    return seconds


@ledger.command("archive")
@click.option(
    "--ended-before",
    "age",
    default=None,
    help="Remove alarms that ended longer ago than this (180d, 36h; at least 1d). "
    "Default: ARCHIVE_AFTER_DAYS days.",
)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write what is removed to DIR/alarm-bridge-archive-<time>.jsonl before deleting it.",
)
@click.option(
    "--batch-size", type=click.IntRange(1, 10_000), default=None, help="Default: ARCHIVE_BATCH_SIZE."
)
@click.option("--pause", "pause_s", type=click.FloatRange(0, 60), default=0.0, show_default=True,
              help="Seconds to wait between batches.")  # fmt: skip
def ledger_archive(age: str | None, export_dir: Path | None, batch_size: int | None, pause_s: float) -> None:
    """Export and delete alarms that ended before the cut-off, with their events, steps and timeline,
    and old events that opened no alarm. Never an alarm that has not ended or has a step unfinished."""
    import json
    from datetime import timedelta

    from app.ledger.models import utcnow
    from app.ledger.retention import archive
    from app.ledger.session import make_engine
    from config.logging import configure_logging
    from config.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    seconds = parse_age(age) if age is not None else settings.archive_after_days * 86400
    cutoff = utcnow() - timedelta(seconds=seconds)
    engine = make_engine(settings.database_url)
    try:
        report = archive(
            engine,
            ended_before=cutoff,
            export_dir=export_dir,
            batch_size=batch_size or settings.archive_batch_size,
            pause_s=pause_s,
        )
    finally:
        engine.dispose()
    click.echo(json.dumps(report.as_dict(), indent=2))


def alembic_config(database_url: str) -> object:
    """An Alembic Config that works from any directory (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


@main.command()
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


@main.command()
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
    from config.settings import load_settings

    settings = load_settings()
    if not settings.flower_basic_auth and not is_loopback(address):
        sys.exit(
            f"alarm-bridge flower: refusing to serve Flower on {address or 'every interface'} without "
            "FLOWER_BASIC_AUTH (user:password pairs, comma-separated)"
        )
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


@main.command()
def receiver() -> None:
    """Run the SIA DC-09 receiver (the Procfile's `receiver`): TCP and UDP on SIA_RECEIVER_PORT.

    Panels and IP communicators send SIA-DCS, ADM-CID and NULL frames (AES-128/192/256 when their
    account has a key in the sites file); each is answered ACK only once what it reports is committed
    to the ledger. SIGTERM stops accepting, lets the frames in flight finish, and exits.
    """
    from app.receiver.server import run
    from config.settings import load_settings

    sys.exit(run(load_settings()))


@main.command()
@click.option(
    "--broker",
    type=click.Choice(["auto", "redis-server", "fakeredis"]),
    default="auto",
    show_default=True,
    help="Embedded broker when REDIS_URL is unset: a private redis-server if installed, else fakeredis.",
)
@click.option(
    "--flower-port",
    type=click.IntRange(1, 65535),
    default=None,
    help=f"Flower's port on 127.0.0.1 [default: {FLOWER_PORT}, or a free one when it is taken].",
)
def dev(broker: str, flower_port: int | None) -> None:
    """Run web, worker, urgent, beat, the DC-09 receiver, Flower and the sandbox with embedded defaults."""
    from honcho.manager import Manager

    from config.settings import load_settings

    env = dict(os.environ)
    env.setdefault("HOST", "127.0.0.1")
    env.setdefault("LOG_FORMAT", "console")
    env.setdefault("WEB_CONCURRENCY", "2")
    env.setdefault("SIA_RECEIVER_HOST", "127.0.0.1")
    if not env.get("OPERATOR_API_KEYS"):
        env["OPERATOR_API_KEYS"] = DEV_OPERATOR_KEY
    if not env.get("SECRET_KEY"):
        # Only here may the web app's signing key be made up: a new one each run, so restarting `dev`
        # signs the dashboard out (its sessions lived in the embedded broker anyway).
        env["SECRET_KEY"] = secrets.token_urlsafe(48)
    if not env.get("SITES_FILE"):
        env["SITES_FILE"] = str(EXAMPLE_SITES)
        for name, value in DEV_SOURCE_SECRETS.items():
            env.setdefault(name, value)
    if "SIA_RECEIVER_PORT" not in env:  # like Flower's: the usual port, or a free one when it is taken
        env["SIA_RECEIVER_PORT"] = str(_port_or_free(RECEIVER_PORT))
    os.environ.update(
        {k: env[k] for k in ("HOST", "LOG_FORMAT", "OPERATOR_API_KEYS", "SITES_FILE", "SIA_RECEIVER_PORT")}
    )
    sandbox_port = env.get("SANDBOX_PORT", "8100")
    for vendor in ("ALTA", "TRACKTIK", "CALLONALARM", "RAPIDSOS", "CAD"):  # the clients talk to the sandbox
        env.setdefault(f"{vendor}_BASE_URL", f"http://127.0.0.1:{sandbox_port}/{vendor.lower()}")
        os.environ[f"{vendor}_BASE_URL"] = env[f"{vendor}_BASE_URL"]
    settings = load_settings()
    Path(settings.var_dir).mkdir(parents=True, exist_ok=True)
    # prometheus_client's multiprocess mode adds up the sample files every process leaves in this
    # directory, so each run starts from an empty one (files of a previous run's dead processes would
    # count again).
    metrics_dir = _fresh_metrics_dir(Path(settings.prometheus_dir))
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    flower_port = flower_port or _port_or_free(FLOWER_PORT)

    with _embedded_broker(env.get("REDIS_URL"), broker, settings.var_dir) as (redis_url, broker_name):
        env["REDIS_URL"] = redis_url
        click.echo(f"alarm-bridge dev: broker {broker_name} at {display_url(redis_url)}")
        click.echo(f"alarm-bridge dev: ledger {display_url(settings.database_url)}")
        subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, check=True)
        py = sys.executable
        processes = {
            "web": [py, "-m", "gunicorn", "--config", str(GUNICORN_CONF)],
            # The Procfile's model: thread pools of WORKER_CONCURRENCY and URGENT_CONCURRENCY.
            "worker": [py, "-m", "celery", "--app", "workers.celery_app", "worker", "--queues",
                       "default,bulk", "--hostname", "worker@%h", "--loglevel", "INFO"],
            "urgent": [py, "-m", "celery", "--app", "workers.celery_app", "worker", "--queues",
                       "life_safety,dispatch", "--hostname", "urgent@%h", "--loglevel", "INFO"],
            "beat": [py, "-m", "celery", "--app", "workers.celery_app", "beat", "--loglevel", "INFO"],
            "receiver": [py, "-m", "app.cli", "receiver"],
        }  # fmt: skip
        processes["flower"] = [py, "-m", "app.cli", "flower", "--port", str(flower_port),
                               "--address", "127.0.0.1"]  # fmt: skip
        if _sandbox_available():
            processes["sandbox"] = [
                py, "-m", "app.cli", "sandbox", "--port", str(settings.sandbox_port),
                "--alta-webhook-base-url", f"http://127.0.0.1:{settings.port}",
            ]  # fmt: skip
        click.echo(f"alarm-bridge dev: web on http://{env['HOST']}:{settings.port}")
        click.echo(f"alarm-bridge dev: flower on http://127.0.0.1:{flower_port}")
        click.echo(
            f"alarm-bridge dev: DC-09 receiver on {env['SIA_RECEIVER_HOST']}:{env['SIA_RECEIVER_PORT']} "
            "(TCP and UDP)"
        )
        click.echo(f"alarm-bridge dev: metrics samples in {metrics_dir}")
        # Only the built-in demo credentials are printed: a key or token someone set stays out of
        # terminals and their scrollback.
        key = shown_credential("OPERATOR_API_KEYS", env["OPERATOR_API_KEYS"].split(",")[0], DEV_OPERATOR_KEY)
        click.echo(f"alarm-bridge dev: operator key {key}")
        click.echo(f"alarm-bridge dev: sites file {env['SITES_FILE']}")
        if env["SITES_FILE"] == str(EXAMPLE_SITES):
            panel, alta = (
                shown_credential(name, env[name], DEV_SOURCE_SECRETS[name])
                for name in ("ACME_PANELS_TOKEN", "ALTA_MAIN_TOKEN")
            )
            click.echo(f"alarm-bridge dev: panel token {panel}, alta token {alta}")
        if "sandbox" in processes:
            click.echo(f"alarm-bridge dev: sandbox on http://127.0.0.1:{settings.sandbox_port}")
        manager = Manager()
        for name, cmd in processes.items():
            manager.add_process(name, subprocess.list2cmdline(cmd), env=env)
        manager.loop()
    sys.exit(manager.returncode)


def _fresh_metrics_dir(path: Path) -> Path:
    """Empty (or create) the directory the processes share their Prometheus samples through.

    It is emptied only when it holds nothing but sample files: PROMETHEUS_MULTIPROC_DIR pointed at a
    directory with anything else in it is a mistake to report, never to delete.
    """
    from app import telemetry

    path = path.resolve()
    if path.exists():
        if not path.is_dir():
            raise click.ClickException(f"PROMETHEUS_MULTIPROC_DIR: {path} is not a directory")
        strangers = [p.name for p in path.iterdir() if not (p.is_file() and p.match(PROMETHEUS_SAMPLE_GLOB))]
        if strangers:
            raise click.ClickException(
                f"PROMETHEUS_MULTIPROC_DIR: {path} holds more than Prometheus samples ({strangers[0]}); "
                "give the metrics a directory of their own"
            )
    telemetry.use_multiprocess_metrics(str(path), fresh=True)  # empties it, and this process uses it
    return path


def _port_or_free(preferred: int) -> int:
    """``preferred`` if nothing listens on it on loopback, else any free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return _free_port()
    return preferred


def _sandbox_available() -> bool:
    """True when every simulator the sandbox server lists is present."""
    import importlib.util

    try:
        from sandbox.server import SIMULATORS
    except ImportError:
        return False
    return all(importlib.util.find_spec(target.split(":")[0]) for target in SIMULATORS.values())


@contextmanager
def _embedded_broker(redis_url: str | None, choice: str, var_dir: str) -> Iterator[tuple[str, str]]:
    """Yield (url, description) of the broker to use; start and stop an embedded one if needed."""
    if redis_url:
        yield redis_url, "REDIS_URL"
        return
    binary = shutil.which("redis-server")
    if choice == "redis-server" and binary is None:
        raise click.ClickException("--broker redis-server: no redis-server on PATH")
    if binary is not None and choice in ("auto", "redis-server"):
        with _private_redis_server(binary, var_dir) as url:
            yield url, f"redis-server (private, {binary})"
        return
    with _fakeredis_server() as url:
        yield url, "fakeredis TCP server (in process)"


@contextmanager
def _private_redis_server(binary: str, var_dir: str) -> Iterator[str]:
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="redis-", dir=var_dir)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def _fakeredis_server() -> Iterator[str]:
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + BROKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise click.ClickException(f"redis-server did not listen on {port} within {BROKER_START_TIMEOUT_S:g}s")


# The user part of a URL shown beside a masked password; anything else in front of the `@` is masked.
_URL_USER = re.compile(r"[A-Za-z0-9._~%+-]+")
_SECRET_URL_PARAM = re.compile(
    r"([?&;][^=&#;]*(?:pass|secret|token|key|auth|credential)[^=&#;]*=)[^&]*", re.IGNORECASE
)


def display_url(url: str) -> str:
    """The URL with its credentials masked, for printing: everything before the last ``@`` after the
    scheme (a password holding ``@``, ``/`` or ``?`` included; a plain user name is kept) and the value
    of any query parameter named like a secret (``?password=`` of a ``unix://`` Redis URL)."""
    scheme, sep, rest = url.partition("://")
    if sep:
        userinfo, at, host = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            shown = f"{user}:" if colon and _URL_USER.fullmatch(user) else ""
            rest = f"{shown}***@{host}"
        url = f"{scheme}{sep}{rest}"
    return _SECRET_URL_PARAM.sub(r"\g<1>***", url)


def shown_credential(variable: str, value: str, demo: str) -> str:
    """What `dev` prints for a credential: the built-in demo value, never one someone set."""
    return value if value == demo else f"yours, from {variable} (not printed)"


if __name__ == "__main__":
    main()
