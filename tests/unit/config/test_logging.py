"""Logs are JSON lines and never carry a secret, whatever a careless call passes."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from config.logging import configure_logging
from config.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> pytest.CaptureFixture[str]:
    configure_logging(Settings(log_format="json"))
    return capsys


def test_secret_keys_and_secrets_inside_text_are_masked(json_logs: pytest.CaptureFixture[str]) -> None:
    log = structlog.get_logger("test")
    log.warning(
        "upstream.call",
        password="hunter2",
        api_key="ak-123",
        headers={"Authorization": "Bearer tok-456", "Accept": "application/json"},
        url="https://alta.example/cloud?t=guest&token=tok-789",
        detail="sent Authorization: Bearer tok-abc and Cookie va=cookie-xyz",
        alarm_id=7,
    )
    logging.getLogger("stdlib").warning("login with token=tok-std failed")
    err = json_logs.readouterr().err
    for secret in ("hunter2", "ak-123", "tok-456", "tok-789", "tok-abc", "cookie-xyz", "tok-std"):
        assert secret not in err
    line = json.loads(err.splitlines()[0])
    assert line["event"] == "upstream.call"
    assert line["alarm_id"] == 7
    assert line["headers"]["Accept"] == "application/json"


def test_both_govworx_auth_headers_are_masked_whatever_their_value(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    """The CAD client sends its token as ``Authorization`` and ``Authentication`` (CONTRACTS Part B
    §5.1): a header dict logged by mistake must lose both, with or without a scheme word."""
    structlog.get_logger("test").warning(
        "upstream.call",
        headers={"Authorization": "tok-cad-1", "Authentication": "tok-cad-2"},
        authentication="tok-cad-3",
    )
    err = json_logs.readouterr().err
    for secret in ("tok-cad-1", "tok-cad-2", "tok-cad-3"):
        assert secret not in err
    assert json.loads(err.splitlines()[0])["headers"] == {"Authorization": "***", "Authentication": "***"}


def test_every_line_is_json(json_logs: pytest.CaptureFixture[str]) -> None:
    structlog.get_logger("a").info("one", n=1)
    logging.getLogger("b").error("two")
    lines = json_logs.readouterr().err.strip().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["one", "two"]


def test_a_line_costs_no_walk_of_the_stack(
    json_logs: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No line shows where it was logged from, so no record looks for its caller (a third of a
    worker's logging CPU went to it; the logging HOWTO's own optimisation)."""
    walks: list[str] = []

    def find_caller(self: logging.Logger, *args: object, **kwargs: object) -> tuple[str, int, str, None]:
        walks.append(self.name)
        return "(unknown file)", 0, "(unknown function)", None

    monkeypatch.setattr(logging.Logger, "findCaller", find_caller)
    monkeypatch.setattr(structlog.stdlib._FixedFindCallerLogger, "findCaller", find_caller)
    structlog.get_logger("workers.perform").info("action.succeeded", external_id="TT-1", token="t-1")
    logging.getLogger("celery.worker").warning("a line of a library")
    lines = [json.loads(line) for line in json_logs.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["action.succeeded", "a line of a library"]
    assert lines[0]["token"] == "***"
    assert walks == []


def test_contact_and_medical_details_are_masked(json_logs: pytest.CaptureFixture[str]) -> None:
    """A person's phone numbers, emergency contacts and medical notes (RapidSOS and CallOnAlarm
    payloads, TrackTik's sensitiveInformation) never reach a log line, however deep in a value."""
    structlog.get_logger("vendors.rapidsos").warning(
        "upstream.request",
        alarm_id=42,
        emergency_contacts=[{"name": "Dana Whitfield", "phone": "+16175550142"}],
        phone="+15145550199",
        medical_notes="type 1 diabetic, insulin in the fridge",
        sensitiveInformation="gate code 4242",
        payload={"caller": {"contactPhone": "+18005550123", "site": "Montreal HQ"}},
        # A key for each word alone: the mask must not hang on a key that happens to hold two.
        contacts=["Sam Okafor"],
        phoneNumber="+14165550177",
        emergency_notes="the key is under the mat",
    )
    err = json_logs.readouterr().err
    for value in (
        "Dana Whitfield", "+16175550142", "+15145550199", "diabetic", "insulin", "4242", "+18005550123",
        "Sam Okafor", "+14165550177", "under the mat",
    ):  # fmt: skip
        assert value not in err
    line = json.loads(err)
    assert line["event"] == "upstream.request"
    assert line["alarm_id"] == 42  # a harmless key is kept
    assert line["payload"]["caller"]["site"] == "Montreal HQ"
    masked = (
        "emergency_contacts", "phone", "medical_notes", "sensitiveInformation", "contacts", "phoneNumber",
        "emergency_notes",
    )  # fmt: skip
    assert [line[key] for key in masked] == ["***"] * len(masked)
    assert line["payload"]["caller"]["contactPhone"] == "***"
