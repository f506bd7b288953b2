"""CallOnAlarmClient against the CallOnAlarm simulator over real loopback HTTP (seed 001; CONTRACTS
Part A items 10-12).

The simulator's default configuration: key coa_sandbox_key_0001 holds account 1001 (BA instant, IA
delayed 60 s, IR cancels; contacts ring 30 s and 25 s, two rounds) and 1002 (inactive).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import requests
from limits.storage import MemoryStorage

from config.settings import ConfigurationError, Settings
from sandbox.callonalarm import create_app
from sandbox.server import RunningServer, serve_in_thread
from vendors.callonalarm.budget import HourlyBudget
from vendors.callonalarm.client import CallOnAlarmClient
from vendors.callonalarm.settings import CallOnAlarmSettings
from workers.clients.errors import (
    BudgetExhaustedError,
    OutcomeUnknownError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)

pytestmark = pytest.mark.contract

ACCOUNT = "1001"
INACTIVE_ACCOUNT = "1002"


class Sandbox:
    """The running simulator and its control API."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.http = requests.Session()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, self.base_url + path, timeout=5, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def fault(self, **fault: Any) -> None:
        self.control("POST", "/_sandbox/faults", json=fault)

    def advance(self, seconds: float) -> None:
        self.control("POST", "/_sandbox/clock", json={"advance_s": seconds})

    def journal(self, **filters: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.control("GET", "/_sandbox/journal", params=filters)
        return entries

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.control("GET", "/_sandbox/alerts")
        return alerts


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    server = serve_in_thread(create_app(), port=0)
    live = Sandbox(server)
    yield live
    live.http.close()
    server.stop()


@pytest.fixture
def cache() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def make_client(sandbox: Sandbox, cache: fakeredis.FakeRedis) -> Iterator[Callable[..., CallOnAlarmClient]]:
    """Clients of the sandbox sharing one fake Redis; settings overridable per client."""
    made: list[CallOnAlarmClient] = []

    def build(vendor: dict[str, Any] | None = None, **overrides: Any) -> CallOnAlarmClient:
        """``vendor``: CallOnAlarmSettings fields other than its URL; ``overrides``: Settings fields."""
        values: dict[str, Any] = {"http_read_timeout_s": 5.0}
        values.update(overrides)
        callonalarm = CallOnAlarmSettings(base_url=sandbox.base_url, **(vendor or {}))
        client = CallOnAlarmClient.from_settings(Settings(**values).with_vendor(callonalarm), cache)
        made.append(client)
        return client

    yield build
    for client in made:
        client.session.close()


@pytest.fixture
def client(make_client: Callable[..., CallOnAlarmClient]) -> CallOnAlarmClient:
    return make_client()


def test_trigger_creates_an_alert_and_sends_the_key_as_bearer(
    client: CallOnAlarmClient, sandbox: Sandbox
) -> None:
    trigger = client.trigger(ACCOUNT, "BA", zone="3", message="Burglary Alarm, zone 3")

    assert trigger.alert_id.startswith("alt_")
    assert trigger.status == "call_immediate"
    assert trigger.requires_calls is True
    assert trigger.contacts_to_call == 2
    assert trigger.delay_seconds == 0
    assert not trigger.is_final
    [entry] = sandbox.journal(path="/v1/alert/trigger")
    assert entry["method"] == "POST"
    assert entry["headers"]["Authorization"].startswith("Bearer ")
    assert "coa_sandbox_key_0001" not in str(entry["headers"])
    assert entry["body"] == {
        "accountNumber": ACCOUNT,
        "eventCode": "BA",
        "zone": "3",
        "message": "Burglary Alarm, zone 3",
    }


def test_trigger_leaves_out_an_empty_zone_and_message(client: CallOnAlarmClient, sandbox: Sandbox) -> None:
    client.trigger(ACCOUNT, "BA")

    [entry] = sandbox.journal(path="/v1/alert/trigger")
    assert entry["body"] == {"accountNumber": ACCOUNT, "eventCode": "BA"}


def test_status_follows_the_delay_then_the_calls_then_timeout(
    client: CallOnAlarmClient, sandbox: Sandbox
) -> None:
    trigger = client.trigger(ACCOUNT, "IA", zone="rack B34E")
    assert (trigger.status, trigger.delay_seconds) == ("call_delayed", 60)

    delayed = client.status(trigger.alert_id)
    assert delayed.status == "call_delayed"
    assert not delayed.is_final
    assert delayed.calls_start_at is not None
    assert delayed.calls_start_at.tzinfo is not None
    sandbox.advance(61)
    assert client.status(trigger.alert_id).status == "call_immediate"
    sandbox.advance(200)
    ended = client.status(trigger.alert_id)
    assert ended.status == "timeout"
    assert ended.is_final
    assert ended.calls_made == 4


def test_restore_within_the_delay_cancels_the_calls_as_in_the_seed(
    client: CallOnAlarmClient, sandbox: Sandbox
) -> None:
    alarm = client.trigger(ACCOUNT, "IA")
    sandbox.advance(30)
    client.trigger(ACCOUNT, "IR")

    status = client.status(alarm.alert_id)
    assert status.status == "cancelled"
    assert status.cancelled_at is not None
    assert status.calls_made == 0


def test_acknowledge_records_who_and_a_repeat_is_not_an_error(
    client: CallOnAlarmClient, sandbox: Sandbox
) -> None:
    alert = client.trigger(ACCOUNT, "BA")

    first = client.acknowledge(alert.alert_id, "+15550100001")
    again = client.acknowledge(alert.alert_id, "+15550100001")

    assert first.status == again.status == "acknowledged"
    assert first.acknowledged_by == "+15550100001"
    assert first.acknowledged_at is not None
    assert again.acknowledged_by == "+15550100001"


def test_acknowledging_an_ended_alert_is_rejected(client: CallOnAlarmClient, sandbox: Sandbox) -> None:
    alert = client.trigger(ACCOUNT, "IA")
    client.trigger(ACCOUNT, "IR")

    with pytest.raises(UpstreamRejectedError) as caught:
        client.acknowledge(alert.alert_id, "+15550100001")
    assert caught.value.status == 400


def test_inactive_connection_is_final_at_once(client: CallOnAlarmClient) -> None:
    trigger = client.trigger(INACTIVE_ACCOUNT, "BA")

    assert trigger.status == "logged_inactive"
    assert trigger.is_final
    assert trigger.requires_calls is False


def test_connection_test_lists_the_keys_accounts(client: CallOnAlarmClient) -> None:
    result = client.test_connection()

    assert result.valid is True
    assert ACCOUNT in result.account_numbers


def test_unknown_event_code_is_rejected_with_400(client: CallOnAlarmClient) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        client.trigger(ACCOUNT, "ZZZZ")
    assert caught.value.status == 400
    assert "Invalid eventCode" in str(caught.value)


def test_invalid_key_is_rejected_with_401(make_client: Callable[..., CallOnAlarmClient]) -> None:
    client = make_client({"api_key": "coa_not_a_key"})

    with pytest.raises(UpstreamRejectedError) as caught:
        client.trigger(ACCOUNT, "BA")
    assert caught.value.status == 401


def test_expired_key_on_the_sandbox_clock_is_a_permanent_401(
    make_client: Callable[..., CallOnAlarmClient],
) -> None:
    # A static API key cannot be renewed by the client: a person must issue a new one.
    client = make_client({"api_key": "coa_sandbox_key_expired"})

    with pytest.raises(UpstreamRejectedError) as caught:
        client.test_connection()
    assert caught.value.status == 401


def test_unknown_alert_is_rejected_with_404(client: CallOnAlarmClient) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        client.status("alt_00000000000000000000")
    assert caught.value.status == 404


def test_server_error_is_unavailable(client: CallOnAlarmClient, sandbox: Sandbox) -> None:
    sandbox.fault(path="/v1/alert/trigger", status=503)

    with pytest.raises(UpstreamUnavailableError):
        client.trigger(ACCOUNT, "BA")
    assert sandbox.alerts() == []


def test_429_carries_retry_after_and_makes_every_worker_wait(
    make_client: Callable[..., CallOnAlarmClient], sandbox: Sandbox
) -> None:
    first, second = make_client(), make_client()
    sandbox.fault(path="/v1/alert/trigger", status=429, headers={"Retry-After": "17"})

    with pytest.raises(UpstreamUnavailableError) as caught:
        first.trigger(ACCOUNT, "BA")
    assert caught.value.retry_after_s == 17

    # The other worker does not send a request the vendor would refuse; it waits without an attempt.
    with pytest.raises(BudgetExhaustedError) as waiting:
        second.trigger(ACCOUNT, "BA")
    assert 1 <= waiting.value.retry_after_s <= 17
    assert len(sandbox.journal(path="/v1/alert/trigger")) == 1


def test_answer_lost_after_the_trigger_is_outcome_unknown_and_the_alert_exists(
    make_client: Callable[..., CallOnAlarmClient], sandbox: Sandbox
) -> None:
    client = make_client(http_read_timeout_s=0.5)
    sandbox.fault(path="/v1/alert/trigger", timeout_after_commit=True, hold_s=5)

    with pytest.raises(OutcomeUnknownError):
        client.trigger(ACCOUNT, "BA")
    # CallOnAlarm offers no lookup to reconcile with: the alert is there, and a retry would call
    # again (the task's documented rule: a duplicate call is safer than none).
    assert [alert["eventCode"] for alert in sandbox.alerts()] == ["BA"]


def test_lost_status_answer_is_only_unavailable(
    make_client: Callable[..., CallOnAlarmClient], sandbox: Sandbox
) -> None:
    client = make_client(http_read_timeout_s=0.5)
    alert = client.trigger(ACCOUNT, "BA")
    sandbox.fault(path=f"/v1/alert/{alert.alert_id}/status", timeout_after_commit=True, hold_s=5)

    with pytest.raises(UpstreamUnavailableError):
        client.status(alert.alert_id)


def test_the_101st_request_of_the_hour_is_not_sent(
    make_client: Callable[..., CallOnAlarmClient], sandbox: Sandbox
) -> None:
    # Two workers of one deployment share the budget through Redis.
    workers = [make_client({"life_safety_reserve": 0}), make_client({"life_safety_reserve": 0})]
    alert = workers[0].trigger(ACCOUNT, "BA")
    for n in range(99):
        workers[n % 2].status(alert.alert_id)

    with pytest.raises(BudgetExhaustedError) as caught:
        workers[1].status(alert.alert_id)

    assert 3500 < caught.value.retry_after_s <= 3600
    assert len(sandbox.journal()) == 100


def test_polls_leave_the_life_safety_reserve_to_the_calls(
    make_client: Callable[..., CallOnAlarmClient], sandbox: Sandbox
) -> None:
    # 100 an hour, 20 kept: polls (and non-urgent triggers) stop at 80; an urgent trigger goes on.
    workers = [make_client(), make_client()]
    alert = workers[0].trigger(ACCOUNT, "BA", urgent=False)
    for n in range(79):
        workers[n % 2].status(alert.alert_id)

    with pytest.raises(BudgetExhaustedError) as caught:
        workers[1].status(alert.alert_id)
    assert "the last 20 are kept for life-safety calls" in caught.value.reason
    assert 3500 < caught.value.retry_after_s <= 3600
    with pytest.raises(BudgetExhaustedError):
        workers[0].trigger(ACCOUNT, "BA", urgent=False)

    for _ in range(20):
        workers[0].trigger(ACCOUNT, "FA")
    with pytest.raises(BudgetExhaustedError):
        workers[1].trigger(ACCOUNT, "FA")
    assert len(sandbox.journal()) == 100


def test_a_request_kept_from_the_reserve_waits_for_its_own_unit_not_the_oldest(
    cache: fakeredis.FakeRedis,
) -> None:
    # 5 an hour, 2 kept: a poll may go once the third newest entry leaves the window, not the oldest;
    # told the oldest, it would wake and be refused again, a task and a round trip each time.
    budget = HourlyBudget.from_redis(cache, "test:ab:callonalarm:reserve", 5)
    for _ in range(4):
        budget.take()
        time.sleep(0.05)  # distinct entry times, so that which entry frees first shows

    with pytest.raises(BudgetExhaustedError) as kept:
        budget.take(reserve=2)  # 4 of 5 taken, 2 kept: waits for the second entry, not the first
    budget.take()
    with pytest.raises(BudgetExhaustedError) as full:
        budget.take()  # a full window waits for the first

    assert kept.value.retry_after_s > full.value.retry_after_s + 0.03


def test_a_reserve_as_large_as_the_budget_is_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match="CALLONALARM_LIFE_SAFETY_RESERVE"):
        CallOnAlarmSettings(hourly_budget=20, life_safety_reserve=20)


