"""Tables for `make bench`: the same figures printed to the terminal and written to docs/benchmark.md."""

from __future__ import annotations

import math
from typing import Any


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, padded so that it also reads as plain text."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def ingest_table(result: dict[str, Any]) -> str:
    rows = []
    for name, label in (
        ("ceiling", "bare Flask (ceiling)"),
        ("alarm_bridge", "alarm-bridge POST /v1/events"),
    ):
        for mode in ("saturation", "fixed"):
            figures = result[name][mode]
            latency = figures["latency_ms"]
            rows.append(
                [
                    label,
                    figures["label"],
                    f"{figures['throughput_rps']:.0f}",
                    ms(latency.get("p50")),
                    ms(latency.get("p99")),
                    ms(latency.get("max")),
                    str(figures["failed"]),
                    f"{figures['server_cpu_ms_per_request']:.2f}",
                    f"{figures['generator_cpu_pct_of_one_core']:.0f} %",
                    figures.get("spread", ""),
                ]
            )
    headers = [
        "target",
        "load",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failed",
        "server CPU ms/req",
        "generator CPU",
        "runs",
    ]
    return table(headers, rows)


def latency_table(rows_in: list[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for label, figures in rows_in:
        lat = figures["latency_ms"]
        rows.append(
            [
                label,
                f"{figures['ingest']['sent'] - figures['ingest']['ok']}",
                f"{figures['alarms']}",
                f"{figures['reached']}",
                ms(lat.get("p50")),
                ms(lat.get("p95")),
                ms(lat.get("p99")),
                ms(lat.get("max")),
                figures.get("metric_p99", "—"),
                ms(figures["ingest_latency_ms"].get("p99")),
                str(figures.get("max_queue_depth", "—")),
            ]
        )
    headers = [
        "load",
        "unanswered",
        "alarms",
        "reached",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "metric p99",
        "ingest p99 ms",
        "max queue",
    ]
    return table(headers, rows)


def goals_table(goals: list[dict[str, Any]]) -> str:
    rows = [[g["goal"], g["measured"], g["verdict"]] for g in goals]
    return table(["goal", "measured", "verdict"], rows)


def cpu_table(cpu: dict[str, dict[str, float]]) -> str:
    names = [
        "web",
        "receiver",
        "worker",
        "urgent",
        "bulk",
        "beat",
        "sandbox",
        "generator",
        "pg backends",
        "redis",
        "rest",
    ]
    rows = []
    for phase, figures in cpu.items():
        rows.append([phase, *(f"{figures[n]:.0f}" if n in figures else "—" for n in names)])
    return table(["phase (% of one core)", *names], rows)


def facts_table(facts: dict[str, Any]) -> str:
    return table(["", "value"], [[k, str(v)] for k, v in facts.items()])


def cost_table(rows_in: list[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for label, figures in rows_in:
        cost = figures.get("cost_per_alarm")
        if not cost:
            continue
        by = cost["by_process_ms"]
        rows.append(
            [
                label,
                f"{cost['bridge_cpu_ms']:.1f}",
                f"{by['web']:.1f}",
                f"{by['worker'] + by['urgent'] + by['bulk'] + by['beat']:.1f}",
                f"{by['pg backends']:.1f}",
                f"{by['redis']:.1f}",
                f"{cost['sandbox_cpu_ms']:.1f}",
                f"{cost['ledger_commits_per_alarm']:.1f}",
                f"{cost['cpu_bound_alarms_per_s_here']:.0f}",
            ]
        )
    headers = [
        "load",
        "bridge CPU ms/alarm",
        "web",
        "workers",
        "pg backends",
        "redis",
        "sandbox ms",
        "commits/alarm",
        "CPU-bound alarms/s here",
    ]
    return table(headers, rows) if rows else ""


def door_table(door: dict[str, Any]) -> str:
    """Fire events' 2xx latency at the door, idle and during the trouble storm, gate on and off."""
    rows = []
    for label, run in door["runs"].items():
        for phase in ("idle", "storm"):
            figures = run[phase]
            lat = figures["latency_ms"]
            storm = run["streams"] if phase == "storm" else None
            troubles = (
                f"{run['troubles_recorded']} in {storm['elapsed_s']:.1f} s" if storm is not None else "—"
            )
            rows.append(
                [
                    label,
                    phase,
                    f"{figures['sent']}",
                    f"{figures['ok']}",
                    *(ms(lat.get(p)) for p in ("p50", "p95", "p99", "max")),
                    troubles,
                ]
            )
    headers = [
        "web",
        "fire events",
        "sent",
        "2xx",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "troubles recorded",
    ]
    return table(headers, rows)
