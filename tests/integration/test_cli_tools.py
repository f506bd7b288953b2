"""The integrator's commands: `sites check` on good and broken files, `send-test-event` against the
web app over real loopback HTTP (bearer token, Standard Webhooks signature, Alta shape, refusals),
and `alarms show` rendering an alarm's timeline to the millisecond, or refusing clearly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from app.domain.outbox import RecordingOutbox
from app.ledger.models import Event as EventRow
from app.web import create_app
from cli.alarms import ms, render_alarm
from cli.main import main
from config.settings import Settings
from sandbox.server import RunningServer, serve_in_thread
from tests.processes import REPO, free_port
from tests.sites_fixture import (
    ALTA_TOKEN,
    ALTA_ZONE,
    EXAMPLE_SITES,
    MONTREAL_ACCOUNT,
    PANEL_TOKEN,
    SIGNING_SECRET,
    SOURCE_ENV,
)

pytestmark = pytest.mark.integration
OPERATOR_KEY = "cli-operator-key"
MILLISECOND_TIME = re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z\b")


def check(*args: str, env: dict[str, str | None]) -> Result:
    """`alarm-bridge sites check ...` in process, with exactly these source variables set."""
    unset: dict[str, str | None] = {name: None for name in (*SOURCE_ENV, "SITES_FILE")}
    return CliRunner().invoke(main, ["sites", "check", *args], env={**unset, **env})


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`alarm-bridge ...` as its own process, as an integrator runs it."""
    base = {k: v for k, v in os.environ.items() if k not in ("PORT", "OPERATOR_API_KEYS", "SITES_FILE")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


# --------------------------------------------------------------------------------------------------
# sites check


def test_sites_check_passes_the_example_file_and_summarises_it() -> None:
    result = check(str(EXAMPLE_SITES), env=dict(SOURCE_ENV))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [
        f"{EXAMPLE_SITES}: ok: 2 sources (1 panel, 1 alta), 2 sites, 2 panel accounts, 1 Alta zone, "
        "2 plans in use",
        f'{EXAMPLE_SITES}: plan "commercial": an unknown code asks a person and runs nothing '
        '(an "unknown" list would opt in)',
        f'{EXAMPLE_SITES}: plan "residential": an unknown code asks a person and runs its "unknown" list '
        "(callonalarm.trigger)",
        f'{EXAMPLE_SITES}: site "newton-residence": 1 account supervised: a link (any event or DC-09 frame) '
        "within 25h and an automatic test (RP or RY) every 24h (+30m grace), else a trouble for a person",
    ]


def test_sites_check_reads_sites_file_when_no_file_is_given() -> None:
    result = check(env={**SOURCE_ENV, "SITES_FILE": str(EXAMPLE_SITES)})

    assert result.exit_code == 0, result.output
    assert "ok: 2 sources" in result.stdout


def test_sites_check_reports_unset_secrets_and_can_check_the_rest_without_them() -> None:
    refused = check(str(EXAMPLE_SITES), env={})

    assert refused.exit_code == 1
    assert refused.stdout.splitlines() == [
        f"{EXAMPLE_SITES}: sources.acme-panels.token_env: environment variable ACME_PANELS_TOKEN is not set",
        f"{EXAMPLE_SITES}: sources.acme-panels.signing_secrets_env: environment variable ACME_PANELS_WHSEC "
        "is not set",
        f"{EXAMPLE_SITES}: sources.alta-main.token_env: environment variable ALTA_MAIN_TOKEN is not set",
    ]
    assert "--ignore-missing-secrets" in refused.stderr

    checked = check(str(EXAMPLE_SITES), "--ignore-missing-secrets", env={})

    assert checked.exit_code == 0, checked.output
    assert "ok: 2 sources (1 panel, 1 alta), 2 sites" in checked.stdout
    assert "checked with stand-ins: ACME_PANELS_TOKEN, ACME_PANELS_WHSEC, ALTA_MAIN_TOKEN" in checked.stdout


BROKEN_SITES = """
[sources.panels]
kind = "panel"
token_env = "BROKEN_PANELS_TOKEN"

[sites.hq]
name = "HQ"
sources = ["panels", "nowhere"]
accounts = ["1001"]
timezone = "Mars/Olympus"
site_type = "COMMERCIAL"
cancel_windw = "90s"
plan = "standard"
location = { address_line1 = "1 Main St", city = "Springfield", country = "US" }

[plans.standard]
burglary = [{ do = "callonalarm.trigger", after = "90x" }]
"""


def test_sites_check_reports_every_problem_of_a_broken_file_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(BROKEN_SITES)

    # Secrets stay out of every message, even a rejected one.
    result = check(str(path), env={"BROKEN_PANELS_TOKEN": "short"})

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    expected = {
        "sources.panels.token_env": "token 1 in BROKEN_PANELS_TOKEN must be at least 16",
        "sites.hq.cancel_windw": 'did you mean "cancel_window"?',
        "sites.hq.timezone": "Mars/Olympus",
        "sites.hq.sources": "nowhere",
        "plans.standard.burglary[0].after": '"90x" is not a duration',
    }
    for where, message in expected.items():
        assert any(line.startswith(f"{path}: {where}: ") and message in line for line in lines), (
            where,
            lines,
        )
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert "short" not in result.stdout
    assert result.stderr.strip() == f"{path}: {len(lines)} problems"


def test_sites_check_reports_an_unreadable_or_invalid_file(tmp_path: Path) -> None:
    missing = check(str(tmp_path / "nope.toml"), env={})
    assert missing.exit_code == 1
    assert missing.stdout.strip() == f"{tmp_path / 'nope.toml'}: cannot be read: No such file or directory"

    (tmp_path / "bad.toml").write_text("[sources\n")
    invalid = check(str(tmp_path / "bad.toml"), env={})
    assert invalid.exit_code == 1
    assert "is not valid TOML" in invalid.stdout


# --------------------------------------------------------------------------------------------------
# send-test-event and alarms show, against the web app on a real port


class Bridge:
    """The web app on a loopback port, with the ledger it writes to."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings, outbox=RecordingOutbox(), ping_broker=lambda: None)
        self.server: RunningServer = serve_in_thread(self.app)
        self.base = self.server.base_url
        self.port = self.server.port
        self.sessions = self.app.extensions["alarm_bridge"].sessions

    def event(self, sender_event_id: str) -> EventRow | None:
        with self.sessions() as session:
            query = select(EventRow).where(EventRow.sender_event_id == sender_event_id)
            return session.execute(query).scalar_one_or_none()

    def close(self) -> None:
        self.server.stop()
        self.app.extensions["alarm_bridge"].engine.dispose()


@pytest.fixture
def bridge(make_settings: Callable[..., Settings], sqlite_url: str) -> Iterator[Bridge]:
    running = Bridge(
        make_settings(
            database_url=sqlite_url,
            sites_file=str(EXAMPLE_SITES),
            environ=SOURCE_ENV,
            operator_api_keys=(OPERATOR_KEY,),
        )
    )
    yield running
    running.close()


def _answer(done: subprocess.CompletedProcess[str]) -> tuple[int, dict[str, Any]]:
    """The status line and the JSON body `send-test-event` printed."""
    lines = done.stdout.splitlines()
    status_at = next(i for i, line in enumerate(lines) if line.startswith("HTTP "))
    return int(lines[status_at].split()[1]), json.loads("\n".join(lines[status_at + 1 :]))


def test_send_test_event_with_a_bearer_token_is_recorded(bridge: Bridge) -> None:
    done = cli(
        "send-test-event", "--url", bridge.base, "--token", PANEL_TOKEN, "--account", MONTREAL_ACCOUNT,
        "--event-id", "cli-token-1",
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    status, body = _answer(done)
    assert status == 202
    assert body["duplicate"] is False
    assert body["alarm_id"] is None  # RX, a manual test: recorded, opens no alarm
    row = bridge.event("cli-token-1")
    assert row is not None
    assert (row.id, row.source, row.code, row.account) == (
        body["event_id"],
        "acme-panels",
        "RX",
        MONTREAL_ACCOUNT,
    )


def test_send_test_event_signed_with_a_standard_webhooks_secret_is_recorded_once(bridge: Bridge) -> None:
    args = (
        "send-test-event", "--url", bridge.base, "--signing-secret", SIGNING_SECRET,
        "--account", MONTREAL_ACCOUNT, "--code", "ba", "--zone", "3", "--event-id", "cli-signed-1",
    )  # fmt: skip
    first = cli(*args)

    assert first.returncode == 0, first.stdout + first.stderr
    status, body = _answer(first)
    assert status == 202
    assert body["alarm_id"] is not None  # BA opens a burglary alarm
    row = bridge.event("cli-signed-1")
    assert row is not None
    assert (row.code, row.zone) == ("BA", "3")

    again = cli(*args)  # the same event id: a retried delivery

    assert again.returncode == 0, again.stdout + again.stderr
    assert _answer(again) == (200, {**body, "duplicate": True})


def test_send_test_event_can_post_an_alta_zone_webhook(bridge: Bridge) -> None:
    done = cli("send-test-event", "--url", bridge.base, "--alta", "--token", ALTA_TOKEN, "--zone", ALTA_ZONE)

    assert done.returncode == 0, done.stdout + done.stderr
    status, body = _answer(done)
    assert status == 202
    assert body["alarm_id"] is not None
    event_id = re.search(r"event id (send-test-event-[0-9a-f]+)", done.stdout)
    assert event_id is not None
    row = bridge.event(event_id.group(1))
    assert row is not None
    assert (row.source, row.account) == ("alta-main", ALTA_ZONE)


def test_send_test_event_with_a_wrong_token_fails_with_one_readable_line(bridge: Bridge) -> None:
    done = cli(
        "send-test-event", "--url", bridge.base, "--token", "not-a-token-of-any-source",
        "--account", MONTREAL_ACCOUNT,
    )  # fmt: skip

    assert done.returncode == 1
    assert _answer(done)[0] == 401
    assert done.stderr.strip() == (
        "Error: the bridge did not accept the event: 401 unauthenticated: the source credential is not valid"
    )


def test_send_test_event_reports_a_bridge_that_does_not_answer() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    done = cli("send-test-event", "--url", url, "--token", PANEL_TOKEN, "--account", MONTREAL_ACCOUNT)

    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: cannot reach {url}/v1/events: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_send_test_event_refuses_incomplete_options() -> None:
    neither = cli("send-test-event", "--account", MONTREAL_ACCOUNT)
    assert neither.returncode == 2
    assert "give either --token or --signing-secret" in neither.stderr

    no_zone = cli("send-test-event", "--alta", "--token", ALTA_TOKEN)
    assert no_zone.returncode == 2
    assert "--alta needs --zone" in no_zone.stderr


def test_alarms_show_renders_the_alarm_and_its_timeline_to_the_millisecond(bridge: Bridge) -> None:
    sent = cli("send-test-event", "--url", bridge.base, "--token", PANEL_TOKEN, "--account", MONTREAL_ACCOUNT,
               "--code", "BA", "--zone", "7")  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    alarm_id = _answer(sent)[1]["alarm_id"]
    # The defaults: the bridge at PORT on this machine, the first operator key.
    env = {"PORT": str(bridge.port), "OPERATOR_API_KEYS": f"{OPERATOR_KEY},another-operator-key"}

    shown = cli("alarms", "show", str(alarm_id), env=env)
    raw = cli("alarms", "show", str(alarm_id), "--json", env=env)

    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert raw.returncode == 0, raw.stdout + raw.stderr
    alarm = json.loads(raw.stdout)
    text = shown.stdout
    assert text.startswith(f"Alarm {alarm_id}: {alarm['description']}\n")
    for label, value in (("state", "open"), ("family", "burglary"), ("priority", alarm["priority"]),
                         ("site", "montreal-hq"), ("needs person", "no")):  # fmt: skip
        assert re.search(rf"^  {label} +{re.escape(value)}$", text, re.MULTILINE), (label, text)
    assert f"Events ({len(alarm['events'])})" in text
    assert f"Actions ({len(alarm['actions'])})" in text
    assert alarm["actions"], "the commercial plan has burglary steps"
    for action in alarm["actions"]:
        assert re.search(
            rf"^  {action['id']} +{re.escape(action['kind'])} +{action['state']} ", text, re.MULTILINE
        )
    assert alarm["timeline"]
    timeline = text.split(f"Timeline ({len(alarm['timeline'])})\n", 1)[1].splitlines()
    assert len(timeline) == len(alarm["timeline"])
    for line, entry in zip(timeline, alarm["timeline"], strict=True):
        assert line.startswith(f"  {ms(entry['at'])}  {entry['kind']}"), (line, entry)
        assert MILLISECOND_TIME.search(line)
        assert entry["what"] in line


def test_alarms_show_refuses_clearly_on_a_wrong_key_a_missing_alarm_or_no_bridge(bridge: Bridge) -> None:
    wrong_key = cli("alarms", "show", "1", "--url", bridge.base, "--key", "not-the-key")
    assert wrong_key.returncode == 1
    assert wrong_key.stderr.strip() == (
        "Error: the operator key was refused (401 unauthenticated: the operator key is not valid)"
    )

    missing = cli("alarms", "show", "424242", "--url", bridge.base, "--key", OPERATOR_KEY)
    assert missing.returncode == 1
    assert (
        missing.stderr.strip() == f"Error: no alarm 424242 at {bridge.base} (404 not_found: no alarm 424242)"
    )

    url = f"http://127.0.0.1:{free_port()}"
    down = cli("alarms", "show", "1", "--url", url, "--key", OPERATOR_KEY)
    assert down.returncode == 1
    assert down.stderr.startswith(f"Error: cannot reach {url}/v1/alarms/1: ")

    no_key = cli("alarms", "show", "1", "--url", bridge.base)
    assert no_key.returncode == 2
    assert "give --key, or set OPERATOR_API_KEYS" in no_key.stderr


def test_render_alarm_shows_needs_person_reasons_last_errors_and_utc_milliseconds() -> None:
    alarm = {
        "id": 9, "description": "Fire Alarm", "state": "needs_person", "outcome": None, "family": "fire",
        "priority": "life_safety", "site": None, "source": "acme-panels", "account": "9999", "zone": None,
        "code": "FA", "needs_person": True, "needs_person_reason": "no site claims account 9999",
        "opened_at": "2025-06-01T10:03:07.482519-04:00", "last_event_at": "2025-06-01T14:03:07.482519+00:00",
        "events": [],
        "actions": [{"id": 4, "kind": "cad.upload_incident", "state": "failed", "attempts": 8,
                     "external_id": None, "due_at": "2025-06-01T14:03:07+00:00",
                     "last_error": "503 from CAD"}],
        "timeline": [{"at": "2025-06-01T14:03:07.000999+00:00", "kind": "alarm.opened", "what": "opened",
                      "event_id": 3, "action_id": None}],
    }  # fmt: skip

    lines = list(render_alarm(alarm))

    assert "  site          (unrouted)" in lines
    assert "  needs person  yes: no site claims account 9999" in lines
    assert "  opened        2025-06-01 14:03:07.482Z" in lines  # converted to UTC
    assert "  source        acme-panels, account 9999, code FA" in lines
    failed = next(i for i, line in enumerate(lines) if "cad.upload_incident" in line)
    assert lines[failed + 1] == "      last error: 503 from CAD"
    assert lines[-1] == "  2025-06-01 14:03:07.000Z  alarm.opened  opened [event 3]"
    assert "  (none)" in lines  # no events
