"""The client base's rules, held by every vendor client against its simulator over real loopback HTTP.

``BaseClient._authorized`` is the one "retry once after a 401" loop and ``credentials.SharedCredential``
the one Redis cache behind the TrackTik token, the RapidSOS token and the Alta cookie; each test runs
for all three. ``BaseClient._decode`` is the one JSON reader: a 200 whose body is not JSON is
classified the same way for every client, by what the call does (a create's answer is reconciled, a
read's is refused), not by which vendor sent it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import fakeredis
import pytest
import requests

from config.settings import Settings
from sandbox import alta as alta_sandbox
from sandbox import cad as cad_sandbox
from sandbox import callonalarm as callonalarm_sandbox
from sandbox import rapidsos as rapidsos_sandbox
from sandbox import tracktik as tracktik_sandbox
from sandbox.config import load_config
from sandbox.server import serve_in_thread
from tests.contract.clients.test_rapidsos import civic_body
from tests.contract.clients.test_tracktik import seed_alarm
from tests.contract.sandbox.harness import LiveSimulator
from vendors.alta.client import AltaClient
from vendors.alta.settings import AltaSettings
from vendors.cad.client import CadClient, CadIncident
from vendors.cad.settings import CadSettings
from vendors.callonalarm.client import CallOnAlarmClient
from vendors.callonalarm.settings import CallOnAlarmSettings
from vendors.rapidsos.client import RapidSOSClient
from vendors.rapidsos.settings import RapidSOSSettings
from vendors.tracktik.client import TrackTikClient
from vendors.tracktik.settings import TrackTikSettings
from workers.clients.base import BaseClient, EnvironmentOnceSession
from workers.clients.errors import OutcomeUnknownError, UnreadableAnswerError, UpstreamRejectedError

pytestmark = pytest.mark.contract

NOT_JSON = "<html><body>Service page</body></html>"
ALTA_ZONE = "az-5d1c"  # one of the Alta simulator's default zones


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    credential: str | None


class RecordingSession(EnvironmentOnceSession):
    """The clients' own session, remembering what each request carried as its credential."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Sent] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        headers = kwargs.get("headers") or {}
        credential = headers.get("Authorization") or headers.get("Cookie")
        self.sent.append(Sent(str(method), urlsplit(str(url)).path, credential))
        return super().request(method, url, *args, **kwargs)

    def to(self, path: str) -> list[Sent]:
        return [sent for sent in self.sent if sent.path.rstrip("/").lower() == path.rstrip("/").lower()]


@dataclass(frozen=True)
class Vendor:
    """One credentialed vendor: how to build its client, one POST that needs the credential, and where
    credentials are issued."""

    name: str
    sim: LiveSimulator
    build: Callable[[requests.Session], BaseClient]
    post: Callable[[Any], object]
    post_path: str
    issue_path: str


@contextlib.contextmanager
def running(app: Any) -> Iterator[LiveSimulator]:
    server = serve_in_thread(app, port=0)
    with requests.Session() as http:
        yield LiveSimulator(server=server, http=http)
    server.stop()


@pytest.fixture
def cache() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture(params=["tracktik", "rapidsos", "alta"])
def vendor(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], cache: fakeredis.FakeRedis
) -> Iterator[Vendor]:
    name: str = request.param
    if name == "tracktik":
        with running(tracktik_sandbox.create_app()) as sim:
            settings = make_settings(TrackTikSettings(base_url=sim.base_url), broker_key_prefix="creds:")
            yield Vendor(
                name,
                sim,
                lambda session: TrackTikClient.from_settings(settings, cache, session=session),
                lambda client: client.create_alarm(seed_alarm()),
                "/rest/v1/alarms",
                "/rest/oauth2/access_token",
            )
    elif name == "rapidsos":
        with running(rapidsos_sandbox.create_app(config=load_config())) as sim:
            settings = make_settings(RapidSOSSettings(base_url=sim.base_url), broker_key_prefix="creds:")
            yield Vendor(
                name,
                sim,
                lambda session: RapidSOSClient.from_settings(settings, cache, session=session),
                lambda client: client.create_alert(civic_body("NY")),
                "/v1/alerts/",
                "/oauth/token",
            )
    else:
        with running(alta_sandbox.create_app()) as sim:
            settings = make_settings(AltaSettings(base_url=sim.base_url), broker_key_prefix="creds:")
            played = sim.request(
                "POST", "/_sandbox/detections", json={"alarm_zone_id": ALTA_ZONE, "fire_webhook": False}
            ).json()
            guid = played["alert"]["guid"]
            sim.advance_clock(2)  # Alta lists an alert a little after its detection
            yield Vendor(
                name,
                sim,
                lambda session: AltaClient.from_settings(settings, cache, session=session),
                lambda client: client.verify(guid, 201, False, "Operator"),
                f"/api/v1/alerts/{guid}",
                "/api/v1/dologin",
            )


