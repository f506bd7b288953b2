"""Load generators for `make bench`: an open-loop one for fixed offered rates, closed-loop ones
(wrk, or a Python fallback) for saturation.

Open loop: request i is due at ``start + i / rate`` whatever happened to the earlier ones, and its
latency is measured from that due time, not from when it was actually sent. A server that stalls
therefore shows its stall in every request that should have gone out meanwhile (no coordinated
omission). Connections are kept alive when the server allows it; gunicorn's sync worker closes each
one after its answer, so against it every request opens a new connection, as a real sender's would.

The generator runs in the benchmark's own process (asyncio, one thread) and reports its own CPU use
and how late it sent (``send_lag``), so a result limited by the generator rather than the server is
visible as such.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BodyFactory = Callable[[int], bytes]
REQUEST_TIMEOUT_S = 30.0
MAX_IN_FLIGHT = 1024
WRK_SCRIPT = Path(__file__).resolve().parent / "bench_wrk.lua"


@dataclass(frozen=True, slots=True)
class Target:
    """Where to POST: loopback host, port, path and the headers every request carries."""

    host: str
    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def request(self, body: bytes) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    """What one load run measured; latencies in seconds."""

    mode: str  # "open" (fixed offered rate) or "closed" (saturation)
    tool: str
    offered_rate: float | None
    duration_s: float
    sent: int
    completed: int
    ok: int  # 2xx answers
    errors: dict[str, int]
    latencies: list[float]  # of the 2xx answers (open loop: from the due time)
    percentiles: dict[str, float] | None = None  # when the tool gives percentiles, not samples
    generator_cpu_s: float = 0.0
    send_lag: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        figures = self.percentiles or percentiles(self.latencies)
        return {
            "mode": self.mode,
            "tool": self.tool,
            "offered_rate": self.offered_rate,
            "duration_s": round(self.duration_s, 3),
            "sent": self.sent,
            "completed": self.completed,
            "ok": self.ok,
            "throughput_rps": round(self.throughput, 1),
            "latency_ms": {k: round(v * 1000, 2) for k, v in figures.items()},
            "errors": self.errors,
            "statuses": self.statuses,
            "generator_cpu_s": round(self.generator_cpu_s, 2),
            "generator_cpu_pct_of_one_core": round(100 * self.generator_cpu_s / self.duration_s, 1)
            if self.duration_s
            else 0.0,
            "send_lag_ms": {k: round(v * 1000, 2) for k, v in self.send_lag.items()},
        }


def percentiles(samples: list[float], points: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles and the maximum; ``inf`` samples (never answered) count as slowest."""
    if not samples:
        return {}
    ordered = sorted(samples)
    result = {}
    for p in points:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        result[f"p{p:g}"] = ordered[rank - 1]
    result["max"] = ordered[-1]
    return result


