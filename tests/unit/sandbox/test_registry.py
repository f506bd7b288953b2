"""The sandbox finds its simulators by folder: a new vendor's folder is mounted, configured and given its
own command-line options without a line in the core; each vendor's default table lives in its folder."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client

import sandbox
from sandbox import server
from sandbox.alta import deployment
from sandbox.config import load_config, load_default_config
from sandbox.registry import find_simulators
from sandbox.server import build_apps, combined_app, main

pytestmark = pytest.mark.unit

VENDORS = ("alta", "tracktik", "callonalarm", "rapidsos", "cad")

# A whole simulator as a sixth vendor would write it: its app, its option, its declaration.
PAGER_INIT = """
import argparse
from typing import Any

from flask import Flask

from sandbox.clock import Clock
from sandbox.registry import Simulator
from sandbox.simulator import current_state, make_simulator


def create_app(config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask:
    app, _ = make_simulator("pager", error_body=lambda status, message: {"error": message}, config=config,
                            clock=clock)
    app.add_url_rule("/settings", "settings", lambda: current_state().settings)
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pager-greeting")


def configure(app: Flask, args: argparse.Namespace) -> None:
    app.config["GREETING"] = args.pager_greeting


SIMULATOR = Simulator(create_app=create_app, add_arguments=add_arguments, configure=configure)
"""

AddFolder = Callable[..., Path]


@pytest.fixture
def add_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AddFolder]:
    """Put throw-away packages in a directory on `sandbox.__path__`, as if they were folders of sandbox/."""
    monkeypatch.setattr(sandbox, "__path__", [*sandbox.__path__, str(tmp_path)])
    added: list[str] = []

    def add(name: str, init: str, default_toml: str | None = None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "__init__.py").write_text(init)
        if default_toml is not None:
            (folder / "default.toml").write_text(default_toml)
        added.append(name)
        return folder

    yield add
    for name in added:
        sys.modules.pop(f"sandbox.{name}", None)
        if hasattr(sandbox, name):
            delattr(sandbox, name)


def _serve_nothing(monkeypatch: pytest.MonkeyPatch) -> dict[str, Flask]:
    """Stop `main` before it serves; the returned dict receives the apps it would have served."""
    served: dict[str, Flask] = {}

    def capture(apps: dict[str, Flask], *args: Any) -> int:
        served.update(apps)
        return 0

    monkeypatch.setattr(server, "_serve_until_stopped", capture)
    return served


def test_the_vendor_folders_are_the_simulators_in_key_order() -> None:
    assert list(find_simulators()) == sorted(VENDORS)
    assert list(build_apps()) == sorted(VENDORS)


def test_a_new_folder_is_found_mounted_and_configured(add_folder: AddFolder) -> None:
    add_folder("pager", PAGER_INIT, '# the pager\n[pager]\nchannel = "ops"\n')

    assert "pager" in find_simulators()
    config = load_config()
    assert config["pager"] == {"channel": "ops"}
    assert set(config) == {*VENDORS, "pager"}
    apps = build_apps(config, only=["pager", "cad"])
    assert list(apps) == ["cad", "pager"]
    response = Client(combined_app(apps)).get("/pager/settings")
    assert response.status_code == 200
    assert response.json == {"channel": "ops"}


def test_a_config_file_replaces_a_default_table_whole_and_keeps_the_others(
    add_folder: AddFolder, tmp_path: Path
) -> None:
    add_folder("pager", PAGER_INIT, '[pager]\nchannel = "ops"\nretries = 3\n')
    path = tmp_path / "sandbox.toml"
    path.write_text('[pager]\nchannel = "night"\n[tracktik]\nrate_limit_per_minute = 5\n')

    config = load_config(path)

    assert config["pager"] == {"channel": "night"}
    assert config["tracktik"] == {"rate_limit_per_minute": 5}
    default = load_default_config()
    assert {key: config[key] for key in ("alta", "callonalarm", "rapidsos", "cad")} == {
        key: default[key] for key in ("alta", "callonalarm", "rapidsos", "cad")
    }


def test_a_simulator_without_a_default_file_has_no_default_table(add_folder: AddFolder) -> None:
    add_folder("pager", PAGER_INIT)
    assert "pager" not in load_default_config()
    assert Client(build_apps(only=["pager"])["pager"]).get("/settings").json == {}


def test_a_default_file_holds_only_its_own_table(add_folder: AddFolder) -> None:
    add_folder("pager", PAGER_INIT, '[pager]\nchannel = "ops"\n[cad]\nfirst_incident_id = 7\n')
    with pytest.raises(ValueError, match=r"sandbox/pager/default.toml may only hold \[pager\], not cad"):
        load_default_config()


def test_a_folder_without_a_declaration_is_not_a_simulator(add_folder: AddFolder) -> None:
    add_folder("shared", '"""Helpers some simulators share."""\n')
    assert "shared" not in find_simulators()


def test_a_declaration_that_is_not_a_simulator_is_refused(add_folder: AddFolder) -> None:
    add_folder("pager", "SIMULATOR = object()\n")
    with pytest.raises(TypeError, match=r"sandbox\.pager\.SIMULATOR"):
        find_simulators()


def test_the_command_line_offers_and_applies_a_simulators_own_option(
    add_folder: AddFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_folder("pager", PAGER_INIT)
    served = _serve_nothing(monkeypatch)

    assert main(["--only", "pager", "--pager-greeting", "hello"]) == 0

    assert served["pager"].config["GREETING"] == "hello"


def test_the_alta_option_points_every_zone_webhook_at_another_host(monkeypatch: pytest.MonkeyPatch) -> None:
    served = _serve_nothing(monkeypatch)

    assert main(["--only", "alta,cad", "--alta-webhook-base-url", "http://10.0.0.5:9000"]) == 0

    site = deployment(served["alta"])
    assert site.target("az-5d1c") == "http://10.0.0.5:9000/v1/webhooks/alta"
    assert site.target("az-7e21") == "http://10.0.0.5:9000/v1/webhooks/alta?token=sandbox-alta-webhook-token"


def test_without_the_alta_option_the_webhooks_go_where_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    served = _serve_nothing(monkeypatch)

    assert main(["--only", "alta"]) == 0

    assert deployment(served["alta"]).target("az-5d1c") == "http://127.0.0.1:8000/v1/webhooks/alta"


def test_the_help_lists_every_simulator_and_the_alta_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--alta-webhook-base-url URL" in help_text
    assert "(alta, cad, callonalarm, rapidsos, tracktik)" in help_text