def test_another_deployment_has_its_own_budget(
    make_client: Callable[..., CallOnAlarmClient],
) -> None:
    spent = make_client({"hourly_budget": 1, "life_safety_reserve": 0})
    spent.test_connection()
    with pytest.raises(BudgetExhaustedError):
        spent.test_connection()

    other = make_client({"hourly_budget": 1, "life_safety_reserve": 0}, broker_key_prefix="other:")
    assert other.test_connection().valid


def test_budget_refuses_the_101st_unit_until_the_oldest_leaves_the_window(
    cache: fakeredis.FakeRedis,
) -> None:
    budget = HourlyBudget.from_redis(cache, "test:ab:callonalarm:budget", 100)
    for _ in range(100):
        budget.take()

    with pytest.raises(BudgetExhaustedError) as caught:
        budget.take()

    assert caught.value.reason == "CallOnAlarm hourly budget spent (100/h)"
    assert 3590 < caught.value.retry_after_s <= 3600
    assert budget.remaining() == 0
    assert cache.keys("test:ab:callonalarm:budget*")  # shared through Redis, under the deployment prefix


def test_budget_storage_is_injectable() -> None:
    budget = HourlyBudget(MemoryStorage(), per_hour=1)
    budget.take()

    with pytest.raises(BudgetExhaustedError):
        budget.take()
