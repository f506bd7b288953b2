"""`alarm-bridge sandbox` with no configuration serves all five simulators, each answering its API."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.contract
REPO = Path(__file__).resolve().parents[3]


def test_alarm_bridge_sandbox_serves_every_simulator_with_its_defaults(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "cli", "sandbox", "--port", "0"]
    with (
        subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc,
        requests.Session() as http,
    ):
        try:
            assert proc.stdout is not None
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
            urls = {}
            while len(urls) < 5:
                name, url = lines.get(timeout=30).split()
                urls[name] = url
            assert set(urls) == {"alta", "tracktik", "callonalarm", "rapidsos", "cad"}

            login = {"username": "api@sandbox.alta.example", "password": "sandbox-alta-password"}
            assert http.post(f"{urls['alta']}/api/v1/dologin", json=login, timeout=5).status_code == 200
            grant = {
                "grant_type": "password", "client_id": "sandbox-tracktik-client",
                "client_secret": "sandbox-tracktik-secret", "username": "alarm-bridge-api",
                "password": "sandbox-tracktik-password",
            }  # fmt: skip
            assert (
                http.post(f"{urls['tracktik']}/rest/oauth2/access_token", data=grant, timeout=5).status_code
                == 200
            )
            trigger = http.post(
                f"{urls['callonalarm']}/v1/alert/trigger",
                json={"accountNumber": "1001", "eventCode": "IA"},
                headers={"Authorization": "Bearer coa_sandbox_key_0001"},
                timeout=5,
            )
            assert trigger.status_code == 201 and trigger.json()["status"] == "call_delayed"
            token = http.post(
                f"{urls['rapidsos']}/oauth/token",
                data={"grant_type": "client_credentials", "client_id": "sandbox-rapidsos-client",
                      "client_secret": "sandbox-rapidsos-secret"},
                timeout=5,
            )  # fmt: skip
            assert token.status_code == 200 and token.json()["token_type"] == "BearerToken"
            incident = http.put(
                f"{urls['cad']}/api/v1/external/incident",
                json={"sysId": "CLI-1", "incidentDate": "2026-11-23T19:03:07Z"},
                headers={"Authorization": "Bearer sandbox-cad-token"},
                timeout=5,
            )
            assert incident.status_code == 200
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0
