"""Reconcile the ledger against what the sandbox upstreams hold: nothing lost, nothing created twice.

``reconcile()`` reads every event, alarm, action and timeline entry of the ledger, and the objects the
simulators stored, and checks:

1. every event intake answered 2xx is in the ledger, attached to the alarm intake named;
2. every action reached the terminal state its plan expects (``expect``: kind -> state);
3. every step that creates something upstream has its object there, found by the key the client
   sends with it, and not twice:
   - ``tracktik.create_alarm``: exactly one TrackTik alarm whose first note is ``alarm-bridge ref
     <idempotency key>`` (a retry adopts it instead of creating another), and it is the one the
     action recorded;
   - ``cad.upload_incident``: exactly one incident with the alarm's ``sysId`` (the CAD dedupes on it);
   - ``rapidsos.create_alert`` (``source_id`` = ``alarm-bridge-<alarm id>``) and
     ``callonalarm.trigger`` (account and zone of the alarm): at least one; these vendors offer no
     dedupe, so the bridge deliberately sends again after an unknown outcome (see
     vendors/rapidsos/tasks.py and vendors/callonalarm/tasks.py) — more than one is allowed only as
     many times as the ledger recorded an attempt whose outcome was unknown;
   - no upstream object that no action of the ledger accounts for.

It prints a short summary and raises AssertionError listing the first problems.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from sqlalchemy import Engine, select

from app.ledger.models import Action, Alarm, Event, TimelineEntry
from tests.reliability.faultstack import Posted
from vendors.cad import steps as cad_steps
from vendors.cad.tasks import sys_id_for
from vendors.callonalarm import steps as callonalarm_steps
from vendors.rapidsos import steps as rapidsos_steps
from vendors.tracktik import steps as tracktik_steps
from vendors.tracktik.alarms import REF_PREFIX

# What a step of the fault suite's plans must end as when nothing is refused for good.
ALL_SUCCEED: Mapping[str, str] = {
    tracktik_steps.CREATE_ALARM: "succeeded",
    cad_steps.UPLOAD_INCIDENT: "succeeded",
    rapidsos_steps.CREATE_ALERT: "succeeded",
    callonalarm_steps.TRIGGER: "succeeded",
}
# Timeline messages of a retry whose previous attempt may have reached the upstream
# (workers/clients/base.py's OutcomeUnknownError texts, and perform()'s time limit).
UNKNOWN_OUTCOME_MARKERS = (
    "connection lost after send",
    "no answer within the timeout",
    "from a gateway",
    "after send",
    "unreadable create answer",
    "task time limit reached",
)
MAX_PROBLEMS_SHOWN = 15


@dataclass
class Report:
    """What the reconciliation found; ``problems`` empty means the case holds."""

    accepted: int = 0
    events: int = 0
    alarms: int = 0
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)
    upstream: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)  # extra attempts per kind (retries)
    most_attempts: int = 0
    slowest_s: float = 0.0  # the longest a step took from its creation to its end
    adopted: int = 0  # TrackTik alarms found by their ref after an unknown outcome
    unknown_outcomes: int = 0  # attempts the ledger recorded as "may have reached the upstream"
    resent_without_dedupe: int = 0  # RapidSOS/CallOnAlarm objects beyond the first, all accounted for
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        states = ", ".join(f"{kind}={state}:{n}" for (kind, state), n in sorted(self.actions.items()))
        upstream = ", ".join(f"{name}:{n}" for name, n in sorted(self.upstream.items()))
        retries = ", ".join(f"{kind}:{n}" for kind, n in sorted(self.attempts.items()) if n)
        return (
            f"reconcile: {self.accepted} accepted events, {self.events} in the ledger, {self.alarms} alarms; "
            f"actions {states}; upstream objects {upstream}; retries {retries or 'none'}; "
            f"{self.unknown_outcomes} unknown outcomes, {self.adopted} TrackTik alarms adopted, "
            f"{self.resent_without_dedupe} deliberate re-sends; slowest step {self.slowest_s:.1f}s, "
            f"most attempts {self.most_attempts}; {len(self.problems)} problems"
        )


def reconcile(
    engine: Engine,
    sandbox_url: str,
    posted: Iterable[Posted],
    *,
    expect: Mapping[str, str] = ALL_SUCCEED,
    http: requests.Session | None = None,
) -> Report:
    """Check the ledger against the sandbox (module docstring); print the summary; raise on problems."""
    report = Report()
    accepted = [p for p in posted if p.accepted]
    report.accepted = len(accepted)
    with engine.connect() as conn:
        events = {
            row.sender_event_id: row for row in conn.execute(select(Event.sender_event_id, Event.alarm_id))
        }
        alarms = {row.id: row for row in conn.execute(select(Alarm.id, Alarm.zone, Alarm.refs))}
        actions = list(conn.execute(select(Action)).mappings())
        retries = list(
            conn.execute(
                select(TimelineEntry.action_id, TimelineEntry.message).where(
                    TimelineEntry.kind == "action.retry_scheduled"
                )
            )
        )
    report.events, report.alarms = len(events), len(alarms)
    _check_events(report, accepted, events)

    retried: dict[int, list[str]] = defaultdict(list)
    for action_id, message in retries:
        retried[action_id].append(message)
    unknown: dict[int, int] = {}
    for action in actions:
        report.actions[(action["kind"], action["state"])] += 1
        report.attempts[action["kind"]] += max(0, action["attempts"] - 1)
        report.most_attempts = max(report.most_attempts, action["attempts"])
        if action["completed_at"] is not None:
            took = (action["completed_at"] - action["created_at"]).total_seconds()
            report.slowest_s = max(report.slowest_s, took)
        unknown[action["id"]] = _unknown_attempts(action, retried[action["id"]])
        report.unknown_outcomes += unknown[action["id"]]
        wanted = expect.get(action["kind"])
        if wanted is None:
            report.problems.append(f"action {action['id']}: unexpected kind {action['kind']}")
        elif action["state"] != wanted:
            report.problems.append(
                f"action {action['id']} ({action['kind']}, alarm {action['alarm_id']}) is {action['state']}, "
                f"expected {wanted}; attempts {action['attempts']}, last error {action['last_error']!r}"
            )

    session = http or requests.Session()
    try:
        _check_tracktik(report, actions, _get(session, sandbox_url, "/tracktik/_sandbox/alarms"))
        _check_cad(report, actions, _get(session, sandbox_url, "/cad/_sandbox/incidents"))
        _check_resent(
            report,
            actions,
            unknown,
            rapidsos_steps.CREATE_ALERT,
            "rapidsos",
            [a["alert"]["source_id"] for a in _get(session, sandbox_url, "/rapidsos/_sandbox/alerts")],
            lambda action: f"alarm-bridge-{action['alarm_id']}",
        )
        _check_resent(
            report,
            actions,
            unknown,
            callonalarm_steps.TRIGGER,
            "callonalarm",
            [
                f"{a['accountNumber']}/{a['zone']}"
                for a in _get(session, sandbox_url, "/callonalarm/_sandbox/alerts")
            ],
            lambda action: f"{(action['result'] or {}).get('account')}/{alarms[action['alarm_id']].zone}",
        )
    finally:
        if http is None:
            session.close()

    print(report.summary(), flush=True)  # noqa: T201 - the case's one-line report, shown with -s or on failure
    if report.problems:
        shown = "\n  ".join(report.problems[:MAX_PROBLEMS_SHOWN])
        raise AssertionError(f"{report.summary()}\n  {shown}")
    return report


def _get(session: requests.Session, base: str, path: str) -> list[dict[str, Any]]:
    response = session.get(base + path, timeout=60)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def _check_events(report: Report, accepted: list[Posted], events: Mapping[str, Any]) -> None:
    for item in accepted:
        row = events.get(item.event_id)
        if row is None:
            report.problems.append(
                f"event {item.event_id} was answered {item.status} but is not in the ledger"
            )
        elif row.alarm_id is None or row.alarm_id != item.alarm_id:
            report.problems.append(
                f"event {item.event_id}: intake answered alarm {item.alarm_id}, the ledger has {row.alarm_id}"
            )


def _unknown_attempts(action: Mapping[str, Any], retry_messages: list[str]) -> int:
    """Attempts of this action that may have reached the upstream without the ledger knowing the result.

    Those the ledger recorded as such (a retry after a lost answer or a time limit), plus attempts that
    ended without any record at all (the worker was killed, or could not write: the lease expired and
    the dispatcher re-drove the step).
    """
    marked = sum(1 for m in retry_messages if any(marker in m for marker in UNKNOWN_OUTCOME_MARKERS))
    finished = 1 if action["state"] in ("succeeded", "failed") else 0
    vanished = max(0, action["attempts"] - len(retry_messages) - finished)
    return marked + vanished


def _check_tracktik(report: Report, actions: list[Mapping[str, Any]], stored: list[dict[str, Any]]) -> None:
    by_ref: dict[str, list[int]] = defaultdict(list)
    for alarm in stored:
        notes = alarm.get("notes") or []
        first = str(notes[0].get("comment", "")) if notes else ""
        if not first.startswith(REF_PREFIX):
            report.problems.append(f"TrackTik alarm {alarm.get('id')} has no alarm-bridge ref note")
            continue
        by_ref[first.removeprefix(REF_PREFIX)].append(int(alarm["id"]))
    report.upstream["tracktik"] = len(stored)
    keys = set()
    for action in actions:
        if action["kind"] != tracktik_steps.CREATE_ALARM:
            continue
        keys.add(action["idempotency_key"])
        found = by_ref.get(action["idempotency_key"], [])
        result = action["result"] or {}
        if len(found) != 1:
            report.problems.append(
                f"action {action['id']} (alarm {action['alarm_id']}): {len(found)} TrackTik alarms {found} "
                f"carry its ref, expected exactly 1 (attempts {action['attempts']})"
            )
        elif action["state"] == "succeeded" and result.get("tracktik_alarm_id") != found[0]:
            report.problems.append(
                f"action {action['id']} recorded TrackTik alarm {result.get('tracktik_alarm_id')}, "
                f"the upstream holds {found[0]}"
            )
        if result.get("adopted"):
            report.adopted += 1
    for ref in set(by_ref) - keys:
        report.problems.append(f"TrackTik alarms {by_ref[ref]} carry ref {ref} that no action has")


def _check_cad(report: Report, actions: list[Mapping[str, Any]], stored: list[dict[str, Any]]) -> None:
    by_sys_id = Counter(str(incident["sysId"]) for incident in stored)
    report.upstream["cad"] = len(stored)
    wanted = set()
    for action in actions:
        if action["kind"] != cad_steps.UPLOAD_INCIDENT:
            continue
        sys_id = sys_id_for(action["alarm_id"])
        wanted.add(sys_id)
        if by_sys_id[sys_id] != 1:
            report.problems.append(
                f"action {action['id']}: {by_sys_id[sys_id]} CAD incidents with sysId {sys_id}, expected 1"
            )
    for sys_id in set(by_sys_id) - wanted:
        report.problems.append(f"CAD incident {sys_id} belongs to no upload step")


def _check_resent(
    report: Report,
    actions: list[Mapping[str, Any]],
    unknown: Mapping[int, int],
    kind: str,
    upstream: str,
    stored_keys: list[str],
    key_of: Any,
) -> None:
    """A vendor without dedupe: at least one object per step, more only after unknown outcomes."""
    counts = Counter(stored_keys)
    report.upstream[upstream] = len(stored_keys)
    wanted = set()
    for action in actions:
        if action["kind"] != kind:
            continue
        key = key_of(action)
        wanted.add(key)
        found = counts[key]
        allowed = 1 + unknown[action["id"]]
        if found < 1 and action["state"] == "succeeded":
            report.problems.append(
                f"action {action['id']} ({kind}) succeeded but {upstream} holds nothing for {key}"
            )
        elif found > allowed:
            report.problems.append(
                f"action {action['id']} ({kind}): {found} {upstream} objects for {key}, but the ledger "
                f"recorded only {allowed - 1} attempt(s) with an unknown outcome"
            )
        report.resent_without_dedupe += max(0, found - 1)
    for key in set(counts) - wanted:
        report.problems.append(
            f"{upstream} holds {counts[key]} object(s) for {key} that no step accounts for"
        )