class _Connections:
    """Idle keep-alive connections to one target, opened on demand."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def take(self, *, fresh: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle and not fresh:
            return self.idle.pop()
        return await asyncio.open_connection(self.target.host, self.target.port)

    def give_back(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], keep: bool) -> None:
        if keep:
            self.idle.append(conn)
        else:
            conn[1].close()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _exchange(conns: _Connections, payload: bytes) -> int:
    """Send one request and read its answer; returns the status.

    A kept-alive connection the server has closed (idle longer than its keep-alive deadline) fails
    before any answer: the request is sent again once, on a new connection, as an HTTP client does.
    The retry must not take another idle connection: after a burst, those below it in the stack have
    idled as long (seen: 4 of 3,000 requests at 50/s counted as unanswered, none of them recorded).
    """
    for attempt in (1, 2):
        reused = bool(conns.idle) and attempt == 1
        reader, writer = await conns.take(fresh=attempt == 2)
        try:
            writer.write(payload)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            if reused:
                continue  # the server closed an idle keep-alive connection: open a fresh one
            raise
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, status = status_line.split(" ", 2)[:2]
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip().lower()
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        keep = version == "HTTP/1.1" and headers.get("connection") != "close"
        conns.give_back((reader, writer), keep)
        return int(status)
    raise ConnectionError("unreachable")


def _count_error(errors: dict[str, int], exc: BaseException) -> None:
    name = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
    errors[name] = errors.get(name, 0) + 1


async def _open_loop(target: Target, rate: float, duration_s: float, body: BodyFactory) -> LoadResult:
    loop = asyncio.get_running_loop()
    total = int(rate * duration_s)
    conns = _Connections(target)
    latencies: list[float] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    statuses: dict[str, int] = {}
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def one(index: int, due: float) -> None:
        async with in_flight:
            lags.append(loop.time() - due)
            try:
                status = await asyncio.wait_for(
                    _exchange(conns, target.request(body(index))), REQUEST_TIMEOUT_S
                )
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                _count_error(errors, exc)
                return
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if 200 <= status < 300:
                latencies.append(loop.time() - due)

    cpu0 = time.process_time()
    start = loop.time() + 0.05
    tasks = []
    index = 0
    while index < total:
        now = loop.time()
        while index < total and start + index / rate <= now:
            tasks.append(asyncio.create_task(one(index, start + index / rate)))
            index += 1
        if index < total:
            await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
    # Bounded: what has not been answered this long after the last due time counts as unanswered.
    _, pending = await asyncio.wait(tasks, timeout=min(REQUEST_TIMEOUT_S, max(10.0, duration_s)))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        errors["unanswered"] = len(pending)
    elapsed = max(total / rate, loop.time() - start)
    conns.close()
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    lag = percentiles(lags, (50, 99)) if lags else {}
    # Every request that got no 2xx answer is counted as infinitely slow, so that the percentiles of
    # an overloaded server say so instead of describing only the lucky requests.
    latencies += [math.inf] * (total - ok)
    return LoadResult(
        mode="open",
        tool="python-open-loop",
        offered_rate=rate,
        duration_s=elapsed,
        sent=total,
        completed=sum(statuses.values()),
        ok=ok,
        errors=errors,
        latencies=latencies,
        generator_cpu_s=time.process_time() - cpu0,
        send_lag=lag,
        statuses=statuses,
    )


def open_loop(target: Target, rate: float, duration_s: float, body: BodyFactory) -> LoadResult:
    """Offer ``rate`` requests/s for ``duration_s``; every request is sent at its due time."""
    return asyncio.run(_open_loop(target, rate, duration_s, body))


async def _closed_loop(target: Target, connections: int, duration_s: float, body: BodyFactory) -> LoadResult:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    statuses: dict[str, int] = {}
    counter = 0
    deadline = loop.time() + duration_s

    async def client() -> None:
        nonlocal counter
        conns = _Connections(target)
        while loop.time() < deadline:
            counter += 1
            sent = loop.time()
            try:
                status = await asyncio.wait_for(
                    _exchange(conns, target.request(body(counter))), REQUEST_TIMEOUT_S
                )
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                _count_error(errors, exc)
                continue
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if 200 <= status < 300:
                latencies.append(loop.time() - sent)
        conns.close()

    cpu0 = time.process_time()
    started = loop.time()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = loop.time() - started
    done = sum(statuses.values())
    return LoadResult(
        mode="closed",
        tool=f"python-closed-loop c={connections}",
        offered_rate=None,
        duration_s=elapsed,
        sent=counter,
        completed=done,
        ok=sum(v for k, v in statuses.items() if k.startswith("2")),
        errors=errors,
        latencies=latencies,
        generator_cpu_s=time.process_time() - cpu0,
        statuses=statuses,
    )


def closed_loop(target: Target, connections: int, duration_s: float, body: BodyFactory) -> LoadResult:
    """As many requests as ``connections`` clients, each waiting for its answer, can get through."""
    return asyncio.run(_closed_loop(target, connections, duration_s, body))


def ensure_wrk() -> str | None:
    """The wrk binary; installed from Debian when missing and we may (root with apt-get), else None."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    print("bench: installing wrk (Debian package) for the saturation runs", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "check": False}
    if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], **quiet)
    return shutil.which("wrk")


def wrk(
    binary: str,
    target: Target,
    connections: int,
    threads: int,
    duration_s: float,
    body_kind: str,
    run_id: str,
) -> LoadResult:
    """Saturate with wrk (closed loop, C): unique event ids are made by bench_wrk.lua per request."""
    cmd = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s"]
    cmd += ["-s", str(WRK_SCRIPT)]
    for name, value in target.headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd += [target.url, "--", body_kind, run_id]
    started = time.monotonic()
    children0 = os.times()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    children1 = os.times()
    elapsed_wall = time.monotonic() - started
    marker = "BENCH_JSON "
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(marker)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    data = json.loads(line[len(marker) :])
    duration = data["duration_us"] / 1e6
    errors = {k: v for k, v in data["errors"].items() if v}
    return LoadResult(
        mode="closed",
        tool=f"wrk -t{threads} -c{connections}",
        offered_rate=None,
        duration_s=duration,
        sent=data["requests"],
        completed=data["requests"],
        ok=data["requests"] - errors.get("status", 0),  # wrk's "status" errors: answers >= 400
        errors=errors,
        latencies=[],
        percentiles={k: v / 1e6 if data["requests"] else math.inf for k, v in data["latency_us"].items()},
        generator_cpu_s=(children1.children_user + children1.children_system)
        - (children0.children_user + children0.children_system),
        send_lag={"wall_s": elapsed_wall},
    )


@dataclass(frozen=True, slots=True)
class Stream:
    """A closed-loop stream of ``requests`` requests over ``connections`` connections."""

    target: Target
    connections: int
    requests: int
    body: BodyFactory


