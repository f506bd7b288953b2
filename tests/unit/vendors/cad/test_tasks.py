"""The cad.upload_incident handler against the CAD simulator: one complete incident per alarm.

The handler is called directly with a hand-built Job (no ledger, no Celery); its client is real and
talks to a simulator on a loopback port.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from app.domain.actions import ClaimedAction
from app.domain.alarms import AlarmContext
from app.domain.sites import Site
from config.settings import Settings
from sandbox.cad import create_app
from sandbox.config import load_config
from sandbox.server import serve_in_thread
from tests.contract.sandbox.harness import LiveSimulator
from tests.sites_fixture import example_sites
from vendors.cad import steps as cad_steps
from vendors.cad.client import CadClient
from vendors.cad.tasks import _upload_incident, incident_for, sys_id_for, upload_incident
from workers.clients import Clients
from workers.clients.errors import UpstreamRejectedError, UpstreamUnavailableError
from workers.perform import Job

pytestmark = pytest.mark.unit

OPENED_AT = datetime(2026, 1, 6, 10, 25, 4, tzinfo=UTC)
OCCURRED_AT = datetime(2026, 1, 6, 10, 25, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 6, 10, 25, 6, tzinfo=UTC)
PATH = "/api/v1/external/incident"


@pytest.fixture
def govworx() -> Iterator[LiveSimulator]:
    """The CAD simulator on a free port, with its control API at hand."""
    server = serve_in_thread(create_app(load_config()), port=0)
    with requests.Session() as http:
        yield LiveSimulator(server=server, http=http)
    server.stop()


@pytest.fixture
def cad(govworx: LiveSimulator) -> Iterator[CadClient]:
    client = CadClient(govworx.base_url, "sandbox-cad-token", (2.0, 5.0))
    yield client
    client.session.close()


def site(key: str) -> Site:
    found = example_sites().site(key)
    assert found is not None
    return found


def make_alarm(**overrides: Any) -> AlarmContext:
    fields: dict[str, Any] = {
        "id": 42,
        "state": "open",
        "site": site("newton-residence"),
        "source_kind": "panel",
        "account": "1f4a",
        "zone": "3",
        "code": "FA",
        "family": "fire",
        "priority": "life_safety",
        "description": "Fire Alarm",
        "opened_at": OPENED_AT,
        "occurred_at": OCCURRED_AT,
        "message": "Kitchen smoke detector",
        "payload": {},
        "refs": {},
        "verification": None,
    }
    fields.update(overrides)
    return AlarmContext(**fields)


def make_job(cad: CadClient, alarm: AlarmContext | None, *, attempts: int = 1) -> Job:
    action = ClaimedAction(
        id=7,
        alarm_id=alarm.id if alarm else 42,
        kind=cad_steps.UPLOAD_INCIDENT,
        attempts=attempts,
        max_attempts=8,
        lease_token="lease",
        idempotency_key="action-7",
        outcome_unknown=False,
        params={},
    )
    clients = Clients.of(cad)
    return Job(action=action, alarm=alarm, clients=clients, settings=Settings(), now=NOW)


def stored_incidents(sim: LiveSimulator) -> list[dict[str, Any]]:
    incidents: list[dict[str, Any]] = sim.request("GET", "/_sandbox/incidents").json()
    return incidents


def sent_bodies(sim: LiveSimulator) -> list[dict[str, Any]]:
    return [entry["body"] for entry in sim.journal(path=PATH)]


def test_the_task_is_registered_under_its_constant_name() -> None:
    assert upload_incident.name == cad_steps.UPLOAD_INCIDENT


def test_upload_creates_one_incident_and_records_its_id_in_refs(
    cad: CadClient, govworx: LiveSimulator
) -> None:
    outcome = _upload_incident(make_job(cad, make_alarm()))

    assert outcome.external_id == "1"
    assert outcome.refs == {"cad_incident_id": 1, "cad_sys_id": "alarm-bridge-42"}
    assert outcome.result["cad_sys_id"] == "alarm-bridge-42"
    assert outcome.follow_ups == ()
    assert outcome.needs_person is None
    assert outcome.fallback is None
    assert "Newton residence" in (outcome.message or "")
    [stored] = stored_incidents(govworx)
    assert stored["sysId"] == sys_id_for(42) == "alarm-bridge-42"


def test_the_first_upload_carries_the_complete_incident(cad: CadClient, govworx: LiveSimulator) -> None:
    alarm = make_alarm(
        refs={
            "video_links": ["https://alta.example/cloud?t=abc", {"url": "https://alta.example/cloud?t=def"}],
            "tracktik_dispatch_task_id": 683,
            "alta_alert_guid": "5f0c-guid",
        },
        verification="valid",
        event_count=3,
    )
    _upload_incident(make_job(cad, alarm))

    [body] = sent_bodies(govworx)
    assert "id" not in body
    assert body["sysId"] == "alarm-bridge-42"
    assert body["number"] == "AB-42"
    assert body["incidentType"] == "Fire Alarm"
    assert body["initialIncidentType"] == "SIA FA"
    assert body["priority"] == "Priority 1"
    assert body["incidentDate"] == "2026-01-06T10:25:04Z"
    assert body["callReceivedTime"] == "2026-01-06T10:25:01Z"
    assert body["callSource"] == "Alarm Monitoring"
    assert body["callerName"] == "Newton residence"
    assert body["callerNumber"] == "+16175550118"
    assert body["location"] == "48 Maple Ridge Rd, Newton, MA 02459, US"
    assert (body["latitude"], body["longitude"]) == (42.3168, -71.2087)
    assert "3 signals" in body["additionalContext"]
    notes = {note["noteId"].removeprefix("alarm-bridge-42-"): note for note in body["notes"]}
    assert set(notes) == {"signal", "site", "video", "alta", "tracktik", "verification"}
    assert notes["signal"]["note"] == (
        "Signal: SIA FA, account 1f4a, zone 3, Fire Alarm: Kitchen smoke detector"
    )
    assert notes["signal"]["noteAt"] == "2026-01-06T10:25:01Z"
    assert "Side door keypad" in notes["site"]["note"]
    assert notes["video"]["note"] == (
        "Video: https://alta.example/cloud?t=abc https://alta.example/cloud?t=def"
    )
    assert "683" in notes["tracktik"]["note"]
    assert "real alarm" in notes["verification"]["note"]
    assert all(note["noteBy"] == "alarm-bridge" for note in body["notes"])


def test_what_is_not_known_yet_is_left_out_rather_than_waited_for(
    cad: CadClient, govworx: LiveSimulator
) -> None:
    _upload_incident(make_job(cad, make_alarm()))

    [body] = sent_bodies(govworx)
    note_ids = [note["noteId"] for note in body["notes"]]
    assert note_ids == ["alarm-bridge-42-signal", "alarm-bridge-42-site"]


def test_priorities_map_onto_the_cads_priority_text() -> None:
    job_alarm = make_alarm()
    texts = {
        priority: incident_for(replace(job_alarm, priority=priority), _bare_job(job_alarm)).priority
        for priority in ("life_safety", "property", "technical", "informational", "made_up")
    }
    assert texts == {
        "life_safety": "Priority 1",
        "property": "Priority 2",
        "technical": "Priority 3",
        "informational": "Priority 4",
        "made_up": None,
    }


def _bare_job(alarm: AlarmContext) -> Job:
    return make_job(None, alarm)  # type: ignore[arg-type]  # incident_for never calls the client


def test_an_alta_alarm_is_described_by_its_zone_and_detection() -> None:
    alarm = make_alarm(
        site=site("montreal-hq"),
        source_kind="alta",
        account=None,
        code=None,
        zone="az-5d1c",
        family="burglary",
        priority="property",
        description=None,
        message="Person detected",
        occurred_at=None,
    )
    incident = incident_for(alarm, _bare_job(alarm))

    assert incident.incident_type == "Burglary alarm"
    assert incident.initial_incident_type is None
    assert incident.call_received_time == OPENED_AT
    assert incident.caller_number is None  # the Montréal site has no RapidSOS table
    assert incident.location == ("Acme Montréal HQ, 4200 Blvd Saint-Laurent, Montréal, QC H2W 2R2, CA")
    assert incident.notes[0].note == "Signal: Alta Protect video alarm, zone az-5d1c: Person detected"


def test_an_alarm_without_a_site_is_still_uploaded_without_a_location(
    cad: CadClient, govworx: LiveSimulator
) -> None:
    outcome = _upload_incident(make_job(cad, make_alarm(site=None)))

    assert outcome.refs["cad_sys_id"] == "alarm-bridge-42"
    assert "unrouted" in (outcome.message or "")
    [body] = sent_bodies(govworx)
    assert not {"location", "latitude", "longitude", "callerName"} & set(body)
    assert "unrouted" in body["additionalContext"]
    assert "No site claims this signal" in body["notes"][1]["note"]


def test_a_job_without_its_alarm_is_rejected_for_a_person(cad: CadClient, govworx: LiveSimulator) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        _upload_incident(make_job(cad, None))

    assert caught.value.status == 0
    assert sent_bodies(govworx) == []


def test_a_retry_after_the_first_put_landed_unanswered_makes_no_second_incident(
    govworx: LiveSimulator,
) -> None:
    govworx.add_fault(method="PUT", path=PATH, timeout_after_commit=True, hold_s=10)
    impatient = CadClient(govworx.base_url, "sandbox-cad-token", (2.0, 0.5))

    with pytest.raises(UpstreamUnavailableError):  # perform() retries it later
        _upload_incident(make_job(impatient, make_alarm()))
    # The retry happens later, when more is known; the CAD keeps the first upload as it was.
    later = make_alarm(refs={"tracktik_dispatch_task_id": 683})
    outcome = _upload_incident(make_job(impatient, later, attempts=2))

    assert outcome.external_id == "1"
    [stored] = stored_incidents(govworx)
    assert stored["sysId"] == "alarm-bridge-42"
    assert len(sent_bodies(govworx)) == 2
    impatient.session.close()


def test_a_repeated_step_for_the_same_alarm_reuses_its_incident(
    cad: CadClient, govworx: LiveSimulator
) -> None:
    first = _upload_incident(make_job(cad, make_alarm()))
    second = _upload_incident(make_job(cad, make_alarm()))
    other = _upload_incident(make_job(cad, make_alarm(id=43)))

    assert first.refs == second.refs
    assert other.refs == {"cad_incident_id": 2, "cad_sys_id": "alarm-bridge-43"}
    assert len(stored_incidents(govworx)) == 2


def test_a_cad_outage_is_unavailable_with_its_retry_after(cad: CadClient, govworx: LiveSimulator) -> None:
    govworx.add_fault(method="PUT", path=PATH, status=503, headers={"Retry-After": "7"})

    with pytest.raises(UpstreamUnavailableError) as caught:
        _upload_incident(make_job(cad, make_alarm()))

    assert caught.value.retry_after_s == 7


@pytest.mark.parametrize(
    ("token", "status"), [("wrong-token-value", 401), ("sandbox-cad-readonly-token", 403)]
)
def test_a_refused_token_is_rejected(govworx: LiveSimulator, token: str, status: int) -> None:
    client = CadClient(govworx.base_url, token, (2.0, 5.0))

    with pytest.raises(UpstreamRejectedError) as caught:
        _upload_incident(make_job(client, make_alarm()))

    assert caught.value.status == status
    assert stored_incidents(govworx) == []
    client.session.close()


def test_times_reach_the_cad_in_utc_whatever_the_site_zone(cad: CadClient, govworx: LiveSimulator) -> None:
    local_opened_at = OPENED_AT.astimezone(site("newton-residence").timezone)  # 05:25:04-05:00
    _upload_incident(make_job(cad, make_alarm(opened_at=local_opened_at)))

    [body] = sent_bodies(govworx)
    assert body["incidentDate"] == "2026-01-06T10:25:04Z"
    # The tenant (America/New_York) shows its wall-clock time.
    assert stored_incidents(govworx)[0]["incidentDate"] == "2026-01-06T05:25:04"
