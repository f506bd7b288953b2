"""RapidSOSClient against the RapidSOS simulator over real loopback HTTP (seed 004; Part A 13-15).

Covers the client-credentials token (form body, Bearer header, shared through Redis with a TTL a
minute short of expiry, renewed after the simulator clock passes the hour, renewed once on a 401 and
never looped on), 201 / 216 / 217 returned by exact code, every error class, and cancel/get.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fakeredis
import pytest
import requests

from config.settings import Settings
from sandbox.config import load_config
from sandbox.rapidsos import create_app
from sandbox.server import serve_in_thread
from tests.contract.sandbox.harness import LiveSimulator
from tests.polling import wait_until
from vendors.rapidsos.client import RapidSOSClient, token_cache_ttl_s
from vendors.rapidsos.settings import RapidSOSSettings
from workers.clients.cache import cache_key
from workers.clients.errors import OutcomeUnknownError, UpstreamRejectedError, UpstreamUnavailableError

pytestmark = pytest.mark.contract

ALERTS = "/v1/alerts/"

# Seed 004's "Example Request Body" as written (zip_code and the contact's phone as numbers).
SEED_004_EXAMPLE_BODY: dict[str, Any] = {
    "blocking": True,
    "callflow": "CentralStationABCFireAlarmFlow",
    "variables": {
        "event": {
            "source_id": "abc123",
            "incident_time": 1581110270622,
            "location": {
                "geodetic": {"latitude": 45.123, "longitude": -71.321, "uncertainty_radius": 7.5},
                "civic": {
                    "name": "RapidSOS HQ",
                    "street_1": "123 Main Street",
                    "street_2": "Apt. 626",
                    "city": "Los Angeles",
                    "state": "CA",
                    "country": "USA",
                    "zip_code": 11375,
                },
            },
            "emergency_type": "BURGLARY",
            "site_type": "RESIDENTIAL",
        },
        "alarm_description": "string",
        "zone_description": "string",
        "alarm_permit_number": "string",
        "visually_verified": True,
        "instructions": "string",
        "service_provider_name": "string",
        "site_phone": "string",
        "emergency_contacts": [
            {"name": "John Doe", "phone": 15555555555, "relationship": "Father", "language": "English"}
        ],
    },
}


def civic_body(state: str, source_id: str = "alarm-bridge-1") -> dict[str, Any]:
    """A body located by a civic address only, so the sandbox routes it by ``state``."""
    body = copy.deepcopy(SEED_004_EXAMPLE_BODY)
    event = body["variables"]["event"]
    event["source_id"] = source_id
    event["location"] = {
        "civic": {
            "street_1": "1 Main St",
            "city": "Somewhere",
            "state": state,
            "country": "US",
            "zip_code": "12345",
        }
    }
    return body


@pytest.fixture
def sim() -> Iterator[LiveSimulator]:
    server = serve_in_thread(create_app(config=load_config()), port=0)
    with requests.Session() as http:
        yield LiveSimulator(server=server, http=http)
    server.stop()


@pytest.fixture
def cache() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sim: LiveSimulator) -> Settings:
    # The create waits no longer than any call here, so a held answer is lost after 1 s, not 30.
    return make_settings(
        RapidSOSSettings(base_url=sim.base_url, create_read_timeout_s=1.0), http_read_timeout_s=1.0
    )


@pytest.fixture
def client(settings: Settings, cache: fakeredis.FakeRedis) -> Iterator[RapidSOSClient]:
    built = RapidSOSClient.from_settings(settings, cache)
    yield built
    built.session.close()


def token_calls(sim: LiveSimulator) -> list[dict[str, Any]]:
    return [e for e in sim.journal(method="POST") if e["path"].rstrip("/").lower() == "/oauth/token"]


def alert_calls(sim: LiveSimulator, method: str = "POST") -> list[dict[str, Any]]:
    return sim.journal(path=ALERTS, method=method)


def test_seed_example_body_is_created_with_201_and_a_bearer_token(
    client: RapidSOSClient, sim: LiveSimulator
) -> None:
    created = client.create_alert(copy.deepcopy(SEED_004_EXAMPLE_BODY))

    assert created.status_code == 201
    assert created.alert_id
    assert not created.needs_phone_call
    psap = created.body["covering_psap"]
    assert isinstance(psap, dict) and psap["id"] == "NY_123"
    [token] = token_calls(sim)
    assert token["headers"]["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert "grant_type=client_credentials" in token["body"]
    assert "client_id=sandbox-rapidsos-client" in token["body"]
    [post] = alert_calls(sim)
    # seed 004: the header is "Bearer <token>", although token_type says "BearerToken".
    assert post["headers"]["Authorization"] == "Bearer ***"
    assert post["body"] == SEED_004_EXAMPLE_BODY


@pytest.mark.parametrize(
    ("state", "status", "phone_call"),
    [("NY", 201, False), ("CA", 201, False), ("MA", 201, False), ("TX", 217, True), ("WY", 216, True)],
)
def test_216_and_217_are_returned_by_exact_code_not_raised(
    client: RapidSOSClient, state: str, status: int, phone_call: bool
) -> None:
    created = client.create_alert(civic_body(state))

    assert created.status_code == status
    assert created.alert_id  # all three create the alert (Part A 14)
    assert created.needs_phone_call is phone_call


def test_token_is_cached_in_redis_for_every_worker_until_a_minute_before_expiry(
    settings: Settings, cache: fakeredis.FakeRedis, sim: LiveSimulator
) -> None:
    first = RapidSOSClient.from_settings(settings, cache)
    second = RapidSOSClient.from_settings(settings, cache)  # another worker process, same Redis

    first.create_alert(civic_body("NY"))
    second.create_alert(civic_body("CA"))

    assert len(token_calls(sim)) == 1
    key = cache_key(settings, "rapidsos", "token")
    ttl = cache.ttl(key)
    assert isinstance(ttl, int)
    assert 3500 < ttl <= 3540
    first.session.close()
    second.session.close()


def test_steps_running_at_once_in_one_process_fetch_one_token(
    client: RapidSOSClient, sim: LiveSimulator
) -> None:
    """The thread pool: twenty steps need a token at the same moment; one is fetched, all use it."""
    sim.add_fault(path="/oauth/token", delay_s=0.3)  # slow enough for every step to ask meanwhile
    barrier = threading.Barrier(20)

    def token() -> str:
        barrier.wait(timeout=10)
        return client.access_token()

    with ThreadPoolExecutor(max_workers=20) as pool:
        tokens = set(pool.map(lambda _: token(), range(20)))
    assert len(tokens) == 1
    assert len(token_calls(sim)) == 1


def test_on_sent_runs_once_the_create_has_left_and_before_its_answer(
    client: RapidSOSClient, sim: LiveSimulator
) -> None:
    """What the 911-first rule hangs on: the alarm's other steps start when the create has been
    written to the socket (the simulator holds its answer 0.5 s), not before, and not for the token."""
    sim.add_fault(method="POST", path=ALERTS, delay_s=0.5)
    seen: list[tuple[int, float]] = []
    started = time.monotonic()

    def sent() -> None:
        # The client's thread is held here: if the simulator receives the create meanwhile, it was
        # written before this ran.
        wait_until(lambda: len(alert_calls(sim)) == 1, timeout_s=0.4, interval_s=0.01)
        seen.append((len(alert_calls(sim)), time.monotonic() - started))

    created = client.create_alert(civic_body("NY"), on_sent=sent)
    assert created.status_code == 201
    [(arrived, at_s)] = seen  # once: the token request (cold cache) did not call it
    assert arrived == 1  # the simulator had the request when it was called...
    assert at_s < 0.5 <= time.monotonic() - started  # ...and its answer had not come yet
    assert len(token_calls(sim)) == 1


def test_a_slow_blocking_create_is_waited_for_and_made_once(
    make_settings: Callable[..., Settings], sim: LiveSimulator, cache: fakeredis.FakeRedis
) -> None:
    # The create is blocking: its answer waits for RapidSOS's create job. Given up at the general
    # read timeout it would be an unknown outcome, sent again: a second 911 alert. The create waits
    # longer than every other call (scaled down here: 0.5 s against 3 s, RapidSOS taking 1.5 s).
    settings = make_settings(
        RapidSOSSettings(base_url=sim.base_url, create_read_timeout_s=3.0), http_read_timeout_s=0.5
    )
    client = RapidSOSClient.from_settings(settings, cache)
    sim.add_fault(method="POST", path=ALERTS, delay_s=1.5)

    created = client.create_alert(civic_body("NY"))

    assert created.status_code == 201
    [stored] = sim.request("GET", "/_sandbox/alerts").json()
    assert created.alert_id == stored["alert_id"]
    assert len(alert_calls(sim)) == 1
    sim.add_fault(method="GET", path=ALERTS + stored["alert_id"], delay_s=1.5)
    with pytest.raises(UpstreamUnavailableError):  # every other call keeps the general timeout
        client.get_alert(stored["alert_id"])
    client.session.close()


def test_a_create_timeout_below_the_general_read_timeout_is_raised_to_it(
    make_settings: Callable[..., Settings], sim: LiveSimulator, cache: fakeredis.FakeRedis
) -> None:
    settings = make_settings(
        RapidSOSSettings(base_url=sim.base_url, create_read_timeout_s=0.2), http_read_timeout_s=3.0
    )
    client = RapidSOSClient.from_settings(settings, cache)
    sim.add_fault(method="POST", path=ALERTS, delay_s=0.6)

    assert client.create_alert(civic_body("NY")).status_code == 201
    client.session.close()


def test_expired_token_is_renewed_once_the_simulator_clock_passes_the_hour(
    client: RapidSOSClient, sim: LiveSimulator
) -> None:
    client.create_alert(civic_body("NY"))
    sim.advance_clock(3601)

    created = client.create_alert(civic_body("NY"))

    assert created.status_code == 201
    assert len(token_calls(sim)) == 2
    assert [e["status"] for e in alert_calls(sim)] == [201, 401, 201]


def test_a_401_drops_the_cached_token_and_retries_once(
    client: RapidSOSClient, sim: LiveSimulator, cache: fakeredis.FakeRedis, settings: Settings
) -> None:
    client.access_token()
    old = cache.get(cache_key(settings, "rapidsos", "token"))
    sim.add_fault(method="POST", path=ALERTS, status=401, count=1)

    created = client.create_alert(civic_body("NY"))

    assert created.status_code == 201
    assert len(token_calls(sim)) == 2
    assert cache.get(cache_key(settings, "rapidsos", "token")) not in (None, old)
    assert len(alert_calls(sim)) == 2


def test_a_second_401_is_rejected_without_looping(client: RapidSOSClient, sim: LiveSimulator) -> None:
    sim.add_fault(method="POST", path=ALERTS, status=401, count=5)

    with pytest.raises(UpstreamRejectedError) as caught:
        client.create_alert(civic_body("NY"))

    assert caught.value.status == 401
    assert len(token_calls(sim)) == 2
    assert len(alert_calls(sim)) == 2


def test_wrong_client_credentials_are_permanent_and_tried_once(
    make_settings: Callable[..., Settings], sim: LiveSimulator, cache: fakeredis.FakeRedis
) -> None:
    wrong = RapidSOSClient.from_settings(
        make_settings(RapidSOSSettings(base_url=sim.base_url, client_secret="sandbox-wrong")), cache
    )

    with pytest.raises(UpstreamRejectedError) as caught:
        wrong.create_alert(civic_body("NY"))

    assert caught.value.status == 401
    assert len(token_calls(sim)) == 1
    assert alert_calls(sim) == []
    wrong.session.close()


def test_429_is_unavailable_with_the_retry_after_it_gave(client: RapidSOSClient, sim: LiveSimulator) -> None:
    sim.add_fault(method="POST", path=ALERTS, status=429, headers={"Retry-After": "7"})

    with pytest.raises(UpstreamUnavailableError) as caught:
        client.create_alert(civic_body("NY"))

    assert caught.value.retry_after_s == 7.0


def test_503_is_unavailable(client: RapidSOSClient, sim: LiveSimulator) -> None:
    sim.add_fault(method="POST", path=ALERTS, status=503)

    with pytest.raises(UpstreamUnavailableError):
        client.create_alert(civic_body("NY"))


def test_a_body_rapidsos_refuses_is_rejected_with_400(client: RapidSOSClient, sim: LiveSimulator) -> None:
    body = civic_body("NY")
    del body["callflow"]

    with pytest.raises(UpstreamRejectedError) as caught:
        client.create_alert(body)

    assert caught.value.status == 400
    assert "callflow" in str(caught.value)


def test_a_lost_answer_after_the_alert_was_made_is_outcome_unknown(
    client: RapidSOSClient, sim: LiveSimulator
) -> None:
    client.access_token()
    sim.add_fault(method="POST", path=ALERTS, timeout_after_commit=True, hold_s=5)

    with pytest.raises(OutcomeUnknownError):
        client.create_alert(civic_body("NY", source_id="alarm-bridge-77"))

    # The alert exists upstream, but RapidSOS offers no way to find it by source_id (only this
    # control view shows it): the task decides what a retry does (vendors/rapidsos/tasks.py).
    stored = sim.request("GET", "/_sandbox/alerts", params={"source_id": "alarm-bridge-77"}).json()
    assert len(stored) == 1


def test_cancel_sets_canceled_and_cancelling_again_is_fine(
    client: RapidSOSClient, sim: LiveSimulator
) -> None:
    created = client.create_alert(civic_body("NY"))
    assert created.alert_id is not None

    first = client.cancel_alert(created.alert_id)
    again = client.cancel_alert(created.alert_id)
    read = client.get_alert(created.alert_id)

    assert first is not None and first.status == "CANCELED" and first.disposition == "CANCELED"
    assert again is not None and again.status == "CANCELED"
    assert read.status == "CANCELED"
    [patch, _] = alert_calls(sim, "PATCH")
    assert patch["body"] == {"status": "CANCELED"}


def test_cancel_after_the_12_hour_retention_finds_nothing_to_cancel(
    client: RapidSOSClient, sim: LiveSimulator
) -> None:
    created = client.create_alert(civic_body("NY"))
    assert created.alert_id is not None
    sim.advance_clock(12 * 3600 + 1)

    assert client.cancel_alert(created.alert_id) is None


def test_get_of_an_unknown_alert_is_rejected(client: RapidSOSClient) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        client.get_alert("6e58d630-d28f-4623-ba01-3207b497a9ba")

    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("issued_at", "expires_in", "now_s", "ttl"),
    [
        ("1764000000000", "3600", 1764000000.0, 3540),  # the sandbox: strings, issued_at in ms
        (1764000000, 3600, 1764000000.0, 3540),  # numbers, seconds
        (1764000000, 3599, 1764000100.0, 3439),  # received 100 s after issue
        (1764000000, 3600, 1763990000.0, 3540),  # issued "in the future": clocks disagree, ignore it
        (1764000000, 3600, 1764090000.0, 3540),  # "older than its lifetime": clocks disagree
        (None, None, 1764000000.0, 3540),  # nothing said: seed 004's default hour
        ("soon", "3600", 1764000000.0, 3540),
    ],
)
def test_token_ttl_accepts_strings_numbers_seconds_and_ms(
    issued_at: Any, expires_in: Any, now_s: float, ttl: int
) -> None:
    assert token_cache_ttl_s(issued_at, expires_in, now_s) == ttl


def test_an_unreachable_redis_does_not_stop_an_alert(settings: Settings, sim: LiveSimulator) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    offline = RapidSOSClient.from_settings(settings, fakeredis.FakeRedis(server=server))

    assert offline.create_alert(civic_body("NY")).status_code == 201
    offline.session.close()