def test_a_401_on_a_post_is_sent_once_more_with_a_new_credential(vendor: Vendor) -> None:
    session = RecordingSession()
    client = vendor.build(session)
    vendor.post(client)  # the credential is issued and works
    vendor.sim.add_fault(method="POST", path=vendor.post_path, status=401, count=1)
    session.sent.clear()

    vendor.post(client)

    first, second = session.to(vendor.post_path)  # exactly once more
    assert (first.method, second.method) == ("POST", "POST")
    assert first.credential and second.credential
    assert second.credential != first.credential
    assert len(session.to(vendor.issue_path)) == 1  # one renewal between them


def test_a_second_401_is_a_refusal_not_a_loop(vendor: Vendor) -> None:
    session = RecordingSession()
    client = vendor.build(session)
    vendor.sim.add_fault(method="POST", path=vendor.post_path, status=401, count=5)

    with pytest.raises(UpstreamRejectedError) as caught:
        vendor.post(client)

    assert caught.value.status == 401
    assert len(session.to(vendor.post_path)) == 2
    assert len(session.to(vendor.issue_path)) == 2  # the first credential, and one renewal


def test_two_processes_share_one_credential(vendor: Vendor) -> None:
    first_session, second_session = RecordingSession(), RecordingSession()
    first, second = vendor.build(first_session), vendor.build(second_session)  # same Redis, own sessions

    vendor.post(first)
    vendor.post(second)

    assert len(first_session.to(vendor.issue_path)) + len(second_session.to(vendor.issue_path)) == 1
    [sent_first] = first_session.to(vendor.post_path)
    [sent_second] = second_session.to(vendor.post_path)
    assert sent_first.credential == sent_second.credential


# --- one decoder: a 200 that is not JSON -----------------------------------------------------------------


@pytest.fixture
def sims() -> Iterator[dict[str, LiveSimulator]]:
    apps = {
        "tracktik": tracktik_sandbox.create_app(),
        "rapidsos": rapidsos_sandbox.create_app(config=load_config()),
        "alta": alta_sandbox.create_app(),
        "callonalarm": callonalarm_sandbox.create_app(),
        "cad": cad_sandbox.create_app(load_config()),
    }
    servers = {name: serve_in_thread(app, port=0) for name, app in apps.items()}
    with requests.Session() as http:
        yield {name: LiveSimulator(server=server, http=http) for name, server in servers.items()}
    for server in servers.values():
        server.stop()


@pytest.fixture
def clients(
    sims: dict[str, LiveSimulator], make_settings: Callable[..., Settings], cache: fakeredis.FakeRedis
) -> dict[str, Any]:
    settings = make_settings(
        TrackTikSettings(base_url=sims["tracktik"].base_url),
        RapidSOSSettings(base_url=sims["rapidsos"].base_url),
        AltaSettings(base_url=sims["alta"].base_url),
        CallOnAlarmSettings(base_url=sims["callonalarm"].base_url),
        CadSettings(base_url=sims["cad"].base_url),
        broker_key_prefix="decode:",
    )
    return {
        "tracktik": TrackTikClient.from_settings(settings, cache),
        "rapidsos": RapidSOSClient.from_settings(settings, cache),
        "alta": AltaClient.from_settings(settings, cache),
        "callonalarm": CallOnAlarmClient.from_settings(settings, cache),
        "cad": CadClient.from_settings(settings, cache),
    }


