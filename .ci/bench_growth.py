"""`make bench-growth`: does a year of history slow anything down? The same measurements on a new
ledger (one day: a page of every list) and on one holding a year of a mid-size monitoring centre,
side by side, with their ratio.

The year (.ci/bench_seed.sql, shape YEAR: 1,000,000 events, 300,000 alarms, 708,215 actions, 3,000,101
timeline lines, 5,000 accounts over 365 days) is seeded once at the first schema revision into a
database of its own; each run copies it and applies `alarm-bridge db upgrade` to the copy, as a
production upgrade would (its duration is reported), then VACUUM ANALYZE. The same script run from
an older checkout therefore measures the older code on the same data.

Measured on each ledger, with the Procfile's `web` process alone (no workers: the messages wait in
Redis under a private key prefix):
- intake: `POST /v1/events` at a fixed offered rate (open loop; latency from each request's scheduled
  send time), every event opening an alarm on one of the bench sites' accounts;
- the operator API's lists (every state; one site), the dead-letter view, one alarm, one action's
  timeline (a self-test's status), and `/metrics`, each requested in turn;
- the dispatcher's and the watchdog's statements, run in this process inside a transaction that is
  rolled back;
- on the year only: `alarm-bridge ledger archive --ended-before 180d` (when the checkout has it).

Target (issue 19): every figure on the year within 1.5x of the one-day ledger. Prints the table and
writes docs/benchmark-growth.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bench_load as load
import bench_stack as stk
import psycopg

SEED_DB = "abg_year_seed_r0001"  # seeded at revision 0001; kept with --keep-seed
TARGET_RATIO = 1.5
# The "empty" ledger holds one day: a page of every list (ended alarms, dead letters) to return, so
# both ledgers answer the same amount and only the history behind it differs.
ONE_DAY_SQL = """
INSERT INTO alarms (site_key, source_key, account, zone, code, description, family, priority, state, outcome,
                    event_count, opened_at, last_event_at, ended_at, refs)
SELECT 'bench-property', 'bench-panels', 'bp-' || lpad((g % 16)::text, 2, '0'), 'day-' || g, 'BA',
       'Burglary alarm', 'burglary', CASE WHEN g % 10 = 0 THEN 'life_safety' ELSE 'property' END, 'ended',
       'dispatched', 1, now() - interval '1 day' + g * interval '1 minute',
       now() - interval '1 day' + g * interval '1 minute',
       now() - interval '1 day' + g * interval '70 seconds',
       '{}'::jsonb
FROM generate_series(1, 800) AS g;
INSERT INTO actions (alarm_id, kind, target, queue, state, due_at, enqueued_at, attempts, max_attempts,
                     cancellable, idempotency_key, outcome_unknown, last_error, params, created_at,
                     updated_at, completed_at)
SELECT a.id, 'tracktik.create_alarm', 'tracktik', 'default',
       CASE WHEN a.id % 4 = 0 THEN 'failed' ELSE 'succeeded' END,
       a.opened_at, a.opened_at, 1, 8, false, 'day-' || a.id, false, NULL, '{}'::jsonb, a.opened_at,
       a.opened_at + interval '1 minute', a.opened_at + interval '1 minute'
FROM alarms AS a;
INSERT INTO timeline_entries (alarm_id, action_id, at, kind, message, data)
SELECT alarm_id, id, updated_at, 'action.succeeded', 'one day', '{}'::jsonb FROM actions;
"""
DOCS = stk.REPO / "docs"


class Ledgers(stk.Services):
    """The shared PostgreSQL and Redis, pointed at whichever ledger is being measured."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.current = ""

    def url(self, name: str) -> str:
        return f"postgresql://{stk.PG_USER}@{stk.PG_HOST}:{stk.PG_PORT}/{name}"

    def fresh_database(self) -> str:
        return self.url(self.current)

    def backend_pids(self) -> list[int]:
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.current,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def exists(self, name: str) -> bool:
        with self.admin() as conn:
            return (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
            )

    def create(self, name: str, template: str | None = None) -> None:
        with self.admin() as conn:
            self._drop(conn, name)
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            self._drop(conn, name)

    def run_sql(self, name: str, sql: str) -> None:
        with psycopg.connect(
            host=stk.PG_HOST, port=stk.PG_PORT, user=stk.PG_USER, dbname=name, autocommit=True
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def counts(self, name: str) -> dict[str, int]:
        with psycopg.connect(host=stk.PG_HOST, port=stk.PG_PORT, user=stk.PG_USER, dbname=name) as conn:
            return {
                table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]  # noqa: S608 - our own table names
                for table in ("events", "alarms", "actions", "timeline_entries")
            }

    def size(self, name: str) -> str:
        with self.admin() as conn:
            return str(conn.execute("SELECT pg_size_pretty(pg_database_size(%s))", (name,)).fetchone()[0])  # type: ignore[index]


