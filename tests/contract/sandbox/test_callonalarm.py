"""The CallOnAlarm simulator over real HTTP (seed 001; CONTRACTS Part A items 10-12, Part B §3).

Every documented status (201, 200, 400, 401, 404, 429, 500), the five trigger statuses, the delay →
calls → acknowledged | timeout lifecycle on the simulated clock, cancellation by Cancel-ticked codes
(seed 001's IA → IR example as written), the second acknowledge, the 101st request in an hour and the
sliding window, and the rate-limit headers on every answer.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from sandbox.callonalarm import app as callonalarm
from sandbox.callonalarm.codes import SIA_CODES
from sandbox.callonalarm.settings import Settings
from sandbox.config import load_config
from tests.contract.sandbox.conftest import ServeSimulator
from tests.contract.sandbox.harness import LiveSimulator

pytestmark = pytest.mark.contract

KEY = "coa_sandbox_key_0001"  # accounts 1001 (active, en), 1002 (inactive), 1003 (no rule), 1004
OTHER_KEY = "coa_sandbox_key_0002"  # account 2001
EXPIRED_KEY = "coa_sandbox_key_expired"
ACCOUNT = "1001"  # contacts ring 30 s and 25 s, 2 rounds: calls at +0, +30, +55, +85; timeout at +110
TRIGGER_FIELDS = [
    "alertId",
    "requiresCalls",
    "contactsToCall",
    "language",
    "delaySeconds",
    "status",
    "technicalEmailSent",
]
STATUS_FIELDS = [
    "alertId",
    "accountNumber",
    "eventCode",
    "zone",
    "status",
    "createdAt",
    "callsStartAt",
    "acknowledgedAt",
    "acknowledgedBy",
    "cancelledAt",
    "callsMade",
]
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
def coa(serve_simulator: ServeSimulator) -> LiveSimulator:
    """The CallOnAlarm simulator with the default configuration."""
    return serve_simulator(callonalarm.create_app())


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def trigger(sim: LiveSimulator, body: Any, *, key: str = KEY) -> requests.Response:
    return sim.request("POST", callonalarm.TRIGGER_PATH, json=body, headers=auth(key))


def triggered(sim: LiveSimulator, code: str, account: str = ACCOUNT, **extra: str) -> dict[str, Any]:
    response = trigger(sim, {"accountNumber": account, "eventCode": code, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def status_of(sim: LiveSimulator, alert_id: str, *, key: str = KEY) -> requests.Response:
    return sim.request("GET", f"/v1/alert/{alert_id}/status", headers=auth(key))


def status(sim: LiveSimulator, alert_id: str) -> dict[str, Any]:
    response = status_of(sim, alert_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def acknowledge(sim: LiveSimulator, alert_id: str, body: Any, *, key: str = KEY) -> requests.Response:
    return sim.request("POST", f"/v1/alert/{alert_id}/acknowledge", json=body, headers=auth(key))


def connection_test(sim: LiveSimulator, *, key: str = KEY) -> requests.Response:
    return sim.request("GET", callonalarm.CONNECTION_TEST_PATH, headers=auth(key))


def assert_error(response: requests.Response, status_code: int, title: str, *mentions: str) -> None:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert list(body) == ["error", "message"]
    assert body["error"] == title
    for mention in mentions:
        assert mention in body["message"]


def parse_time(value: str) -> datetime:
    assert value.endswith("Z")
    return datetime.fromisoformat(value)


def config_with(**changes: Any) -> dict[str, Any]:
    """The default configuration with some `[callonalarm]` keys replaced."""
    config = load_config()
    config["callonalarm"] = {**config["callonalarm"], **changes}
    return config


# --- trigger: seed 001's examples and the five statuses ---------------------------------------------


def test_quick_start_example_is_accepted_as_written(coa: LiveSimulator) -> None:
    response = coa.request(
        "POST",
        "/v1/alert/trigger",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        data='{\n    "accountNumber": "1001",\n    "eventCode": "BA"\n  }',
    )
    assert response.status_code == 201
    body = response.json()
    assert list(body) == TRIGGER_FIELDS
    assert body["alertId"].startswith("alt_")
    assert body == {
        "alertId": body["alertId"],
        "requiresCalls": True,
        "contactsToCall": 2,
        "language": "en",
        "delaySeconds": 0,
        "status": "call_immediate",
        "technicalEmailSent": False,
    }


@pytest.mark.parametrize(
    ("account", "code", "expected"),
    [
        ("1001", "IA", ("call_delayed", True, 2, 60, True)),  # seed 001's IT example response
        ("1001", "FA", ("call_immediate", True, 2, 0, False)),
        ("1001", "CL", ("ignored", False, 0, 0, False)),  # rule None
        ("1001", "YT", ("technical_only", False, 0, 0, True)),  # None + Technical
        ("1002", "BA", ("logged_inactive", False, 0, 0, False)),  # inactive connection
    ],
    ids=["delayed", "instant", "none-ignored", "technical-only", "inactive"],
)
def test_the_delay_rule_decides_the_five_trigger_statuses(
    coa: LiveSimulator, account: str, code: str, expected: tuple[str, bool, int, int, bool]
) -> None:
    body = triggered(coa, code, account)
    assert list(body) == TRIGGER_FIELDS
    assert (
        body["status"],
        body["requiresCalls"],
        body["contactsToCall"],
        body["delaySeconds"],
        body["technicalEmailSent"],
    ) == expected
    assert body["language"] == "en"
    assert status(coa, body["alertId"])["status"] == expected[0]


def test_crypto_example_with_zone_and_message_calls_at_once(coa: LiveSimulator) -> None:
    body = triggered(coa, "UA", zone="STOP-LOSS", message="Wallet dropped to $9,500")
    assert body["status"] == "call_immediate"
    polled = status(coa, body["alertId"])
    assert (polled["zone"], polled["eventCode"], polled["callsMade"]) == ("STOP-LOSS", "UA", 1)
    (view,) = coa.request("GET", "/_sandbox/alerts").json()
    assert view["message"] == "Wallet dropped to $9,500"


def test_a_connection_without_a_delay_rule_logs_events_as_ignored(coa: LiveSimulator) -> None:
    body = triggered(coa, "FA", "1003")
    assert (body["status"], body["requiresCalls"], body["language"]) == ("ignored", False, "fr")


def test_custom_codes_of_the_connection_follow_their_own_rule(coa: LiveSimulator) -> None:
    down = triggered(coa, "SRV_DOWN", zone="B34E")
    assert (down["status"], down["delaySeconds"], down["technicalEmailSent"]) == ("call_delayed", 30, True)
    up = triggered(coa, "SRV_UP")  # Cancel ticked
    assert up["status"] == "ignored"
    assert status(coa, down["alertId"])["status"] == "cancelled"


@pytest.mark.parametrize(
    ("account", "code"),
    [("1001", "XQZ"), ("1001", "ba"), ("1001", "B A"), ("1001", "ZZ"), ("2001", "SRV_DOWN")],
    ids=["unknown", "lower-case", "blank-inside", "not-in-seed-001", "another-connections-custom-code"],
)
def test_an_event_code_neither_sia_nor_custom_is_400_invalid_event_code(
    coa: LiveSimulator, account: str, code: str
) -> None:
    key = OTHER_KEY if account == "2001" else KEY
    response = trigger(coa, {"accountNumber": account, "eventCode": code}, key=key)
    assert_error(response, 400, "Invalid eventCode", code)
    assert coa.request("GET", "/_sandbox/alerts").json() == []


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({}, ["accountNumber", "eventCode"]),
        ({"eventCode": "BA"}, ["accountNumber"]),
        ({"accountNumber": "1001"}, ["eventCode"]),
        ({"accountNumber": "", "eventCode": "BA"}, ["accountNumber"]),
        ({"accountNumber": "1001", "eventCode": "  "}, ["eventCode"]),
        ({"accountNumber": None, "eventCode": None}, ["accountNumber", "eventCode"]),
    ],
)
def test_missing_required_fields_is_400(coa: LiveSimulator, body: dict[str, Any], missing: list[str]) -> None:
    assert_error(trigger(coa, body), 400, "Missing Required Fields", *missing)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"accountNumber": 1001}, "accountNumber"),
        ({"eventCode": ["BA"]}, "eventCode"),
        ({"zone": 3}, "zone"),
        ({"message": {"text": "x"}}, "message"),
    ],
)
def test_a_field_of_the_wrong_type_is_400(coa: LiveSimulator, change: dict[str, Any], named: str) -> None:
    body = {"accountNumber": ACCOUNT, "eventCode": "BA", **change}
    assert_error(trigger(coa, body), 400, "Bad Request", named)


@pytest.mark.parametrize(
    ("kwargs", "title"),
    [
        ({"data": "{not json", "headers": {**auth(), "Content-Type": "application/json"}}, "Bad Request"),
        ({"json": [{"accountNumber": "1001", "eventCode": "BA"}], "headers": auth()}, "Bad Request"),
        ({"data": "accountNumber=1001&eventCode=BA", "headers": auth()}, "Missing Required Fields"),
    ],
    ids=["invalid-json", "array", "not-json"],
)
def test_an_unreadable_body_is_400(coa: LiveSimulator, kwargs: dict[str, Any], title: str) -> None:
    assert_error(coa.request("POST", callonalarm.TRIGGER_PATH, **kwargs), 400, title)


@pytest.mark.parametrize(
    ("account", "key"),
    [("9999", KEY), ("2001", KEY), ("1001", OTHER_KEY)],
    ids=["unknown", "another-keys-account", "account-of-the-first-key"],
)
def test_an_account_the_key_does_not_hold_is_404_connection_not_found(
    coa: LiveSimulator, account: str, key: str
) -> None:
    response = trigger(coa, {"accountNumber": account, "eventCode": "BA"}, key=key)
    assert_error(response, 404, "Connection Not Found", account)


# --- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "title", "mention"),
    [
        ({}, "Missing API Key", "Bearer"),
        ({"Authorization": "Bearer"}, "Missing API Key", "Bearer"),
        ({"Authorization": "Bearer coa_not_a_key"}, "Invalid API Key", ""),
        ({"Authorization": f"Basic {KEY}"}, "Invalid API Key", ""),
        ({"Authorization": f"Bearer {EXPIRED_KEY}"}, "Invalid API Key", "expired"),
    ],
    ids=["no-header", "empty-bearer", "unknown-key", "not-bearer", "expired-key"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/alert/trigger"),
        ("GET", "/v1/alert/alt_x/status"),
        ("POST", "/v1/alert/alt_x/acknowledge"),
        ("GET", "/v1/connection/test"),
    ],
    ids=["trigger", "status", "acknowledge", "connection-test"],
)
def test_a_missing_invalid_or_expired_key_is_401(
    coa: LiveSimulator, headers: dict[str, str], title: str, mention: str, method: str, path: str
) -> None:
    body = {"accountNumber": ACCOUNT, "eventCode": "BA", "phoneNumber": "+15550100001"}
    assert_error(coa.request(method, path, json=body, headers=headers), 401, title, mention)
    assert coa.request("GET", "/_sandbox/alerts").json() == []


def test_a_key_expires_on_the_simulated_clock(serve_simulator: ServeSimulator) -> None:
    expires_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    api_keys = {"coa_soon": {"accounts": ["1001"], "expires_at": expires_at}}
    sim = serve_simulator(callonalarm.create_app(config_with(api_keys=api_keys)))
    assert connection_test(sim, key="coa_soon").status_code == 200
    sim.advance_clock(3601)
    assert_error(connection_test(sim, key="coa_soon"), 401, "Invalid API Key", "expired")


def test_the_api_key_never_reaches_the_journal(coa: LiveSimulator) -> None:
    triggered(coa, "BA")
    assert KEY not in coa.request("GET", "/_sandbox/journal").text
    assert coa.journal()[0]["headers"]["Authorization"] == "Bearer ***"


# --- connection test --------------------------------------------------------------------------------


def test_connection_test_lists_the_keys_account_numbers(coa: LiveSimulator) -> None:
    response = connection_test(coa)
    assert response.status_code == 200
    assert response.json() == {
        "valid": True,
        "accountNumbers": ["1001", "1002", "1003", "1004", "1005", "9000"],
    }
    assert connection_test(coa, key=OTHER_KEY).json() == {"valid": True, "accountNumbers": ["2001"]}


# --- lifecycle: delay, calls, timeout, cancel, acknowledge -------------------------------------------


def test_seed_example_ia_delayed_then_ir_within_the_delay_cancels_the_calls(coa: LiveSimulator) -> None:
    alert = triggered(coa, "IA", zone="B34E", message="Server in rack B34E is offline")
    assert (alert["status"], alert["delaySeconds"], alert["technicalEmailSent"]) == ("call_delayed", 60, True)
    coa.advance_clock(30)
    restore = triggered(coa, "IR", zone="B34E")
    assert restore["status"] == "ignored"  # IR: action None, Cancel ticked

    cancelled = status(coa, alert["alertId"])
    assert list(cancelled) == STATUS_FIELDS
    assert (cancelled["status"], cancelled["callsMade"]) == ("cancelled", 0)
    assert cancelled["cancelledAt"] is not None
    assert parse_time(cancelled["cancelledAt"]) < parse_time(cancelled["callsStartAt"])
    coa.advance_clock(120)
    assert (status(coa, alert["alertId"])["status"], status(coa, alert["alertId"])["callsMade"]) == (
        "cancelled",
        0,
    )


def test_a_delayed_alert_starts_calling_when_the_delay_ends(coa: LiveSimulator) -> None:
    alert_id = triggered(coa, "IA")["alertId"]
    first = status(coa, alert_id)
    assert first == {
        "alertId": alert_id,
        "accountNumber": ACCOUNT,
        "eventCode": "IA",
        "zone": None,
        "status": "call_delayed",
        "createdAt": first["createdAt"],
        "callsStartAt": first["callsStartAt"],
        "acknowledgedAt": None,
        "acknowledgedBy": None,
        "cancelledAt": None,
        "callsMade": 0,
    }
    assert (parse_time(first["callsStartAt"]) - parse_time(first["createdAt"])).total_seconds() == 60
    coa.advance_clock(58)
    assert (status(coa, alert_id)["status"], status(coa, alert_id)["callsMade"]) == ("call_delayed", 0)
    coa.advance_clock(3)
    assert (status(coa, alert_id)["status"], status(coa, alert_id)["callsMade"]) == ("call_immediate", 1)


def test_calls_follow_the_ring_times_and_time_out_after_the_rounds(coa: LiveSimulator) -> None:
    alert_id = triggered(coa, "FA")["alertId"]
    seen = [(status(coa, alert_id)["status"], status(coa, alert_id)["callsMade"])]
    for step in (31, 25, 30, 25):  # calls at +0 (Alice), +30 (Bruno), +55, +85; last rings out at +110
        coa.advance_clock(step)
        polled = status(coa, alert_id)
        seen.append((polled["status"], polled["callsMade"]))
    assert seen == [
        ("call_immediate", 1),
        ("call_immediate", 2),
        ("call_immediate", 3),
        ("call_immediate", 4),
        ("timeout", 4),
    ]
    (view,) = coa.request("GET", "/_sandbox/alerts").json()
    assert [(call["round"], call["phoneNumber"]) for call in view["calls"]] == [
        (1, "+15550100001"),
        (1, "+15550100002"),
        (2, "+15550100001"),
        (2, "+15550100002"),
    ]
    assert view["calls"][1]["language"] == "fr"


def test_rounds_and_ring_time_come_from_the_configuration(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(callonalarm.create_app(config_with(ring_seconds=10, rounds=1)))
    response = trigger(sim, {"accountNumber": "2001", "eventCode": "FA"}, key=OTHER_KEY)
    alert_id = response.json()["alertId"]
    sim.advance_clock(11)
    polled = sim.request("GET", f"/v1/alert/{alert_id}/status", headers=auth(OTHER_KEY)).json()
    assert (polled["status"], polled["callsMade"]) == ("timeout", 1)


def test_a_restore_after_calls_started_is_cancelled_during_calls(coa: LiveSimulator) -> None:
    alert_id = triggered(coa, "IA")["alertId"]
    coa.advance_clock(65)
    assert status(coa, alert_id)["status"] == "call_immediate"
    triggered(coa, "IR")
    polled = status(coa, alert_id)
    assert (polled["status"], polled["callsMade"]) == ("cancelled_during_calls", 1)
    coa.advance_clock(300)
    assert status(coa, alert_id)["callsMade"] == 1


def test_a_cancel_code_cancels_only_pending_alerts_of_its_own_account(coa: LiveSimulator) -> None:
    answered = triggered(coa, "FA")["alertId"]
    assert acknowledge(coa, answered, {"phoneNumber": "+15550100001"}).status_code == 200
    pending = triggered(coa, "IA")["alertId"]
    elsewhere = trigger(coa, {"accountNumber": "2001", "eventCode": "BA"}, key=OTHER_KEY).json()["alertId"]

    triggered(coa, "BC")  # Burglary Cancel on 1001

    assert status(coa, answered)["status"] == "acknowledged"
    assert status(coa, pending)["status"] == "cancelled"
    other = coa.request("GET", f"/v1/alert/{elsewhere}/status", headers=auth(OTHER_KEY)).json()
    assert other["status"] == "call_immediate"


def test_an_inactive_connection_cancels_nothing(coa: LiveSimulator) -> None:
    assert triggered(coa, "IR", "1002")["status"] == "logged_inactive"


def test_acknowledge_ends_the_calls_and_a_second_acknowledge_is_400(coa: LiveSimulator) -> None:
    alert_id = triggered(coa, "FA")["alertId"]
    coa.advance_clock(35)
    first = acknowledge(coa, alert_id, {"phoneNumber": "+15550100002"})
    assert first.status_code == 200
    body = first.json()
    assert list(body) == STATUS_FIELDS
    assert (body["status"], body["acknowledgedBy"], body["callsMade"]) == ("acknowledged", "+15550100002", 2)
    assert body["acknowledgedAt"] is not None

    second = acknowledge(coa, alert_id, {"phoneNumber": "+15550100001"})
    assert_error(second, 400, "Alert Already Acknowledged")
    coa.advance_clock(600)
    assert status(coa, alert_id) == body


def test_acknowledge_during_the_delay_means_no_call_is_placed(coa: LiveSimulator) -> None:
    alert_id = triggered(coa, "IA")["alertId"]
    body = acknowledge(coa, alert_id, {"phoneNumber": "+15559999999"}).json()
    assert (body["status"], body["callsMade"], body["acknowledgedBy"]) == ("acknowledged", 0, "+15559999999")
    coa.advance_clock(200)
    assert status(coa, alert_id)["callsMade"] == 0


@pytest.mark.parametrize("ended", ["timeout", "cancelled", "ignored", "technical_only", "logged_inactive"])
def test_acknowledge_of_an_alert_that_is_not_running_is_400(coa: LiveSimulator, ended: str) -> None:
    code, account = {
        "timeout": ("FA", "1001"),
        "cancelled": ("IA", "1001"),
        "ignored": ("CL", "1001"),
        "technical_only": ("YT", "1001"),
        "logged_inactive": ("BA", "1002"),
    }[ended]
    alert_id = triggered(coa, code, account)["alertId"]
    if ended == "timeout":
        coa.advance_clock(111)
    if ended == "cancelled":
        triggered(coa, "IR")
    assert status(coa, alert_id)["status"] == ended
    assert_error(acknowledge(coa, alert_id, {"phoneNumber": "+15550100001"}), 400, "Bad Request", ended)


@pytest.mark.parametrize(
    ("body", "title"),
    [
        ({}, "Missing Required Fields"),
        ({"phoneNumber": ""}, "Missing Required Fields"),
        ({"phoneNumber": 15550100001}, "Bad Request"),
    ],
)
def test_acknowledge_needs_a_phone_number(coa: LiveSimulator, body: dict[str, Any], title: str) -> None:
    alert_id = triggered(coa, "FA")["alertId"]
    assert_error(acknowledge(coa, alert_id, body), 400, title, "phoneNumber")
    assert status(coa, alert_id)["status"] == "call_immediate"


def test_a_connection_out_of_credits_ends_failed_when_calls_should_start(coa: LiveSimulator) -> None:
    alert = triggered(coa, "IA", "1004")
    assert (alert["status"], alert["language"]) == ("call_delayed", "es")
    coa.advance_clock(61)
    polled = status(coa, alert["alertId"])
    assert (polled["status"], polled["callsMade"]) == ("failed", 0)


@pytest.mark.parametrize("action", ["status", "acknowledge"])
@pytest.mark.parametrize("owner", ["nobody", "another-key"])
def test_an_alert_the_key_cannot_see_is_404_alert_not_found(
    coa: LiveSimulator, action: str, owner: str
) -> None:
    alert_id = "alt_00000000000000000000"
    if owner == "another-key":
        alert_id = trigger(coa, {"accountNumber": "2001", "eventCode": "FA"}, key=OTHER_KEY).json()["alertId"]
    if action == "status":
        response = status_of(coa, alert_id)
    else:
        response = acknowledge(coa, alert_id, {"phoneNumber": "+15550100001"})
    assert_error(response, 404, "Alert Not Found", alert_id)


# --- rate limit ---------------------------------------------------------------------------------------


def rate_headers(response: requests.Response) -> tuple[int, int, int]:
    limit, remaining, reset = (int(response.headers[name]) for name in RATE_HEADERS)
    return limit, remaining, reset


def test_the_101st_request_in_an_hour_is_429_and_status_polls_count(coa: LiveSimulator) -> None:
    alert_id = triggered(coa, "FA")["alertId"]
    remaining = [rate_headers(status_of(coa, alert_id))[1] for _ in range(98)]
    hundredth = connection_test(coa)
    assert remaining == list(range(98, 0, -1))
    assert (hundredth.status_code, rate_headers(hundredth)[1]) == (200, 0)

    refused = status_of(coa, alert_id)
    assert_error(refused, 429, "Too Many Requests", "100")
    assert rate_headers(refused)[:2] == (100, 0)
    retry_after = int(refused.headers["Retry-After"])
    assert 3590 <= retry_after <= 3600
    assert abs(rate_headers(refused)[2] - (coa.state.clock.time() + retry_after)) <= 2

    assert status_of(coa, alert_id).status_code == 429  # a refused request is not counted...
    coa.advance_clock(retry_after)  # ...so the oldest request leaving the window frees a slot
    assert status_of(coa, alert_id).status_code == 200


def test_the_window_slides(coa: LiveSimulator) -> None:
    for _ in range(50):
        assert connection_test(coa).status_code == 200
    coa.advance_clock(1800)
    for _ in range(50):
        assert connection_test(coa).status_code == 200
    refused = connection_test(coa)
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1790 <= retry_after <= 1800  # the first half leaves the window half an hour from now

    coa.advance_clock(retry_after + 10)  # the first 50 are out, the second 50 are still in
    allowed = connection_test(coa)
    assert allowed.status_code == 200
    assert rate_headers(allowed)[1] == 49


def test_each_key_has_its_own_window(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(callonalarm.create_app(config_with(rate_limit_per_hour=3)))
    for _ in range(3):
        assert connection_test(sim).status_code == 200
    assert connection_test(sim).status_code == 429
    other = connection_test(sim, key=OTHER_KEY)
    assert (other.status_code, rate_headers(other)[:2]) == (200, (3, 2))


def test_every_vendor_answer_carries_the_rate_limit_headers(coa: LiveSimulator) -> None:
    alert_id = triggered(coa, "FA")["alertId"]
    coa.add_fault(method="GET", path="/v1/connection/test", status=500)
    answers = {
        "200 status": status_of(coa, alert_id),
        "200 acknowledge": acknowledge(coa, alert_id, {"phoneNumber": "+15550100001"}),
        "500 injected": connection_test(coa),
        "201 trigger": trigger(coa, {"accountNumber": ACCOUNT, "eventCode": "BA"}),
        "400 second acknowledge": acknowledge(coa, alert_id, {"phoneNumber": "+15550100001"}),
        "400 invalid code": trigger(coa, {"accountNumber": ACCOUNT, "eventCode": "??"}),
        "404 connection": trigger(coa, {"accountNumber": "9999", "eventCode": "BA"}),
        "404 path": coa.request("GET", "/v1/nowhere", headers=auth()),
        "404 method": coa.request("GET", callonalarm.TRIGGER_PATH, headers=auth()),
        "200 connection test again": connection_test(coa),
    }
    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses["500 injected"] == 500
    assert statuses["201 trigger"] == 201
    assert statuses["400 second acknowledge"] == statuses["400 invalid code"] == 400
    assert statuses["404 connection"] == statuses["404 path"] == statuses["404 method"] == 404
    remaining = []
    for name, response in answers.items():
        limit, left, reset = rate_headers(response)
        assert limit == 100, name
        assert reset >= coa.state.clock.time() - 1, name
        remaining.append(left)
    # Counted one by one (the trigger was the first), except the request the fault answered.
    assert remaining == [98, 97, 97, 96, 95, 94, 93, 92, 91, 90]

    unauthenticated = coa.request("GET", callonalarm.CONNECTION_TEST_PATH)
    assert unauthenticated.status_code == 401
    assert rate_headers(unauthenticated)[:2] == (100, 99)  # counted against the caller's address


def test_control_routes_are_not_rate_limited(coa: LiveSimulator) -> None:
    response = coa.request("GET", "/_sandbox/alerts")
    assert response.status_code == 200
    assert not set(RATE_HEADERS) & set(response.headers)
    assert connection_test(coa).headers["X-RateLimit-Remaining"] == "99"


# --- faults, errors, control views ----------------------------------------------------------------------


@pytest.mark.parametrize("status_code", [400, 401, 404, 429, 500])
def test_an_injected_status_uses_the_vendor_error_body(coa: LiveSimulator, status_code: int) -> None:
    coa.add_fault(method="POST", path=callonalarm.TRIGGER_PATH, status=status_code)
    response = trigger(coa, {"accountNumber": ACCOUNT, "eventCode": "BA"})
    title = {
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
    }[status_code]
    assert_error(response, status_code, title)
    assert set(RATE_HEADERS) <= set(response.headers)
    if status_code == 429:
        assert int(response.headers["Retry-After"]) >= 1
    assert coa.request("GET", "/_sandbox/alerts").json() == []
    assert trigger(coa, {"accountNumber": ACCOUNT, "eventCode": "BA"}).status_code == 201


def test_an_injected_429_keeps_its_own_retry_after(coa: LiveSimulator) -> None:
    coa.add_fault(status=429, headers={"Retry-After": "42"})
    assert connection_test(coa).headers["Retry-After"] == "42"


def test_a_trigger_that_times_out_after_commit_still_created_the_alert(coa: LiveSimulator) -> None:
    coa.add_fault(method="POST", timeout_after_commit=True, hold_s=30)
    with pytest.raises(requests.ReadTimeout):
        coa.request(
            "POST",
            callonalarm.TRIGGER_PATH,
            json={"accountNumber": ACCOUNT, "eventCode": "BA"},
            headers=auth(),
            timeout=(5, 0.5),
        )
    (view,) = coa.request("GET", "/_sandbox/alerts").json()
    assert view["status"] == "call_immediate"


def test_a_dropped_trigger_created_nothing(coa: LiveSimulator) -> None:
    coa.add_fault(method="POST", drop=True)
    with pytest.raises(requests.ConnectionError):
        trigger(coa, {"accountNumber": ACCOUNT, "eventCode": "BA"})
    assert coa.request("GET", "/_sandbox/alerts").json() == []


def test_a_wrong_method_is_404_in_the_vendor_shape(coa: LiveSimulator) -> None:
    response = coa.request("DELETE", "/v1/connection/test", headers=auth())
    assert_error(response, 404, "Not Found", "Cannot DELETE /v1/connection/test")


def test_the_alert_listing_shows_computed_statuses_and_filters(coa: LiveSimulator) -> None:
    delayed = triggered(coa, "IA")["alertId"]
    triggered(coa, "CL")
    trigger(coa, {"accountNumber": "2001", "eventCode": "FA"}, key=OTHER_KEY)
    coa.advance_clock(61)

    listing = coa.request("GET", "/_sandbox/alerts").json()
    assert [view["status"] for view in listing] == ["call_immediate", "ignored", "timeout"]  # 2001: 2 x 30 s
    assert set(STATUS_FIELDS) <= set(listing[0])
    assert listing[0]["trigger"]["status"] == "call_delayed"
    only = coa.request("GET", "/_sandbox/alerts", params={"accountNumber": "1001", "status": "ignored"})
    assert [view["eventCode"] for view in only.json()] == ["CL"]
    assert coa.request("GET", f"/_sandbox/alerts/{delayed}").json()["callsMade"] == 1
    assert coa.request("GET", "/_sandbox/alerts/alt_nope").status_code == 404

    usage = coa.request("GET", "/_sandbox/rate-limits").json()
    assert {entry["bucket"]: entry["used"] for entry in usage} == {"key:coa_***0001": 2, "key:coa_***0002": 1}


def test_reset_forgets_alerts_and_the_rate_windows(coa: LiveSimulator) -> None:
    alert_id = triggered(coa, "FA")["alertId"]
    coa.reset()
    assert coa.request("GET", "/_sandbox/alerts").json() == []
    assert_error(status_of(coa, alert_id), 404, "Alert Not Found")
    assert connection_test(coa).headers["X-RateLimit-Remaining"] == "98"  # the 404 above counted


# --- configuration ----------------------------------------------------------------------------------------


def test_the_default_rules_tick_cancel_on_every_restore_and_cancel_code() -> None:
    account = Settings.from_table(load_config()["callonalarm"]).accounts[ACCOUNT]
    restores_and_cancels = [
        code for code, description in SIA_CODES.items() if "Restor" in description or "Cancel" in description
    ]
    assert len(restores_and_cancels) > 50
    for code in [*restores_and_cancels, "OP", "OR", "NS", "YZ"]:
        rule = account.rule_for(code)
        assert rule is not None and rule.cancel, code
    for code in ("IA", "BA", "FA", "CL", "TE"):
        rule = account.rule_for(code)
        assert rule is not None and not rule.cancel, code


def _bad_delay(delay: Any) -> dict[str, Any]:
    return {"delay_rules": {"standard": {"delayed": {"IA": delay}}}}


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        (_bad_delay(7), "steps of 5"),
        (_bad_delay(5), "10-300"),
        (_bad_delay(305), "10-300"),
        ({"delay_rules": {"standard": {"instant": ["BA"], "delayed": {"BA": 30}}}}, "both"),
        ({"delay_rules": {"standard": {"cancel": ["NOPE"]}}}, "not SIA codes"),
    ],
)
def test_an_invalid_delay_rule_is_refused_at_start(changes: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        callonalarm.create_app(config_with(**changes))


@pytest.mark.parametrize(
    ("account", "complaint"),
    [
        ({"contacts": [{"phone": "+1"}], "custom_codes": {"BA": {"action": "instant"}}}, "collides"),
        ({"contacts": [{"phone": "+1"}], "custom_codes": {"lower": {"action": "instant"}}}, "A-Z"),
        ({"contacts": [{"phone": "+1"}], "custom_codes": {"TOO_LONG_CODE": {}}}, "2-10"),
        ({"contacts": [{"phone": "+1"}], "custom_codes": {"X1": {"description": "d" * 101}}}, "100"),
        ({"contacts": [{"phone": "+1"}], "language": "nl"}, "language"),
        ({"contacts": [{"phone": "+1"}], "delay_rule": "missing"}, "delay_rule"),
        ({"contacts": []}, "contact"),
    ],
)
def test_an_invalid_account_is_refused_at_start(account: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        callonalarm.create_app(config_with(accounts={"7777": account}, api_keys={}))


def test_a_key_naming_an_unknown_account_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="unknown accounts"):
        callonalarm.create_app(config_with(api_keys={"k": {"accounts": ["nope"]}}))
