"""`alarm-bridge dev` (what `make run` starts): ready within 60 s with nothing configured, on its own
embedded broker rather than whatever Redis listens on 6379, moving real Celery messages, with Flower
answering on the address it prints and a fresh Prometheus sample directory, and stopped cleanly by
Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app.receiver.frames import build_frame, read_reply
from tests.polling import wait_until
from tests.processes import free_port, port_open, start, wait_answers
from tests.receiver_fixture import read_answer

pytestmark = pytest.mark.integration
READY_WITHIN_S = 60
AUTH = {"Authorization": "Bearer dev-operator-key"}
# What a developer's shell may hold that would make this run differ from "nothing configured".
NOT_INHERITED = (
    "REDIS_URL", "DATABASE_URL", "OPERATOR_API_KEYS", "PROMETHEUS_MULTIPROC_DIR", "FLOWER_BASIC_AUTH",
    "SECRET_KEY", "SIA_RECEIVER_HOST",
)  # fmt: skip


class DevStack:
    def __init__(self, workdir: Path, broker: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        env.update(
            PORT=str(self.port),
            SANDBOX_PORT=str(free_port()),
            SIA_RECEIVER_PORT=str(free_port()),
            WEB_CONCURRENCY="1",
        )
        argv = [sys.executable, "-m", "cli", "dev", "--broker", broker]
        self.proc = start("dev", argv, env, workdir / "dev.log", cwd=workdir)
        self.http = requests.Session()
        self.base = f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.proc.current_output()

    def ready(self) -> dict[str, object] | None:
        if not self.proc.alive():
            raise AssertionError(f"alarm-bridge dev exited early:\n{self.text()[-3000:]}")
        try:
            response = self.http.get(f"{self.base}/readyz", timeout=2)
        except requests.RequestException:
            return None
        return response.json() if response.status_code == 200 else None

    def stop(self) -> int:
        if self.proc.alive():
            os.kill(self.proc.pid, signal.SIGINT)  # Ctrl-C
            if self.proc.wait(timeout_s=30) is None:
                self.proc.kill()
                raise AssertionError(f"Ctrl-C did not stop alarm-bridge dev:\n{self.text()[-3000:]}")
        self.http.close()
        status = self.proc.wait(timeout_s=0)
        assert status is not None
        return status


@pytest.fixture(params=["auto", "fakeredis"])
def dev_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DevStack]:
    stale = tmp_path / "var" / "prometheus"  # a previous run's samples: dev must start without them
    stale.mkdir(parents=True)
    (stale / "stale_1.db").write_bytes(b"")
    stack = DevStack(tmp_path, request.param)
    yield stack
    stack.stop()


def test_dev_is_ready_with_nothing_configured_and_uses_its_own_broker(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    ready = wait_until(dev_stack.ready, timeout_s=READY_WITHIN_S, interval_s=0.2)
    assert ready["checks"] == {"ledger": "ok", "broker": "ok"}

    match = re.search(r"broker (.+?) at redis://127\.0\.0\.1:(\d+)/0", dev_stack.text())
    assert match, dev_stack.text()
    assert int(match.group(2)) != 6379  # never whatever Redis happens to listen on the usual port

    # The DC-09 receiver runs too, on loopback. The example sites file names no dc09 source, so a
    # frame is answered with the standard's NAK for an unknown account.
    receiver = re.search(r"DC-09 receiver on 127\.0\.0\.1:(\d+) \(TCP and UDP\)", dev_stack.text())
    assert receiver, dev_stack.text()
    port = int(receiver.group(1))
    wait_until(lambda: port_open(port), timeout_s=30, interval_s=0.2)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as panel:
        panel.sendall(build_frame("1234", "RX"))
        assert read_reply(read_answer(panel)).kind == "NAK"
    assert (tmp_path / "var" / "ledger.sqlite3").exists()  # the embedded SQLite ledger

    accepted = dev_stack.http.post(f"{dev_stack.base}/v1/system/selftest", headers=AUTH, timeout=5)
    assert accepted.status_code == 202
    status_url = dev_stack.base + accepted.json()["status_url"]
    wait_until(
        lambda: dev_stack.http.get(status_url, headers=AUTH, timeout=5).json()["state"] == "succeeded",
        timeout_s=30,
        interval_s=0.2,
    )

    printed = re.search(r"alarm-bridge dev: flower on (http://127\.0\.0\.1:\d+)\n", dev_stack.text())
    assert printed, dev_stack.text()
    flower = printed.group(1)
    wait_answers(dev_stack.http, f"{flower}/healthcheck", timeout_s=30)
    assert dev_stack.http.get(f"{flower}/", timeout=5).status_code == 200  # on loopback: no auth needed

    # The children share a fresh Prometheus directory, named in the environment they inherit.
    metrics = re.search(r"alarm-bridge dev: metrics samples in (.+)\n", dev_stack.text())
    assert metrics, dev_stack.text()
    assert Path(metrics.group(1)) == (tmp_path / "var" / "prometheus").resolve()
    assert not (tmp_path / "var" / "prometheus" / "stale_1.db").exists()

    assert dev_stack.stop() == 0 or "stopped" in dev_stack.text()
    leftover = subprocess.run(["pgrep", "-s", str(dev_stack.proc.pid)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "processes survived Ctrl-C"


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper has stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_a_hang_up_stops_every_process_dev_started(tmp_path: Path) -> None:
    # honcho starts each process in a session of its own: a closed terminal's SIGHUP reaches only the
    # supervisor, which must stop them all as Ctrl-C does, the embedded broker included.
    stack = DevStack(tmp_path, "redis-server" if shutil.which("redis-server") else "fakeredis")
    names = {"web", "worker", "urgent", "bulk", "beat", "receiver", "flower"}
    pids: dict[str, int] = {}
    try:
        wait_until(stack.ready, timeout_s=READY_WITHIN_S, interval_s=0.2)
        pids = {name: int(pid) for name, pid in re.findall(r"(\w+) started \(pid=(\d+)\)", stack.text())}
        assert names <= set(pids), stack.text()
        broker = re.search(r"at redis://127\.0\.0\.1:(\d+)/0", stack.text())
        assert broker, stack.text()

        os.kill(stack.proc.pid, signal.SIGHUP)

        assert stack.proc.wait(timeout_s=40) is not None, f"SIGHUP did not stop dev:\n{stack.text()[-3000:]}"
        wait_until(lambda: not [n for n, pid in pids.items() if _running(pid)], timeout_s=10, interval_s=0.2)
        assert not port_open(int(broker.group(1)))
    finally:
        for pid in pids.values():  # what survived a failure: each process's own group (its session)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        stack.proc.kill()
        stack.http.close()