def alarm_bridge(args: list[str], database_url: str, log: Path) -> tuple[int, float, str]:
    env = {**stk._base_env(), "DATABASE_URL": database_url}
    t0 = time.monotonic()
    with log.open("ab") as out:
        done = subprocess.run(
            [str(stk.BIN / "alarm-bridge"), *args],
            cwd=stk.REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=out,
            timeout=3600,
            check=False,
        )
    return done.returncode, time.monotonic() - t0, done.stdout.decode(errors="replace")


def seed(ledgers: Ledgers, log: Path, reuse: bool) -> float:
    """The seeded year at revision 0001; returns how long seeding took (0 when reused)."""
    if reuse and ledgers.exists(SEED_DB):
        print(f"bench-growth: reusing {SEED_DB}", flush=True)
        return 0.0
    print("bench-growth: seeding a year of alarms (a few minutes)", flush=True)
    ledgers.create(SEED_DB)
    code, _, _ = alarm_bridge(["db", "upgrade", "--revision", "0001"], ledgers.url(SEED_DB), log)
    if code != 0:
        raise SystemExit(f"bench-growth: migrating {SEED_DB} to 0001 failed; see {log}")
    sql = stk.render_seed(stk.YEAR)
    t0 = time.monotonic()
    ledgers.run_sql(SEED_DB, sql)
    ledgers.run_sql(SEED_DB, "VACUUM ANALYZE")
    return time.monotonic() - t0


# -- measurements ------------------------------------------------------------------------------------


def timed(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    ordered = sorted(samples)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def get(stack: stk.Stack, path: str) -> Callable[[], Any]:
    url = f"{stack.web_url}{path}"
    headers = {"Authorization": f"Bearer {stk.OPERATOR_KEY}"}

    def call() -> None:
        answer = stk.HTTP.get(url, headers=headers, timeout=30)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:200]}")

    return call


def panel_bodies(tag: str) -> load.BodyFactory:
    def make(index: int) -> bytes:
        return json.dumps(
            {
                "account": f"bp-{index % 16:02d}",
                "code": "BA",
                "zone": f"{tag}-{index}",
                "message": "Front door",
                "occurred_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "event_id": f"{tag}-{index}",
            }
        ).encode()

    return make


def worker_statements(database_url: str, repeats: int) -> dict[str, dict[str, float]]:
    """The dispatcher's and the watchdog's reads, on this ledger, rolled back."""
    sys.path.insert(0, str(stk.REPO))
    from app.domain import actions, watchdog  # the checkout being measured
    from app.ledger.session import make_engine, make_sessionmaker

    engine = make_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)

    def dispatch() -> None:
        with sessions() as session:
            actions.collect_for_dispatch(
                session, now=now, resend_after=timedelta(seconds=90), limit=500, waiting={}
            )
            session.rollback()

    def watch() -> None:
        with sessions() as session:
            limits = watchdog.Limits(grace=timedelta(seconds=60), failing=timedelta(seconds=300))
            watchdog.find_overdue(session, now=now, limits=limits)
            session.rollback()

    try:
        dispatch(), watch()  # warm the pool and the statement caches
        return {
            "dispatcher: collect_for_dispatch": timed(dispatch, repeats),
            "watchdog: find_overdue": timed(watch, repeats),
        }
    finally:
        engine.dispose()


