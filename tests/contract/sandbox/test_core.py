"""The shared simulator core over real HTTP: journal masking, every fault kind, reset, clock, mounting.

A toy simulator built with `make_simulator` stands in for a vendor, so these tests pin the core's
behaviour independently of any one vendor's rules. It stores "things" that expire after `ttl_s` of
simulated time (computed lazily, as every simulator must) and reseeds them on reset.
"""

import json
import random
import threading
import time
from typing import Any

import pytest
import requests
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from sandbox.cad import app as cad
from sandbox.clock import Clock
from sandbox.journal import Journal, JournalEntry
from sandbox.server import combined_app, serve_in_thread
from sandbox.simulator import current_state, make_simulator
from tests.contract.sandbox.conftest import ServeSimulator
from tests.contract.sandbox.harness import LiveSimulator
from tests.polling import wait_until

pytestmark = pytest.mark.contract

TOY_CONFIG: dict[str, Any] = {"toy": {"seed": ["alpha"], "ttl_s": 60}}
THINGS = "/v1/things"


def toy_error(status: int, message: str) -> dict[str, Any]:
    """The toy vendor's error body (CallOnAlarm-like)."""
    return {"error": f"Toy {status}", "message": message, "path": request.path}


def create_toy_app(config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask:
    """A minimal simulator: POST/GET /v1/things, things expire after ttl_s simulated seconds."""
    app, state = make_simulator("toy", error_body=toy_error, config=config or TOY_CONFIG, clock=clock)
    lock = threading.Lock()
    things: dict[str, float] = {}

    def reseed() -> None:
        with lock:
            things.clear()
            things.update(dict.fromkeys(state.settings["seed"], state.clock.time()))

    state.on_reset(reseed)
    reseed()

    @app.post(THINGS)
    def create_thing() -> ResponseReturnValue:
        name = (request.get_json(silent=True) or {}).get("name")
        if not isinstance(name, str):
            return current_state().error_response(400, "name is required")
        with lock:
            things[name] = state.clock.time()
        return jsonify(name=name), 201

    @app.get(THINGS)
    def list_things() -> ResponseReturnValue:
        now = state.clock.time()
        with lock:
            alive = [name for name, born in things.items() if now - born < state.settings["ttl_s"]]
        return jsonify(alive)

    return app


@pytest.fixture
def toy(serve_simulator: ServeSimulator) -> LiveSimulator:
    """The toy simulator on its own server."""
    return serve_simulator(create_toy_app())


def names(sim: LiveSimulator) -> list[str]:
    response = sim.request("GET", THINGS)
    assert response.status_code == 200
    result: list[str] = response.json()
    return result


# --- journal -------------------------------------------------------------------------------------


def test_journal_records_requests_and_never_shows_secrets(toy: LiveSimulator) -> None:
    secrets = ["hdr-bearer-s3cr3t", "hdr-key-s3cr3t", "hdr-cookie-s3cr3t", "custom-s3cr3t", "query-s3cr3t"]
    secrets += ["body-password-s3cr3t", "body-nested-s3cr3t", "body-list-s3cr3t"]
    response = toy.request(
        "POST",
        THINGS,
        params={"token": "query-s3cr3t", "site": "north"},
        headers={
            "Authorization": "Bearer hdr-bearer-s3cr3t",
            "X-Api-Key": "hdr-key-s3cr3t",
            "Cookie": "va=hdr-cookie-s3cr3t",
            "X-Refresh-Token": "custom-s3cr3t",
        },
        json={
            "name": "beta",
            "password": "body-password-s3cr3t",
            "auth": {"client_secret": "body-nested-s3cr3t"},
            "grants": [{"refresh_token": "body-list-s3cr3t"}],
        },
    )
    assert response.status_code == 201

    raw = toy.request("GET", "/_sandbox/journal").text
    python_view = repr(toy.state.journal.entries())
    for secret in secrets:
        assert secret not in raw
        assert secret not in python_view
    (entry,) = toy.journal()
    assert entry["method"] == "POST"
    assert entry["path"] == THINGS
    assert entry["simulator"] == "toy"
    assert entry["query"] == {"token": ["***"], "site": ["north"]}
    assert entry["headers"]["Authorization"] == "Bearer ***"
    assert entry["headers"]["X-Api-Key"] == "***"
    assert entry["headers"]["X-Refresh-Token"] == "***"
    assert entry["body"] == {
        "name": "beta",
        "password": "***",
        "auth": {"client_secret": "***"},
        "grants": [{"refresh_token": "***"}],
    }
    assert entry["status"] == 201
    assert entry["fault"] is None


def test_journal_masks_form_bodies(toy: LiveSimulator) -> None:
    toy.request(
        "POST",
        THINGS,
        data={
            "grant_type": "password",
            "username": "ops",
            "password": "form-s3cr3t",
            "refresh_token": "rt-s3cr3t",
        },
    )
    raw = toy.request("GET", "/_sandbox/journal").text
    assert "form-s3cr3t" not in raw
    assert "rt-s3cr3t" not in raw
    (entry,) = toy.journal()
    assert entry["body"] == "grant_type=password&username=ops&password=***&refresh_token=***"
    assert entry["status"] == 400  # the toy wants JSON: the vendor error is journaled too


def test_journal_filters_and_clear_and_control_requests_are_not_journaled(toy: LiveSimulator) -> None:
    toy.request("POST", THINGS, json={"name": "a"})
    toy.request("GET", THINGS)
    toy.request("GET", "/v2/unknown")
    toy.request("GET", "/_sandbox/faults")

    assert [e["path"] for e in toy.journal()] == [THINGS, THINGS, "/v2/unknown"]
    assert [e["method"] for e in toy.journal(path="/v1/", method="get")] == ["GET"]
    assert [e.path for e in toy.state.journal.entries(path_prefix="/v2")] == ["/v2/unknown"]
    assert toy.request("DELETE", "/_sandbox/journal").status_code == 204
    assert toy.journal() == []


def test_the_journal_keeps_the_newest_entries_up_to_its_cap() -> None:
    journal = Journal(max_entries=2)
    for path in ("/a", "/b", "/c"):
        journal.record(
            JournalEntry(
                at=Clock().now(), simulator="toy", method="GET", path=path, query={}, headers={}, body=None
            )
        )
    assert [(e.seq, e.path) for e in journal.entries()] == [(2, "/b"), (3, "/c")]


def test_unknown_paths_and_methods_get_the_vendor_error_body(toy: LiveSimulator) -> None:
    missing = toy.request("GET", "/v2/unknown")
    assert missing.status_code == 404
    assert missing.json()["error"] == "Toy 404"
    wrong_method = toy.request("DELETE", THINGS)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["path"] == THINGS
    assert "GET" in wrong_method.headers["Allow"]


# --- faults --------------------------------------------------------------------------------------


def test_status_fault_answers_the_vendor_error_with_headers_for_n_requests_then_normal(
    toy: LiveSimulator,
) -> None:
    toy.add_fault(method="POST", path=THINGS, count=2, status=503, headers={"Retry-After": "7"})

    for attempt in ("x1", "x2"):
        response = toy.request("POST", THINGS, json={"name": attempt})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json() == {"error": "Toy 503", "message": "Service Unavailable", "path": THINGS}
    assert toy.request("GET", THINGS).status_code == 200  # another method: not caught
    assert toy.request("POST", THINGS, json={"name": "x3"}).status_code == 201  # used up

    assert names(toy) == ["alpha", "x3"]  # faulted requests were not handled
    assert toy.request("GET", "/_sandbox/faults").json() == []
    assert [e["fault"] for e in toy.journal(method="POST")] == ["status", "status", None]
    assert [e["status"] for e in toy.journal(method="POST")] == [503, 503, 201]


def test_status_fault_body_override_and_path_regex(toy: LiveSimulator) -> None:
    toy.add_fault(path_regex=r"^/v1/th.ngs$", status=429, body={"custom": True})
    response = toy.request("GET", THINGS)
    assert response.status_code == 429
    assert response.json() == {"custom": True}


def test_faults_are_consumed_in_registration_order(toy: LiveSimulator) -> None:
    toy.add_fault(path=THINGS, status=503)
    toy.add_fault(path="/v1/", status=429, count=2)
    assert [toy.request("GET", THINGS).status_code for _ in range(4)] == [503, 429, 429, 200]


def test_delay_fault_delays_then_handles(toy: LiveSimulator) -> None:
    toy.add_fault(method="POST", delay_s=0.2)
    started = time.monotonic()
    response = toy.request("POST", THINGS, json={"name": "slow"})
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 201
    assert "slow" in names(toy)


def test_a_delay_range_draws_each_wait_between_its_bounds_from_its_seed(toy: LiveSimulator) -> None:
    """A vendor whose latency varies (make soak): each caught request waits delay_s..delay_max_s."""
    toy.add_fault(method="POST", delay_s=0.05, delay_max_s=0.25, count=6, seed=7)
    waits = []
    for n in range(6):
        started = time.monotonic()
        assert toy.request("POST", THINGS, json={"name": f"varied-{n}"}).status_code == 201
        waits.append(time.monotonic() - started)
    expected = random.Random(7)
    drawn = [expected.uniform(0.05, 0.25) for _ in range(6)]
    assert all(wait >= draw for wait, draw in zip(waits, drawn, strict=True))
    assert max(drawn) - min(drawn) > 0.05  # not one fixed delay


def test_drop_fault_closes_the_connection_without_handling(toy: LiveSimulator) -> None:
    toy.add_fault(method="POST", path=THINGS, drop=True)
    with pytest.raises(requests.ConnectionError):
        toy.request("POST", THINGS, json={"name": "dropped"})

    assert names(toy) == ["alpha"]
    (entry,) = toy.journal(method="POST")
    assert entry["fault"] == "drop"
    assert entry["status"] is None
    assert toy.request("POST", THINGS, json={"name": "after"}).status_code == 201


def test_timeout_after_commit_does_the_work_but_never_answers(toy: LiveSimulator) -> None:
    toy.add_fault(method="POST", timeout_after_commit=True, hold_s=30)
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        toy.request("POST", THINGS, json={"name": "committed"}, timeout=(5, 0.5))
    assert time.monotonic() - started < 10  # the client's timeout, not the 30 s hold

    wait_until(lambda: "committed" in names(toy), timeout_s=5)
    wait_until(lambda: toy.journal(method="POST")[0]["status"] == 201, timeout_s=5)
    assert toy.journal(method="POST")[0]["fault"] == "timeout_after_commit"


def test_timeout_after_commit_drops_after_the_hold(toy: LiveSimulator) -> None:
    toy.add_fault(method="POST", timeout_after_commit=True, hold_s=0)
    with pytest.raises(requests.ConnectionError):
        toy.request("POST", THINGS, json={"name": "held"})
    assert "held" in names(toy)


def caught_by(seed: int, probability: float, requests_sent: int) -> list[bool]:
    """Which of the next requests a fault of this seed and probability catches (its documented draws)."""
    draws = random.Random(seed)
    return [draws.random() < probability for _ in range(requests_sent)]


def test_a_probabilistic_fault_catches_the_requests_its_seeded_draws_pick(toy: LiveSimulator) -> None:
    added = toy.add_fault(method="POST", path=THINGS, status=503, probability=0.3, count=1000, seed=42)
    assert (added["probability"], added["seed"], added["count"]) == (0.3, 42, 1000)

    statuses = [toy.request("POST", THINGS, json={"name": f"n{i}"}).status_code for i in range(60)]

    expected = caught_by(42, 0.3, 60)
    assert [status == 503 for status in statuses] == expected
    assert 5 <= sum(expected) <= 35  # a storm, not every request and not none
    assert [e["fault"] == "status" for e in toy.journal(method="POST")] == expected
    assert toy.request("GET", THINGS).status_code == 200  # another method: never drawn for
    (left,) = toy.request("GET", "/_sandbox/faults").json()
    assert left["count"] == 1000 - sum(expected)  # count counts applications, not matches


def test_a_probabilistic_fault_is_used_up_after_count_applications(toy: LiveSimulator) -> None:
    toy.add_fault(method="POST", status=429, headers={"Retry-After": "1"}, probability=0.5, count=3, seed=5)

    statuses = [toy.request("POST", THINGS, json={"name": f"n{i}"}).status_code for i in range(40)]

    assert statuses.count(429) == 3
    draws = caught_by(5, 0.5, 40)
    third = [i for i, caught in enumerate(draws) if caught][2]
    assert [status == 429 for status in statuses[: third + 1]] == draws[: third + 1]
    assert set(statuses[third + 1 :]) == {201}
    assert toy.request("GET", "/_sandbox/faults").json() == []


def test_the_same_seed_replays_the_same_faults_and_the_default_seed_is_the_fault_id(
    toy: LiveSimulator,
) -> None:
    def run(**fault: Any) -> list[int]:
        toy.request("DELETE", "/_sandbox/faults")
        toy.add_fault(method="GET", status=500, probability=0.4, count=100, **fault)
        return [toy.request("GET", THINGS).status_code for _ in range(30)]

    assert run(seed=9) == run(seed=9)
    first_id = toy.add_fault(method="PUT", status=500)["id"] + 1  # the next fault's id
    toy.request("DELETE", "/_sandbox/faults")
    by_default = run()
    assert [status == 500 for status in by_default] == caught_by(first_id, 0.4, 30)


def test_a_request_a_probabilistic_fault_lets_through_goes_to_the_next_fault(toy: LiveSimulator) -> None:
    toy.add_fault(path=THINGS, status=503, probability=0.5, count=1000, seed=1)
    toy.add_fault(path=THINGS, status=429, count=1000)  # probability 1: takes whatever the first leaves

    statuses = [toy.request("GET", THINGS).status_code for _ in range(20)]

    assert [503 if caught else 429 for caught in caught_by(1, 0.5, 20)] == statuses


@pytest.mark.parametrize(
    "fault",
    [
        {},
        {"status": 503, "drop": True},
        {"status": 99},
        {"delay_s": -1},
        {"delay_max_s": 1},
        {"delay_s": 0.5, "delay_max_s": 0.1},
        {"drop": "yes"},
        {"status": 503, "count": 0},
        {"status": 503, "path_regex": "("},
        {"status": 503, "colour": "red"},
        {"status": 503, "probability": 0},
        {"status": 503, "probability": 1.5},
        {"status": 503, "probability": "half"},
        {"status": 503, "probability": True},
        {"status": 503, "seed": "seven"},
        {"status": 503, "seed": 1.5},
        [],
    ],
)
def test_invalid_faults_are_refused(toy: LiveSimulator, fault: Any) -> None:
    response = toy.request("POST", "/_sandbox/faults", json=fault)
    assert response.status_code == 400
    assert "error" in response.json()


def test_control_endpoints_are_never_faulted(toy: LiveSimulator) -> None:
    toy.add_fault(status=500, count=5)
    assert toy.request("GET", "/_sandbox/journal").status_code == 200
    assert toy.request("GET", "/_sandbox/clock").status_code == 200
    assert toy.request("GET", "/_sandbox/faults").json()[0]["count"] == 5
    assert toy.request("DELETE", "/_sandbox/faults").status_code == 204
    assert toy.request("GET", THINGS).status_code == 200


# --- clock and reset -----------------------------------------------------------------------------


def test_clock_advance_moves_lazy_state_and_journal_time(toy: LiveSimulator) -> None:
    before = toy.request("GET", "/_sandbox/clock").json()
    assert before["offset_s"] == 0
    toy.request("POST", THINGS, json={"name": "young"})

    after = toy.advance_clock(59)
    assert after["offset_s"] == 59
    assert after["time"] - before["time"] >= 59
    toy.advance_clock(1.5)

    assert names(toy) == []  # alpha and young are older than ttl_s now
    last = toy.journal()[-1]
    assert last["at"] > toy.journal()[0]["at"]
    assert toy.request("POST", "/_sandbox/clock", json={"advance_s": -5}).status_code == 400
    assert toy.request("POST", "/_sandbox/clock", json={"advance": 5}).status_code == 400


def test_reset_clears_journal_faults_clock_and_reseeds_data(toy: LiveSimulator) -> None:
    toy.request("POST", THINGS, json={"name": "temporary"})
    toy.add_fault(status=503)
    toy.advance_clock(3600)

    toy.reset()

    assert toy.journal() == []
    assert toy.request("GET", "/_sandbox/faults").json() == []
    assert toy.request("GET", "/_sandbox/clock").json()["offset_s"] == 0
    assert names(toy) == ["alpha"]


def test_state_is_reachable_from_python(toy: LiveSimulator) -> None:
    toy.state.clock.advance(120)
    assert toy.request("GET", "/_sandbox/clock").json()["offset_s"] == 120
    toy.state.reset()
    assert toy.state.clock.offset_s == 0
    assert toy.state.settings == TOY_CONFIG["toy"]


# --- combined server -----------------------------------------------------------------------------


def test_combined_server_mounts_each_simulator_under_its_prefix(http: requests.Session) -> None:
    shared = Clock()
    apps = {"toy": create_toy_app(clock=shared), "cad": cad.create_app(clock=shared)}
    with serve_in_thread(combined_app(apps)) as server:
        base = server.base_url
        assert http.request("GET", base + "/", timeout=5).json() == {"toy": "/toy", "cad": "/cad"}
        assert http.request("GET", base + "/elsewhere", timeout=5).status_code == 404

        http.request("POST", base + "/toy/_sandbox/faults", json={"status": 502}, timeout=5)
        assert http.request("GET", base + "/toy" + THINGS, timeout=5).status_code == 502
        assert http.request("GET", base + "/toy" + THINGS, timeout=5).json() == ["alpha"]
        unauthorized = http.request("PUT", base + "/cad" + cad.INCIDENT_PATH, json={"sysId": "x"}, timeout=5)
        assert unauthorized.status_code == 401  # the toy's fault did not leak to the CAD

        toy_journal = http.request("GET", base + "/toy/_sandbox/journal", timeout=5).json()
        assert [e["path"] for e in toy_journal] == [THINGS, THINGS]
        cad_journal = http.request("GET", base + "/cad/_sandbox/journal", timeout=5).json()
        assert [e["path"] for e in cad_journal] == [cad.INCIDENT_PATH]

        http.request("POST", base + "/cad/_sandbox/clock", json={"advance_s": 30}, timeout=5)
        assert http.request("GET", base + "/toy/_sandbox/clock", timeout=5).json()["offset_s"] == 30


def test_journal_json_is_plain_json(toy: LiveSimulator) -> None:
    toy.request("POST", THINGS, data="not json at all", headers={"Content-Type": "text/plain"})
    (entry,) = toy.journal()
    assert entry["body"] == "not json at all"
    json.dumps(entry)  # round-trips
