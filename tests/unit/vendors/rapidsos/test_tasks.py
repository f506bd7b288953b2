"""The RapidSOS task handlers, called directly with a hand-built Job and a real client on the simulator.

What the handlers send (seed 004's event core and security fields), what they return (refs, external
id, the phone fallback on 216/217), the retry after a lost answer (sent again, flagged for a person),
and cancelling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import fakeredis
import pytest
import requests

from app.domain.actions import ClaimedAction
from app.domain.alarms import AlarmContext
from app.domain.plans import Plan
from app.domain.site_tables import Location
from app.domain.sites import Site
from config.settings import Settings
from sandbox.config import load_config
from sandbox.rapidsos import create_app
from sandbox.server import serve_in_thread
from tests.contract.sandbox.harness import LiveSimulator
from vendors.rapidsos import steps as rapidsos_steps
from vendors.rapidsos import tasks
from vendors.rapidsos.client import RapidSOSClient
from vendors.rapidsos.settings import RapidSOSSettings
from vendors.rapidsos.site import EmergencyContact, RapidSOSSite
from workers.clients import Clients
from workers.clients.errors import OutcomeUnknownError, UpstreamRejectedError
from workers.perform import Job, Outcome

pytestmark = pytest.mark.unit

OPENED = datetime(2026, 5, 26, 14, 36, 37, tzinfo=UTC)
NEWTON = Location(
    address_line1="48 Maple Ridge Rd",
    city="Newton",
    state="MA",
    country="US",
    postal_code="02459",
    latitude=42.3168,
    longitude=-71.2087,
)
RAPIDSOS = RapidSOSSite(
    callflow="AcmeMonitoringAlarmFlow",
    alarm_permit_number="NWT-2024-0117",
    site_phone="+16175550118",
    emergency_contacts=(
        EmergencyContact(name="Dana Lee", phone="+16175550142", relationship="Owner"),
        EmergencyContact(
            name="Sam Ortiz", phone="+16175550177", relationship="Neighbour", language="Spanish"
        ),
    ),
)
SITE = Site(
    key="newton-residence",
    name="Newton residence",
    sources=("acme-panels",),
    accounts=("1f4a",),
    alta_zones=(),
    timezone=ZoneInfo("America/New_York"),
    site_type="RESIDENTIAL",
    instructions="Side door keypad; dog in the kitchen.",
    cancel_window=timedelta(minutes=2),
    plan=Plan(key="residential", steps_by_key={}),
    location=NEWTON,
    tables={RapidSOSSite: RAPIDSOS},
)
# Civic-only sites, routed by state: the sandbox's coverage map gives TX 217 and WY 216.
TEXAS = replace(
    SITE,
    location=Location(
        address_line1="1 Main St", city="Houston", state="TX", country="US", postal_code="77002"
    ),
)
WYOMING = replace(
    SITE,
    location=Location(
        address_line1="1 Main St", city="Cheyenne", state="WY", country="US", postal_code="82001"
    ),
)


def alarm(**changes: Any) -> AlarmContext:
    base = AlarmContext(
        id=42,
        state="open",
        site=SITE,
        source_kind="panel",
        account="1f4a",
        zone="3",
        code="FA",
        family="fire",
        priority="life_safety",
        description="Fire Alarm",
        opened_at=OPENED,
        occurred_at=OPENED - timedelta(seconds=4),
        message="Kitchen smoke detector",
        payload={},
        refs={},
        verification=None,
    )
    return replace(base, **changes)


def action(kind: str = rapidsos_steps.CREATE_ALERT, *, outcome_unknown: bool = False) -> ClaimedAction:
    return ClaimedAction(
        id=7,
        alarm_id=42,
        kind=kind,
        attempts=2 if outcome_unknown else 1,
        max_attempts=8,
        lease_token="lease",
        idempotency_key="idem-7",
        outcome_unknown=outcome_unknown,
        params={},
    )


@pytest.fixture
def sim() -> Iterator[LiveSimulator]:
    server = serve_in_thread(create_app(config=load_config()), port=0)
    with requests.Session() as http:
        yield LiveSimulator(server=server, http=http)
    server.stop()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sim: LiveSimulator) -> Settings:
    # The create waits no longer than any call here, so a held answer is lost after 1 s, not 30.
    return make_settings(
        RapidSOSSettings(base_url=sim.base_url, create_read_timeout_s=1.0), http_read_timeout_s=1.0
    )


@pytest.fixture
def clients(settings: Settings) -> Iterator[Clients]:
    client = RapidSOSClient.from_settings(settings, fakeredis.FakeRedis())
    yield Clients.of(client)
    client.session.close()


@pytest.fixture
def job(clients: Clients, settings: Settings) -> Callable[..., Job]:
    def build(context: AlarmContext | None, claimed: ClaimedAction | None = None) -> Job:
        return Job(claimed or action(), context, clients, settings, OPENED + timedelta(seconds=1))

    return build


def posted_bodies(sim: LiveSimulator) -> list[dict[str, Any]]:
    return [e["body"] for e in sim.journal(path="/v1/alerts/", method="POST")]


def test_create_sends_the_event_core_and_security_fields_and_keeps_the_alert_id(
    job: Callable[..., Job], sim: LiveSimulator
) -> None:
    outcome = tasks._create_alert(job(alarm(verification="valid")))

    [body] = posted_bodies(sim)
    assert body == {
        "blocking": True,
        "callflow": "AcmeMonitoringAlarmFlow",
        "variables": {
            "event": {
                "source_id": "alarm-bridge-42",
                "incident_time": int((OPENED - timedelta(seconds=4)).timestamp() * 1000),
                # A home: its address alone (geodetic would replace it, seed 004).
                "location": {
                    "civic": {
                        "street_1": "48 Maple Ridge Rd",
                        "city": "Newton",
                        "state": "MA",
                        "country": "US",
                        "zip_code": "02459",
                    },
                },
                "emergency_type": "FIRE",
                "site_type": "RESIDENTIAL",
            },
            "alarm_description": "Fire Alarm: Kitchen smoke detector",
            "alarm_permit_number": "NWT-2024-0117",
            "instructions": "Side door keypad; dog in the kitchen.",
            "site_phone": "+16175550118",
            "visually_verified": True,
            "emergency_contacts": [
                {"name": "Dana Lee", "phone": "+16175550142", "relationship": "Owner"},
                {
                    "name": "Sam Ortiz",
                    "phone": "+16175550177",
                    "relationship": "Neighbour",
                    "language": "Spanish",
                },
            ],
        },
    }
    assert outcome.fallback is None
    assert outcome.needs_person is None
    assert outcome.external_id is not None
    assert outcome.refs == {
        "rapidsos_alert_id": outcome.external_id,
        "rapidsos_source_id": "alarm-bridge-42",
        "rapidsos_status_code": 201,
    }
    # The sandbox's NY box reaches east to -71.0, so it (first match) covers Newton before MA's does.
    assert outcome.result["covering_psap"] in ("NY_123", "MA_NEWTON")


@pytest.mark.parametrize(
    ("site", "status", "reason"),
    [
        (WYOMING, 216, "RapidSOS 216: no PSAP can take it — call the PSAP by phone"),
        (
            TEXAS,
            217,
            "RapidSOS 217: the PSAP (Harris County Emergency Communications, 17135550100) takes it as "
            "supplemental data only — call the PSAP by phone",
        ),
    ],
)
def test_216_and_217_keep_the_alert_id_and_ask_for_the_phone_fallback(
    job: Callable[..., Job], site: Site, status: int, reason: str
) -> None:
    outcome = tasks._create_alert(job(alarm(site=site)))

    assert outcome.fallback == reason
    assert outcome.refs["rapidsos_status_code"] == status
    assert outcome.refs["rapidsos_alert_id"] == outcome.external_id is not None


def test_a_site_without_rapidsos_settings_is_rejected_for_a_person(
    job: Callable[..., Job], sim: LiveSimulator
) -> None:
    with pytest.raises(UpstreamRejectedError):
        tasks._create_alert(job(alarm(site=SITE.without(RapidSOSSite))))
    with pytest.raises(UpstreamRejectedError):
        tasks._create_alert(job(None))

    assert posted_bodies(sim) == []


def test_a_refusal_by_rapidsos_propagates_to_perform(job: Callable[..., Job], sim: LiveSimulator) -> None:
    sim.add_fault(method="POST", path="/v1/alerts/", status=400)

    with pytest.raises(UpstreamRejectedError) as caught:
        tasks._create_alert(job(alarm()))

    assert caught.value.status == 400


def test_a_retry_after_a_lost_answer_sends_again_and_flags_the_possible_duplicate(
    job: Callable[..., Job], sim: LiveSimulator
) -> None:
    sim.add_fault(method="POST", path="/v1/alerts/", timeout_after_commit=True, hold_s=5)
    with pytest.raises(OutcomeUnknownError):
        tasks._create_alert(job(alarm()))

    outcome = tasks._create_alert(job(alarm(), action(outcome_unknown=True)))

    stored = sim.request("GET", "/_sandbox/alerts", params={"source_id": "alarm-bridge-42"}).json()
    assert len(stored) == 2  # no dedupe or lookup upstream: better two alerts than none
    assert outcome.refs["rapidsos_alert_id"] == stored[1]["alert_id"]
    assert outcome.refs["rapidsos_possible_duplicate"] is True
    assert outcome.needs_person is not None and "alarm-bridge-42" in outcome.needs_person
    assert outcome.fallback is None


def test_a_slow_blocking_create_makes_one_alert_not_two(
    make_settings: Callable[..., Settings], sim: LiveSimulator
) -> None:
    # RapidSOS takes longer than HTTP_READ_TIMEOUT_S to finish its create job, but less than
    # RAPIDSOS_CREATE_READ_TIMEOUT_S (scaled down: 0.5 s and 3 s, RapidSOS taking 1.5 s). The step is
    # run as perform() runs it: a lost answer is sent again, flagged as a possible duplicate.
    settings = make_settings(
        RapidSOSSettings(base_url=sim.base_url, create_read_timeout_s=3.0), http_read_timeout_s=0.5
    )
    client = RapidSOSClient.from_settings(settings, fakeredis.FakeRedis())
    sim.add_fault(method="POST", path="/v1/alerts/", delay_s=1.5)

    def attempt(claimed: ClaimedAction) -> Outcome:
        return tasks._create_alert(Job(claimed, alarm(), Clients.of(client), settings, OPENED))

    try:
        outcome = attempt(action())
    except OutcomeUnknownError:
        outcome = attempt(action(outcome_unknown=True))

    assert len(sim.journal(path="/v1/alerts/", method="POST")) == 1
    assert "rapidsos_possible_duplicate" not in outcome.refs
    assert outcome.needs_person is None
    [stored] = sim.request("GET", "/_sandbox/alerts", params={"source_id": "alarm-bridge-42"}).json()
    assert outcome.refs["rapidsos_alert_id"] == stored["alert_id"]
    client.session.close()


def test_an_alarm_that_already_has_an_alert_is_not_sent_again(
    job: Callable[..., Job], sim: LiveSimulator
) -> None:
    outcome = tasks._create_alert(job(alarm(refs={"rapidsos_alert_id": "a-1"})))

    assert outcome.external_id == "a-1"
    assert posted_bodies(sim) == []


def test_cancel_patches_canceled_and_records_it(job: Callable[..., Job], sim: LiveSimulator) -> None:
    created = tasks._create_alert(job(alarm()))

    outcome = tasks._cancel_alert(job(alarm(refs=created.refs), action(rapidsos_steps.CANCEL_ALERT)))

    assert outcome.refs == {"rapidsos_cancelled": True}
    assert outcome.external_id == created.external_id
    [patch] = sim.journal(path="/v1/alerts/", method="PATCH")
    assert patch["path"] == f"/v1/alerts/{created.external_id}"
    assert patch["body"] == {"status": "CANCELED"}


def test_cancel_without_an_alert_succeeds_with_nothing_to_cancel(
    job: Callable[..., Job], sim: LiveSimulator
) -> None:
    outcome = tasks._cancel_alert(job(alarm(), action(rapidsos_steps.CANCEL_ALERT)))

    assert outcome.message is not None and "nothing to cancel" in outcome.message
    assert outcome.refs == {}
    assert sim.journal(path="/v1/alerts/") == []


def test_cancel_after_rapidsos_forgot_the_alert_succeeds_as_not_cancelled(
    job: Callable[..., Job], sim: LiveSimulator
) -> None:
    created = tasks._create_alert(job(alarm()))
    sim.advance_clock(12 * 3600 + 1)

    outcome = tasks._cancel_alert(job(alarm(refs=created.refs), action(rapidsos_steps.CANCEL_ALERT)))

    assert outcome.refs == {"rapidsos_cancelled": False}


@pytest.mark.parametrize(
    ("family", "code", "expected"),
    [
        ("burglary", "BA", "BURGLARY"),
        ("holdup", "HA", "HOLDUP"),
        ("panic", "PA", "HOLDUP"),
        ("fire", "FA", "FIRE"),
        ("sprinkler", "SA", "FIRE"),
        ("heat", "KA", "FIRE"),
        ("gas", "GA", "CO"),
        ("medical", "MA", "MEDICAL"),
        ("emergency", "QA", "MEDICAL"),
        ("water", "WA", "OTHER"),
        ("unknown", "ZZZ", "OTHER"),
        ("fire", "FT", "OTHER"),  # a fire trouble is not a fire
        ("burglary", None, "BURGLARY"),  # Alta: no code, burglary family
    ],
)
def test_emergency_type_follows_the_family(family: str, code: str | None, expected: str) -> None:
    assert tasks.emergency_type(alarm(family=family, code=code)) == expected


def test_incident_time_ignores_an_implausible_sender_clock() -> None:
    assert tasks.incident_time_ms(alarm(occurred_at=datetime(1970, 1, 2, tzinfo=UTC))) == int(
        OPENED.timestamp() * 1000
    )
    assert tasks.incident_time_ms(alarm(occurred_at=None)) == int(OPENED.timestamp() * 1000)


def test_location_drops_a_civic_part_rapidsos_would_refuse_and_needs_one_part() -> None:
    canadian = Location(
        address_line1="4200 Blvd Saint-Laurent",
        city="Montréal",
        state="QC",
        country="CA",
        postal_code="H2W2R",
        latitude=45.5183,
        longitude=-73.5822,
    )
    assert tasks.rapidsos_location(canadian, "COMMERCIAL") == {
        "geodetic": {"latitude": 45.5183, "longitude": -73.5822}
    }
    with pytest.raises(UpstreamRejectedError):
        tasks.alert_body(alarm(), replace(SITE, location=replace(canadian, latitude=None, longitude=None)))


HOME = replace(NEWTON, name="Dana Lee", address_line2="Apt 3")
HOME_CIVIC = {
    "street_1": "48 Maple Ridge Rd",
    "street_2": "Apt 3",
    "city": "Newton",
    "state": "MA",
    "country": "US",
    "zip_code": "02459",
}


def test_a_fixed_site_with_an_address_sends_the_address_alone() -> None:
    # Seed 004: geodetic "takes precedence, and replaces civic address data"; residential and
    # commercial sites are "expected as fixed (civic) locations". Both would lose the apartment.
    assert tasks.rapidsos_location(HOME, "RESIDENTIAL") == {"civic": HOME_CIVIC}
    assert tasks.rapidsos_location(HOME, "COMMERCIAL") == {"civic": {"name": "Dana Lee", **HOME_CIVIC}}


def test_a_civic_name_is_a_business_name_and_never_sent_for_a_home() -> None:
    # Seed 004: "Do not include ... the homeowner's name as this can cause errors with the geo-coding".
    home = replace(HOME, latitude=None, longitude=None)
    assert "name" not in tasks.rapidsos_location(home, "RESIDENTIAL")["civic"]
    assert tasks.rapidsos_location(home, "COMMERCIAL")["civic"]["name"] == "Dana Lee"


def test_a_vehicle_or_person_is_located_by_coordinates() -> None:
    for site_type in ("VEHICLE", "PERSONAL"):
        assert tasks.rapidsos_location(HOME, site_type) == {
            "geodetic": {"latitude": 42.3168, "longitude": -71.2087}
        }
    # without coordinates, the address is all there is
    assert tasks.rapidsos_location(replace(HOME, latitude=None, longitude=None), "VEHICLE") == {
        "civic": HOME_CIVIC
    }


def test_alta_zone_name_is_the_zone_description_and_panel_zone_numbers_are_left_out() -> None:
    alta = alarm(source_kind="alta", code=None, family="burglary", payload={"alarmZoneName": "Loading dock"})
    assert tasks.alert_body(alta, SITE)["variables"]["zone_description"] == "Loading dock"
    assert "zone_description" not in tasks.alert_body(alarm(zone="3"), SITE)["variables"]
    assert tasks.alert_body(alarm(zone="Back door"), SITE)["variables"]["zone_description"] == "Back door"
    assert tasks.alert_body(alarm(), SITE)["variables"]["visually_verified"] is False
