"""Starting the simulators: the configuration file, `build_apps`, and the command line as a real process."""

import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from sandbox.config import load_config
from sandbox.registry import find_simulators
from sandbox.server import build_apps

pytestmark = pytest.mark.contract

REPO_ROOT = Path(__file__).resolve().parents[3]
VENDORS = ("alta", "tracktik", "callonalarm", "rapidsos", "cad")


def test_default_configuration_has_a_table_per_vendor_and_a_complete_cad_table() -> None:
    config = load_config()
    assert set(config) == set(VENDORS)
    assert list(find_simulators()) == sorted(VENDORS)
    cad = config["cad"]
    assert cad["update_on_reupload"] is False
    assert cad["tenant_time_zone"]
    with_permission = [token for token, perms in cad["tokens"].items() if "Manage Events" in perms]
    without_permission = [token for token, perms in cad["tokens"].items() if "Manage Events" not in perms]
    assert with_permission
    assert without_permission


def test_a_user_file_replaces_the_vendor_tables_it_defines(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text('[cad]\ntenant_time_zone = "UTC"\n[cad.tokens]\n"mine" = ["Manage Events"]\n')
    config = load_config(path)
    assert config["cad"] == {"tenant_time_zone": "UTC", "tokens": {"mine": ["Manage Events"]}}
    assert config["tracktik"] == load_config()["tracktik"]


def test_build_apps_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown simulator"):
        build_apps(only=["cad", "pager"])


def test_build_apps_builds_the_requested_simulators() -> None:
    apps = build_apps(only=["cad"])
    assert list(apps) == ["cad"]
    assert apps["cad"].extensions["sandbox"].name == "cad"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_command_line_prints_each_base_url_serves_and_exits_cleanly(
    tmp_path: Path, http: requests.Session, stop_signal: signal.Signals
) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text('[cad]\ntenant_time_zone = "UTC"\n[cad.tokens]\n"cli-token" = ["Manage Events"]\n')
    command = [sys.executable, "-m", "sandbox", "--only", "cad", "--port", "0", "--config", str(path)]
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 20)
            assert ready, "the sandbox printed nothing"
            name, url = process.stdout.readline().split()
            assert name == "cad"
            assert url.startswith("http://127.0.0.1:")
            assert url.endswith("/cad")

            response = http.request(
                "PUT",
                url + "/api/v1/external/incident",
                json={"sysId": "CLI-1", "incidentDate": "2026-01-06T10:25:00Z"},
                headers={"Authorization": "Bearer cli-token"},
                timeout=5,
            )
            assert response.status_code == 200
            assert response.json()["incidentDate"] == "2026-01-06T10:25:00"  # the file's UTC tenant

            process.send_signal(stop_signal)
            _, stderr = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr


def test_the_command_line_refuses_an_unknown_simulator() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "--only", "pager", "--port", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown simulator" in result.stderr
