"""The Procfile's lines, run as written against PostgreSQL and Redis, make a working deployment:
`release` migrates, `web` serves, `worker` and `urgent` consume their queues, `beat` ticks, `receiver`
acknowledges a DC-09 frame once committed and `flower` answers behind its basic auth, showing the tasks
by name; without FLOWER_BASIC_AUTH the `flower` line refuses to start."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app.receiver.frames import build_frame, read_reply
from tests.polling import wait_until
from tests.processes import (
    REPO,
    deployment_env,
    free_port,
    inherited_env,
    port_open,
    procfile,
    procfile_argv,
    start,
    stop_all,
    unique_prefix,
    wait_answers,
)
from tests.receiver_fixture import KEYS, SOURCE_ENV, read_answer, write_sites

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer procfile-operator-key"}
FLOWER_USER = ("ops", "procfile-flower-password")


@pytest.fixture
def deploy_env(postgres_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return deployment_env(
        database_url=postgres_url.replace("postgresql+psycopg://", "postgres://"),  # as platforms hand it out
        redis_url=redis_url,
        key_prefix=unique_prefix("abproc"),
        var_dir=tmp_path / "var",
        sites=write_sites(tmp_path),  # with the dc09 sources the receiver takes frames for
        drop=("DATABASE_", "REDIS_"),
        OPERATOR_API_KEYS="procfile-operator-key",
        SECRET_KEY="procfile-secret-key-signing-the-sessions",
        HOST="127.0.0.1",
        WEB_CONCURRENCY="1",
        LOG_FORMAT="console",
        FLOWER_BASIC_AUTH=f"someone:else-entirely,{':'.join(FLOWER_USER)}",
        WORKER_CONCURRENCY="12",
        URGENT_CONCURRENCY="24",
        BULK_CONCURRENCY="6",
        **SOURCE_ENV,
    )


@pytest.fixture
def running(deploy_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, int]]:
    assert set(procfile()) == {"release", "web", "worker", "urgent", "bulk", "beat", "receiver", "flower"}
    release = subprocess.run(
        procfile_argv("release"), cwd=REPO, env=deploy_env, capture_output=True, text=True, timeout=120
    )
    assert release.returncode == 0, release.stderr
    ports = {"web": free_port(), "flower": free_port(), "receiver": free_port()}
    procs = []
    for name in ("web", "worker", "urgent", "bulk", "beat", "receiver", "flower"):
        port = ports.get(name) or free_port()  # platforms set PORT for all
        env = {**deploy_env, "PORT": str(port), "SIA_RECEIVER_PORT": str(ports["receiver"])}
        procs.append(start(name, procfile_argv(name, port), env, tmp_path / f"{name}.log"))
    yield ports
    stop_all(procs, grace_s=30)


def test_every_procfile_line_runs_against_real_services(running: dict[str, int], tmp_path: Path) -> None:
    web = f"http://127.0.0.1:{running['web']}"
    flower = f"http://127.0.0.1:{running['flower']}"
    with requests.Session() as http:
        wait_answers(http, f"{web}/readyz", timeout_s=60)
        wait_answers(http, f"{flower}/healthcheck", timeout_s=60)
        assert http.get(f"{flower}/", timeout=5).status_code == 401  # never open on 0.0.0.0
        assert http.get(f"{flower}/", auth=("ops", "wrong"), timeout=5).status_code == 401
        assert http.get(f"{flower}/", auth=FLOWER_USER, timeout=5).status_code == 200

        def flower_task_names() -> set[str]:
            answer = http.get(f"{flower}/api/tasks", auth=FLOWER_USER, timeout=5)
            assert answer.status_code == 200, answer.text
            return {task.get("name") for task in answer.json().values()} - {None}

        # Beat's dispatcher tick runs every second: once Flower shows it, Flower receives task events.
        wait_until(flower_task_names, timeout_s=60, interval_s=0.5)

        urls = []
        for queue in ("life_safety", "default", "bulk"):  # urgent, worker and bulk take one each
            accepted = http.post(f"{web}/v1/system/selftest", headers=AUTH, json={"queue": queue}, timeout=5)
            assert accepted.status_code == 202
            urls.append(web + accepted.json()["status_url"])
        for url in urls:
            wait_until(
                lambda u=url: http.get(u, headers=AUTH, timeout=5).json()["state"] == "succeeded",
                timeout_s=60,
                interval_s=0.2,
            )
        # Tasks show by name (worker_send_task_events), as the workers ran them.
        wait_until(lambda: "system.selftest" in flower_task_names(), timeout_s=30, interval_s=0.5)
    # The receiver line listens on SIA_RECEIVER_PORT and acknowledges a frame once it is committed.
    wait_until(lambda: port_open(running["receiver"]), timeout_s=60, interval_s=0.2)
    with socket.create_connection(("127.0.0.1", running["receiver"]), timeout=10) as panel:
        panel.sendall(build_frame("128A", "FA", "1", key=KEYS["128A"]))
        assert read_reply(read_answer(panel), KEYS["128A"], "128A").kind == "ACK"
    # The Celery lines run thread pools sized by the settings, not by the CPU count: `urgent` (it
    # consumes life_safety) takes URGENT_CONCURRENCY, `bulk` (only bulk) BULK_CONCURRENCY, `worker`
    # WORKER_CONCURRENCY.
    assert "concurrency: 12 (thread)" in (tmp_path / "worker.log").read_text()
    assert "concurrency: 24 (thread)" in (tmp_path / "urgent.log").read_text()
    assert "concurrency: 6 (thread)" in (tmp_path / "bulk.log").read_text()


def test_the_flower_line_refuses_to_listen_on_every_interface_without_basic_auth(tmp_path: Path) -> None:
    env = inherited_env(drop=["FLOWER_BASIC_AUTH"])
    env.update(PORT=str(free_port()), VAR_DIR=str(tmp_path / "var"))

    done = subprocess.run(
        procfile_argv("flower", env["PORT"]), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1
    assert done.stderr.strip() == (
        "alarm-bridge flower: refusing to serve Flower on 0.0.0.0 without FLOWER_BASIC_AUTH "
        "(user:password pairs, comma-separated)"
    )
    with socket.socket() as sock:  # nothing was left listening
        assert sock.connect_ex(("127.0.0.1", int(env["PORT"]))) != 0


def test_the_flower_line_refuses_a_short_password(tmp_path: Path) -> None:
    env = inherited_env(drop=["FLOWER_BASIC_AUTH"])
    env.update(PORT=str(free_port()), VAR_DIR=str(tmp_path / "var"), FLOWER_BASIC_AUTH="ops:short-pass")

    done = subprocess.run(
        procfile_argv("flower", env["PORT"]), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1
    assert done.stderr.strip().startswith("alarm-bridge flower: FLOWER_BASIC_AUTH: entry 1 must be")
    assert "short-pass" not in done.stderr


def test_the_web_line_stops_at_once_without_a_secret_key(tmp_path: Path) -> None:
    env = inherited_env(drop=["SECRET_KEY"])
    env.update(PORT=str(free_port()), VAR_DIR=str(tmp_path / "var"))

    done = subprocess.run(
        procfile_argv("web", env["PORT"]), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode != 0  # the master stops: it does not restart workers that cannot start
    assert "alarm-bridge: invalid configuration: SECRET_KEY is required" in done.stderr
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(env["PORT"]))) != 0


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ({"SITES_FILE": "/nonexistent/sites.toml"}, "alarm-bridge: invalid sites file:"),
        ({"CALLONALARM_HOURLY_BUDGET": "lots"}, "CALLONALARM_HOURLY_BUDGET"),
    ],
    ids=["sites-file", "vendor-setting"],
)
def test_the_web_line_stops_on_a_configuration_its_workers_refuse(
    tmp_path: Path, setting: dict[str, str], problem: str
) -> None:
    # Checked in each worker (the master loads no app code before gevent patches it): a worker that
    # cannot boot must stop the master, not be replaced by another that fails the same way forever.
    env = inherited_env()
    env.update(
        PORT=str(free_port()),
        HOST="127.0.0.1",
        VAR_DIR=str(tmp_path / "var"),
        SECRET_KEY="procfile-secret-key-signing-the-sessions",
        **setting,
    )

    done = subprocess.run(
        procfile_argv("web", env["PORT"]), cwd=REPO, env=env, capture_output=True, text=True, timeout=90
    )

    # gunicorn's master halts with "Worker failed to boot." (3); when both workers fail at the same
    # moment it halts while halting, and says so with a traceback and exit 1. Either way, it stops.
    assert done.returncode in (1, 3), done.stderr
    assert "Worker failed to boot" in done.stderr
    assert problem in done.stderr
    assert done.stderr.count("Booting worker") <= 2, done.stderr  # WEB_CONCURRENCY's, never a second round
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(env["PORT"]))) != 0


@pytest.mark.parametrize("line", ["urgent", "beat"])
def test_the_celery_lines_stop_at_start_on_a_sites_file_that_cannot_load(
    line: str, redis_url: str, tmp_path: Path
) -> None:
    # The receiver and the web refuse such a file at start; a worker that reported ready with it
    # would fail every dispatcher tick and watchdog run instead.
    env = inherited_env()
    env.update(
        REDIS_URL=redis_url,
        BROKER_KEY_PREFIX=unique_prefix("abbadsites"),
        VAR_DIR=str(tmp_path / "var"),
        SITES_FILE=str(tmp_path / "missing-sites.toml"),
        LOG_FORMAT="console",
    )

    done = subprocess.run(procfile_argv(line), cwd=REPO, env=env, capture_output=True, text=True, timeout=90)

    assert done.returncode == 1, done.stderr
    assert "alarm-bridge: invalid sites file:" in done.stderr
    assert "missing-sites.toml: cannot be read" in done.stderr
    assert "ready" not in done.stderr


@pytest.mark.parametrize("line", ["urgent", "beat", "receiver"])
def test_the_lines_that_need_the_broker_stop_at_start_without_redis_url(line: str, tmp_path: Path) -> None:
    # Celery would otherwise fall back to amqp://guest@localhost:5672// and wait for it forever.
    env = inherited_env()  # without REDIS_URL
    env.update(VAR_DIR=str(tmp_path / "var"), SIA_RECEIVER_PORT=str(free_port()), LOG_FORMAT="console")

    done = subprocess.run(procfile_argv(line), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 1, done.stderr
    assert "alarm-bridge: invalid configuration: REDIS_URL is required" in done.stderr
    assert "amqp" not in done.stderr


@pytest.mark.parametrize(
    ("line", "own_setting"), [("urgent", "URGENT_CONCURRENCY"), ("bulk", "BULK_CONCURRENCY")]
)
def test_an_explicit_concurrency_wins_even_when_it_equals_worker_concurrency(
    line: str, own_setting: str, redis_url: str, tmp_path: Path
) -> None:
    env = inherited_env()
    env.update(
        {
            "REDIS_URL": redis_url,
            "BROKER_KEY_PREFIX": unique_prefix("abconc"),
            "VAR_DIR": str(tmp_path / "var"),
        },
        LOG_FORMAT="console",
        WORKER_CONCURRENCY="7",
        **{own_setting: "5"},
    )
    proc = start(line, [*procfile_argv(line), "--concurrency", "7"], env, tmp_path / f"{line}.log")
    try:
        banner = wait_until(lambda: re.search(r"concurrency: (\d+)", proc.current_output()), timeout_s=60)
    finally:
        stop_all([proc], grace_s=20)
    assert banner.group(1) == "7", proc.current_output()


def test_the_web_process_loads_no_worker_client_or_sandbox_code(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from app.web import create_app\n"
        "from config.settings import Settings\n"
        f"create_app(Settings(database_url='sqlite:///{tmp_path}/l.sqlite3', var_dir='{tmp_path}', "
        "secret_key='probe-secret-key-signing-the-sessions'))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('workers', 'sandbox', 'requests'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
