"""``alarm-bridge alarms show``: an alarm's story read through the operator API of a running bridge,
with its times in UTC to the millisecond."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from cli.bridge_api import base_url, request


@click.group()
def alarms() -> None:
    """Alarms in the ledger, read through the operator API of a running bridge."""


@alarms.command("show")
@click.argument("alarm_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--url", default=None, help="The bridge [default: http://127.0.0.1:$PORT].")
@click.option("--key", default=None, help="An operator key [default: the first of OPERATOR_API_KEYS].")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
def alarms_show(alarm_id: int, url: str | None, key: str | None, as_json: bool) -> None:
    """One alarm: its state, events, actions and timeline (times in UTC, to the millisecond)."""
    if key is None:
        from config.settings import load_settings

        keys = load_settings().operator_api_keys
        if not keys:
            raise click.UsageError("give --key, or set OPERATOR_API_KEYS")
        key = keys[0]
    target = f"{base_url(url)}/v1/alarms/{alarm_id}"
    answer = request("GET", target, headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
    if answer.status == 401:
        raise click.ClickException(f"the operator key was refused ({answer.problem()})")
    if answer.status == 404:
        raise click.ClickException(f"no alarm {alarm_id} at {base_url(url)} ({answer.problem()})")
    if not answer.ok or not (answer.is_json and isinstance(answer.body, dict)):
        raise click.ClickException(f"GET {target} answered {answer.problem()}")
    if as_json:
        click.echo(answer.shown())
        return
    for line in render_alarm(answer.body):
        click.echo(line)


def ms(value: str | None) -> str:
    """An ISO time from the API as UTC to the millisecond (``2025-06-01 14:03:07.482Z``); ``-`` if none."""
    if not value:
        return "-"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> Iterator[str]:
    """Rows with each column padded to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(max((len(r) for r in rows), default=0))]
    for row in rows:
        yield indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()


def render_alarm(alarm: Mapping[str, Any]) -> Iterator[str]:
    """The terminal view of ``GET /v1/alarms/<id>``: header, events, actions, timeline."""
    yield f"Alarm {alarm.get('id')}: {_text(alarm.get('description'))}"
    reason = alarm.get("needs_person_reason")
    needs = f"yes: {_text(reason)}" if alarm.get("needs_person") else "no"
    origin = ", ".join(f"{name} {alarm[name]}" for name in ("account", "zone", "code") if alarm.get(name))
    header = [
        ["state", _text(alarm.get("state"))],
        ["outcome", _text(alarm.get("outcome"))],
        ["family", _text(alarm.get("family"))],
        ["priority", _text(alarm.get("priority"))],
        ["site", _text(alarm.get("site")) if alarm.get("site") else "(unrouted)"],
        ["needs person", needs],
        ["source", f"{_text(alarm.get('source'))}{', ' + origin if origin else ''}"],
    ]
    if alarm.get("verification"):
        header.append(["verification", str(alarm["verification"])])
    for name in ("opened_at", "last_event_at", "restored_at", "verified_at", "acknowledged_at", "ended_at"):
        if alarm.get(name) or name == "opened_at":
            header.append([name.removesuffix("_at").replace("_", " "), ms(alarm.get(name))])
    yield from _columns(header)

    events = alarm.get("events") or []
    yield ""
    yield f"Events ({len(events)})"
    rows = [["#", "received", "occurred", "source", "code", "zone", "skew"]]
    for event in events:
        skew = event.get("clock_skew_s")
        rows.append([
            str(event.get("event_id")), ms(event.get("received_at")), ms(event.get("occurred_at")),
            _text(event.get("source")), _text(event.get("code")), _text(event.get("zone")),
            "-" if skew is None else f"{skew:+.3f}s",
        ])  # fmt: skip
    yield from _columns(rows) if events else iter(["  (none)"])

    actions = alarm.get("actions") or []
    yield ""
    yield f"Actions ({len(actions)})"
    rows = [["#", "kind", "state", "attempts", "external id", "due"]]
    errors: dict[int, str] = {}
    for index, action in enumerate(actions, start=1):
        rows.append([
            str(action.get("id")), _text(action.get("kind")), _text(action.get("state")),
            _text(action.get("attempts")), _text(action.get("external_id")), ms(action.get("due_at")),
        ])  # fmt: skip
        if action.get("last_error"):
            errors[index] = str(action["last_error"])
    if not actions:
        yield "  (none)"
    for index, line in enumerate(_columns(rows)):
        yield line
        if index in errors:
            yield f"      last error: {errors[index]}"

    timeline = alarm.get("timeline") or []
    yield ""
    yield f"Timeline ({len(timeline)})"
    rows = []
    for entry in timeline:
        refs = [f"event {entry['event_id']}" if entry.get("event_id") else ""]
        refs.append(f"action {entry['action_id']}" if entry.get("action_id") else "")
        ref = ", ".join(r for r in refs if r)
        rows.append(
            [
                ms(entry.get("at")),
                _text(entry.get("kind")),
                _text(entry.get("what")) + (f" [{ref}]" if ref else ""),
            ]
        )
    yield from _columns(rows) if rows else iter(["  (none)"])