def measure(ledgers: Ledgers, name: str, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    ledgers.current = name
    tag = f"{ledgers.run_id}-{name[-4:]}"
    stack = stk.Stack(ledgers, run_dir / name, f"{ledgers.prefix_root}{tag}:", ("web",))
    result: dict[str, Any] = {}
    with stk.running(stack):
        target = load.Target(
            "127.0.0.1", stack.web_port, "/v1/events", {"Authorization": f"Bearer {stk.PANEL_TOKEN}"}
        )
        load.open_loop(target, 20, 2.0, panel_bodies(f"{tag}-warm"))
        print(f"bench-growth: {name}: intake {args.rate:g}/s for {args.seconds:g} s", flush=True)
        intake = load.open_loop(target, args.rate, args.seconds, panel_bodies(f"{tag}-load"))
        summary = intake.summary()
        result["intake"] = {
            "p50_ms": summary["latency_ms"].get("p50"),
            "p95_ms": summary["latency_ms"].get("p95"),
            "p99_ms": summary["latency_ms"].get("p99"),
            "max_ms": summary["latency_ms"].get("max"),
            "sent": intake.sent,
            "ok": intake.ok,
        }
        selftest = stk.HTTP.post(
            f"{stack.web_url}/v1/system/selftest",
            headers={"Authorization": f"Bearer {stk.OPERATOR_KEY}"},
            json={},
            timeout=30,
        ).json()["action_id"]
        newest_alarm = ledgers_query(ledgers, name, "SELECT max(id) FROM alarms")
        reads = {
            "GET /v1/alarms?state=all&limit=100": "/v1/alarms?state=all&limit=100",
            "GET /v1/alarms?state=ended&limit=100": "/v1/alarms?state=ended&limit=100",
            "GET /v1/alarms (active)": "/v1/alarms",
            "GET /v1/alarms?state=all&site=bench-property": (
                "/v1/alarms?state=all&site=bench-property&limit=100"
            ),
            "GET /v1/actions?state=failed (dead letters)": "/v1/actions?state=failed&limit=100",
            "GET /v1/alarms/<id>": f"/v1/alarms/{newest_alarm}",
            "GET /v1/system/selftest/<id> (an action's timeline)": f"/v1/system/selftest/{selftest}",
            "GET /metrics": "/metrics",
        }
        print(f"bench-growth: {name}: reads", flush=True)
        for label, path in reads.items():
            call = get(stack, path)
            call()
            result[label] = timed(call, args.repeats)
    result.update(worker_statements(ledgers.url(name), args.repeats))
    ledgers.delete_keys(f"{ledgers.prefix_root}{tag}:")
    return result


def ledgers_query(ledgers: Ledgers, name: str, sql: str) -> Any:
    with psycopg.connect(host=stk.PG_HOST, port=stk.PG_PORT, user=stk.PG_USER, dbname=name) as conn:
        return conn.execute(sql).fetchone()[0]  # type: ignore[index]


# -- report ------------------------------------------------------------------------------------------


def compare(empty: dict[str, Any], year: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for label, figures in empty.items():
        other = year[label]
        ratio = other["p50_ms"] / max(figures["p50_ms"], 0.01)
        rows.append(
            {
                "measurement": label,
                "empty_p50_ms": figures["p50_ms"],
                "empty_p95_ms": figures.get("p95_ms"),
                "year_p50_ms": other["p50_ms"],
                "year_p95_ms": other.get("p95_ms"),
                "ratio_p50": round(ratio, 2),
                "within_target": ratio <= TARGET_RATIO,
            }
        )
    return rows


def render(result: dict[str, Any]) -> str:
    lines = [
        "# Growth benchmark (make bench-growth)",
        "",
        f"Run {result['finished_at']} at {result['commit']} on {result['machine']}. "
        f"Year ledger: {result['year_rows']} ({result['year_size']}); "
        f"`alarm-bridge db upgrade` on it took {result['upgrade_s']:.1f} s.",
        "",
        f"Intake: {result['rate']:g} events/s offered for {result['seconds']:g} s, latency from each "
        "request's scheduled send; the rest: p50/p95 of "
        f"{result['repeats']} requests or statements in turn. "
        f"Target: the year within {TARGET_RATIO}x of the one-day ledger.",
        "",
        "| measurement | one day p50 / p95 ms | a year p50 / p95 ms | ratio (p50) | |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['measurement']} | {row['empty_p50_ms']} / {row['empty_p95_ms']} | "
            f"{row['year_p50_ms']} / {row['year_p95_ms']} | {row['ratio_p50']} | "
            f"{'ok' if row['within_target'] else 'OVER'} |"
        )
    intake = result["year"]["intake"]
    lines += [
        "",
        f"Intake on the year: p99 {intake['p99_ms']} ms, max {intake['max_ms']} ms, "
        f"{intake['ok']} of {intake['sent']} answered 2xx "
        f"(one day: p99 {result['empty']['intake']['p99_ms']} ms, {result['empty']['intake']['ok']} of "
        f"{result['empty']['intake']['sent']}).",
    ]
    if result.get("archive"):
        arc = result["archive"]
        lines += ["", f"Retention on the year: {arc}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=30.0, help="intake events/s (default 30)")
    parser.add_argument("--seconds", type=float, default=20.0, help="intake duration (default 20)")
    parser.add_argument("--repeats", type=int, default=40, help="requests per read (default 40)")
    parser.add_argument("--keep-seed", action="store_true", help=f"keep (and reuse) {SEED_DB}")
    parser.add_argument("--no-archive", action="store_true", help="skip the retention measurement")
    parser.add_argument("--out", default=str(DOCS / "benchmark-growth"), help="where to write .md/.json")
    args = parser.parse_args(argv)

    run_id = uuid.uuid4().hex[:8]
    ledgers = Ledgers(run_id)
    run_dir = Path(os.environ.get("BENCH_DIR", stk.REPO / "var" / "bench-growth" / run_id))
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "setup.log"
    empty, year = f"abg_empty_{run_id}", f"abg_year_{run_id}"
    result: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "repeats": args.repeats}
    try:
        result["seed_s"] = round(seed(ledgers, log, reuse=args.keep_seed), 1)
        ledgers.create(empty)
        if alarm_bridge(["db", "upgrade"], ledgers.url(empty), log)[0] != 0:
            raise SystemExit(f"bench-growth: migrating the empty ledger failed; see {log}")
        ledgers.run_sql(empty, ONE_DAY_SQL)
        print("bench-growth: copying the year and upgrading it", flush=True)
        ledgers.create(year, template=SEED_DB)
        code, upgrade_s, _ = alarm_bridge(["db", "upgrade"], ledgers.url(year), log)
        if code != 0:
            raise SystemExit(f"bench-growth: upgrading the year failed; see {log}")
        result["upgrade_s"] = round(upgrade_s, 1)
        for name in (empty, year):
            ledgers.run_sql(name, "VACUUM ANALYZE")
        result["year_rows"] = ledgers.counts(year)
        result["year_size"] = ledgers.size(year)
        result["empty"] = measure(ledgers, empty, run_dir, args)
        result["year"] = measure(ledgers, year, run_dir, args)
        result["rows"] = compare(
            {k: v for k, v in result["empty"].items()}, {k: v for k, v in result["year"].items()}
        )
        if not args.no_archive:
            print("bench-growth: alarm-bridge ledger archive --ended-before 180d on the year", flush=True)
            code, took, out = alarm_bridge(
                ["ledger", "archive", "--ended-before", "180d"], ledgers.url(year), log
            )
            if code == 0:
                removed = json.loads(out)
                result["archive"] = (
                    f"{removed['alarms']:,} alarms, {removed['events']:,} events, "
                    f"{removed['actions']:,} actions and {removed['timeline_entries']:,} timeline lines "
                    f"removed in {took:.1f} s "
                    f"({removed['batches']} batches)"
                )
            else:
                result["archive"] = "not available in this checkout"
    finally:
        ledgers.drop(empty)
        ledgers.drop(year)
        if not args.keep_seed:
            ledgers.drop(SEED_DB)
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=stk.REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    result["machine"] = f"{os.cpu_count()} cores"
    text = render(result)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if all(row["within_target"] for row in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