# (vendor, method, path answered with a non-JSON 200, the call)
READS: list[tuple[str, str, str, Callable[[Any], object]]] = [
    ("tracktik", "GET", "/rest/v1/alarms/22", lambda c: c.get_alarm(22)),
    ("rapidsos", "GET", "/v1/alerts/a-1", lambda c: c.get_alert("a-1")),
    ("alta", "GET", "/api/v1/ongoingAlerts", lambda c: c.ongoing_alerts()),
    ("callonalarm", "GET", "/v1/alert/a-1/status", lambda c: c.status("a-1")),
    ("tracktik", "POST", "/rest/oauth2/access_token", lambda c: c.get_alarm(22)),
    ("rapidsos", "POST", "/oauth/token", lambda c: c.get_alert("a-1")),
]
CREATES: list[tuple[str, str, str, Callable[[Any], object]]] = [
    ("tracktik", "POST", "/rest/v1/alarms", lambda c: c.create_alarm(seed_alarm())),
    ("callonalarm", "POST", "/v1/alert/trigger", lambda c: c.trigger("1234", "FA")),
]


@pytest.mark.parametrize(("name", "method", "path", "call"), READS, ids=[f"{r[0]}{r[2]}" for r in READS])
def test_a_non_json_200_to_a_read_is_refused_the_same_way_by_every_client(
    sims: dict[str, LiveSimulator],
    clients: dict[str, Any],
    name: str,
    method: str,
    path: str,
    call: Callable[[Any], object],
) -> None:
    sims[name].add_fault(method=method, path=path, status=200, body=NOT_JSON)

    with pytest.raises(UnreadableAnswerError) as caught:
        call(clients[name])

    assert caught.value.status == 200
    assert caught.value.upstream == name
    assert str(caught.value) == f"{name}: HTTP 200: {method} {path}: unreadable answer: body is not JSON"


@pytest.mark.parametrize(("name", "method", "path", "call"), CREATES, ids=[f"{c[0]}{c[2]}" for c in CREATES])
def test_a_non_json_200_to_a_create_is_an_unknown_outcome_for_every_client(
    sims: dict[str, LiveSimulator],
    clients: dict[str, Any],
    name: str,
    method: str,
    path: str,
    call: Callable[[Any], object],
) -> None:
    sims[name].add_fault(method=method, path=path, status=200, body=NOT_JSON)

    with pytest.raises(OutcomeUnknownError) as caught:
        call(clients[name])

    assert str(caught.value) == f"{name}: {method} {path}: unreadable create answer: body is not JSON"


def test_where_the_status_is_the_answer_a_non_json_body_is_read_as_absent(
    sims: dict[str, LiveSimulator], clients: dict[str, Any]
) -> None:
    # RapidSOS create (201/216/217 is the answer; blocking:false has no alert_id), CAD upload (seed 003
    # documents the 200 as "OK"), Alta end (ending is idempotent): each vendor's contract says so.
    sims["rapidsos"].add_fault(method="POST", path="/v1/alerts/", status=201, body=NOT_JSON)
    sims["cad"].add_fault(method="PUT", path="/api/v1/external/incident", status=200, body=NOT_JSON)
    sims["alta"].add_fault(method="POST", path="/api/v1/alerts/g-1/end", status=200, body=NOT_JSON)

    created = clients["rapidsos"].create_alert(civic_body("NY"))
    uploaded = clients["cad"].upload_incident(CadIncident(sys_id="alarm-bridge-1"))
    ended = clients["alta"].end("g-1")

    assert (created.status_code, created.alert_id) == (201, None)
    assert (uploaded.id, uploaded.sys_id) == (None, "alarm-bridge-1")
    assert (ended.known, ended.alert) == (True, None)


def test_an_unreadable_token_answer_is_not_taken_for_refused_credentials(
    sims: dict[str, LiveSimulator], clients: dict[str, Any]
) -> None:
    # TrackTik remembers a refusal of the credentials for ten minutes (its login lockout); an answer
    # it could not read says nothing about the credentials, so the next call logs in.
    sims["tracktik"].add_fault(method="POST", path="/rest/oauth2/access_token", status=200, body=NOT_JSON)
    with pytest.raises(UnreadableAnswerError):
        clients["tracktik"].create_alarm(seed_alarm())

    assert clients["tracktik"].create_alarm(seed_alarm()).id == 22