async def _probe_during(
    probe: Target, rate: float, probe_body: BodyFactory, streams: list[Stream], max_s: float
) -> tuple[LoadResult, dict[str, Any]]:
    loop = asyncio.get_running_loop()
    stream_stats: list[dict[str, Any]] = []

    async def run_stream(stream: Stream, stats: dict[str, Any]) -> None:
        next_index = 0

        async def client() -> None:
            nonlocal next_index
            conns = _Connections(stream.target)
            while next_index < stream.requests and loop.time() < deadline:
                index = next_index
                next_index += 1
                try:
                    status = await asyncio.wait_for(
                        _exchange(conns, stream.target.request(stream.body(index))), REQUEST_TIMEOUT_S
                    )
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    _count_error(stats["errors"], exc)
                    continue
                stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
            conns.close()

        await asyncio.gather(*(client() for _ in range(stream.connections)))
        stats["done_after_s"] = round(loop.time() - started, 3)

    started = loop.time()
    deadline = started + max_s
    tasks = []
    for stream in streams:
        stats: dict[str, Any] = {
            "path": stream.target.path,
            "requests": stream.requests,
            "statuses": {},
            "errors": {},
        }
        stream_stats.append(stats)
        tasks.append(asyncio.create_task(run_stream(stream, stats)))
    storm = asyncio.gather(*tasks)
    # The probe: one request every 1/rate s while the streams run (open loop, latency from due time).
    conns = _Connections(probe)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    probes = []

    async def one(index: int, due: float) -> None:
        try:
            status = await asyncio.wait_for(
                _exchange(conns, probe.request(probe_body(index))), REQUEST_TIMEOUT_S
            )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            _count_error(errors, exc)
            latencies.append(math.inf)
            return
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        latencies.append(loop.time() - due if 200 <= status < 300 else math.inf)

    cpu0 = time.process_time()
    index = 0
    first_due = started + 0.2  # the storm has begun
    while not storm.done():
        due = first_due + index / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        if storm.done():
            break
        probes.append(asyncio.create_task(one(index, due)))
        index += 1
    await storm
    if probes:
        await asyncio.wait(probes, timeout=REQUEST_TIMEOUT_S)
    conns.close()
    elapsed = loop.time() - started
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    result = LoadResult(
        mode="open",
        tool="python-open-loop probe",
        offered_rate=rate,
        duration_s=elapsed,
        sent=index,
        completed=sum(statuses.values()),
        ok=ok,
        errors=errors,
        latencies=latencies,
        generator_cpu_s=time.process_time() - cpu0,
        statuses=statuses,
    )
    return result, {"streams": stream_stats, "elapsed_s": round(elapsed, 3)}


def probe_during(
    probe: Target, rate: float, probe_body: BodyFactory, streams: list[Stream], max_s: float = 120.0
) -> tuple[LoadResult, dict[str, Any]]:
    """Offer ``probe`` at ``rate``/s for as long as the closed-loop ``streams`` take (up to ``max_s``)."""
    return asyncio.run(_probe_during(probe, rate, probe_body, streams, max_s))


async def _dc09_closed_loop(
    host: str, port: int, connections: int, duration_s: float, frame: BodyFactory
) -> LoadResult:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    statuses: dict[str, int] = {}
    counter = 0
    deadline = loop.time() + duration_s

    async def client() -> None:
        nonlocal counter
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while loop.time() < deadline:
                counter += 1
                sent = loop.time()
                try:
                    writer.write(frame(counter))
                    await writer.drain()
                    answer = await asyncio.wait_for(reader.readuntil(b"\r"), REQUEST_TIMEOUT_S)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    _count_error(errors, exc)
                    return
                kind = next((k for k in ("ACK", "NAK", "DUH") if f'"{k}"'.encode() in answer), "other")
                statuses[kind] = statuses.get(kind, 0) + 1
                if kind == "ACK":
                    latencies.append(loop.time() - sent)
        finally:
            writer.close()

    cpu0 = time.process_time()
    started = loop.time()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = loop.time() - started
    return LoadResult(
        mode="closed",
        tool=f"python DC-09 over TCP c={connections}",
        offered_rate=None,
        duration_s=elapsed,
        sent=counter,
        completed=sum(statuses.values()),
        ok=statuses.get("ACK", 0),
        errors=errors,
        latencies=latencies,
        generator_cpu_s=time.process_time() - cpu0,
        statuses=statuses,
    )


def dc09_closed_loop(
    host: str, port: int, connections: int, duration_s: float, frame: BodyFactory
) -> LoadResult:
    """As many DC-09 frames as ``connections`` panels, each waiting for its answer, get through."""
    return asyncio.run(_dc09_closed_loop(host, port, connections, duration_s, frame))
