"""``alarm-bridge dev``: the whole service in one command, the embedded mode a newcomer starts with.

No Redis, no database server, no vendor accounts. It picks an embedded broker (a private
``redis-server`` on a free loopback port when one is installed, else fakeredis's TCP server in this
process), migrates the SQLite ledger, and supervises the same processes the Procfile runs in
production (web (gunicorn), worker, urgent, bulk, beat, the DC-09 receiver, Flower and the sandbox) with
real Celery messages. Ctrl-C (SIGINT), SIGTERM or a closed terminal (SIGHUP) stops all of them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from cli.credentials import display_url, shown_credential
from cli.processes import FLOWER_PORT

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = PACKAGE_ROOT / "config" / "gunicorn.conf.py"
DEV_OPERATOR_KEY = "dev-operator-key"
EXAMPLE_SITES = PACKAGE_ROOT / "config" / "examples" / "sites.toml"
# Credentials the example sites file names, set for `dev` when the environment leaves them unset.
DEV_SOURCE_SECRETS = {
    "ACME_PANELS_TOKEN": "dev-panel-token-change-me",
    "ACME_PANELS_WHSEC": "whsec_ZGV2LXNpZ25pbmctc2VjcmV0LWNoYW5nZS1tZS0xMjM0",
    # The token the sandbox's Alta zones put on their webhooks (sandbox/alta/default.toml), so a detection
    # played in the sandbox reaches this bridge as it would from Alta Protect.
    "ALTA_MAIN_TOKEN": "sandbox-alta-webhook-token",
}
BROKER_START_TIMEOUT_S = 10.0
RECEIVER_PORT = 7777  # SIA_RECEIVER_PORT's default; `dev` takes another free port when it is busy
# What prometheus_client writes in a multiprocess directory: `dev` empties only a directory holding these.
PROMETHEUS_SAMPLE_GLOB = "*.db"


@click.command()
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
    """Run web, worker, urgent, bulk, beat, the DC-09 receiver, Flower and the sandbox, embedded defaults."""
    from honcho.manager import Manager

    import vendors
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
    # the clients talk to the sandbox (unless a base URL is set already)
    for name, url in vendors.sandbox_base_urls(f"http://127.0.0.1:{sandbox_port}").items():
        env.setdefault(name, url)
        os.environ[name] = env[name]
    settings = load_settings(vendors.SETTINGS)  # a bad vendor setting stops `dev` before its processes
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
        subprocess.run([sys.executable, "-m", "cli", "db", "upgrade"], env=env, check=True)
        py = sys.executable
        processes = {
            "web": [py, "-m", "gunicorn", "--config", str(GUNICORN_CONF)],
            # The Procfile's model: thread pools of WORKER_CONCURRENCY, URGENT_CONCURRENCY and
            # BULK_CONCURRENCY, the bulk queue in a process of its own (its steps wait there while
            # troubles yield to life-safety: workers/bulk_gate.py).
            "worker": [py, "-m", "celery", "--app", "workers.celery_app", "worker", "--queues",
                       "default", "--hostname", "worker@%h", "--loglevel", "INFO"],
            "urgent": [py, "-m", "celery", "--app", "workers.celery_app", "worker", "--queues",
                       "life_safety,dispatch", "--hostname", "urgent@%h", "--loglevel", "INFO"],
            "bulk": [py, "-m", "celery", "--app", "workers.celery_app", "worker", "--queues",
                     "bulk", "--hostname", "bulk@%h", "--loglevel", "INFO"],
            "beat": [py, "-m", "celery", "--app", "workers.celery_app", "beat", "--loglevel", "INFO"],
            "receiver": [py, "-m", "cli", "receiver"],
        }  # fmt: skip
        processes["flower"] = [py, "-m", "cli", "flower", "--port", str(flower_port),
                               "--address", "127.0.0.1"]  # fmt: skip
        if _sandbox_available():
            processes["sandbox"] = [
                py, "-m", "cli", "sandbox", "--port", str(settings.sandbox_port),
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
        signal.signal(signal.SIGHUP, _stop_on_hang_up)
        manager.loop()
    sys.exit(manager.returncode)


def _stop_on_hang_up(signum: int, frame: FrameType | None) -> None:
    """SIGHUP (the terminal closed) stops every process, as SIGTERM does.

    honcho handles SIGINT and SIGTERM only, and starts each process in a session of its own, so a
    hang-up reaches none of them: left to its default, SIGHUP ended this supervisor alone and left
    every process (and the private redis-server) running, unsupervised.
    """
    try:
        sys.stderr.write("alarm-bridge dev: SIGHUP received: stopping every process\n")
        sys.stderr.flush()
    except OSError:  # the terminal is gone (EIO): what honcho prints while stopping must not fail
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.dup2(devnull, sys.stderr.fileno())
    os.kill(os.getpid(), signal.SIGTERM)  # honcho's stop: SIGTERM to each process, SIGKILL after a wait


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
    """True when the sandbox is installed and has simulators (each found by its folder)."""
    try:
        from sandbox.registry import find_simulators

        return bool(find_simulators())
    except ImportError:
        return False


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
    proc = subprocess.Popen(  # noqa: S603 - redis-server as found on PATH, with a fixed argv
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
