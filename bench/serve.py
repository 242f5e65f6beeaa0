"""``cairn serve``: alerts persisted per second and receipt to first step, on SQLite and on PostgreSQL with 1 to 3 servers.

In one run, on one machine, the real ``cairn serve`` (``--workers 8``, the default) on loopback:

* **SQLite, 1 server** (a file in a temporary folder);
* **PostgreSQL, 1, 2 and 3 servers**, each on a fresh database of one throwaway cluster
  (``tests/postgres.py``); with several servers the webhooks go round-robin over them.

Each serves a runbook triggered by ``alertname = BenchAlert`` on ``{{ alert.labels.node }}`` and an
inventory of local hosts. Webhooks are sent by 16 concurrent clients in all (aiohttp), one alert
each, bearer token included.

* **Intake, distinct**: every alert names a different node that is not in the inventory: each is
  queued (committed before its 200), then a worker refuses it cheaply (no such host). Alerts per
  second = alerts sent / elapsed; the queue is counted afterwards (Cairn's own reader) to check
  that every one was persisted.
* **Intake, duplicates**: the same alert again and again: one entry, the rest answered as duplicates.
* **Every alert to every server** (PostgreSQL with 2 and 3 servers: Alertmanager with one URL per
  server): each distinct alert sent to each server at once; alerts queued per second, and a check
  that each was queued exactly once (the answers' ``queued`` ids and the rows in the store).
* **Receipt to first step**: alerts for distinct inventory hosts at a steady 50 a second; for each,
  the time from the server's receipt (the queue row's ``received_at``) to its run's first step
  starting (the journal's ``started_at``).

Goals (issue 16): at least 1,000 distinct alerts/s persisted with 2 servers on PostgreSQL; p99
receipt to first step under 100 ms at 50 alerts/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.report import print_table, ratio, seconds
from bench.servers import (
    TOKEN,
    CpuMeter,
    Servers,
    Setup,
    alert,
    fresh_database,
    postgres,
    read,
    wait_until,
    webhook,
)

DESCRIPTION = (
    "cairn serve on SQLite (1 server) and PostgreSQL (1, 2, 3 servers): alerts persisted per second, "
    "every alert to every server, receipt to first step at 50/s (goals: >= 1,000/s with 2 on PostgreSQL, p99 < 100 ms)"
)
GOAL_RATE = 1000.0
GOAL_SERVERS = 2
GOAL_LATENCY_S = 0.100
CLIENTS = 16
STEADY_RATE = 50.0
RUNBOOK = """
id: bench-alert
title: Benchmark alert
severity: info
summary: Benchmark load for cairn serve.
triggers:
  - matchers: ['alertname = BenchAlert']
    target: "{{ alert.labels.node }}"
targets: fleet
detect:
  - id: look
    title: Look
    run: echo looked
"""


@dataclass(frozen=True)
class Config:
    """One row of the benchmark: a store and how many servers share it."""

    dialect: str
    servers: int

    @property
    def name(self) -> str:
        return f"{'SQLite' if self.dialect == 'sqlite' else 'PostgreSQL'}, {self.servers} server{'s' * (self.servers > 1)}"


CONFIGS = (Config("sqlite", 1), Config("postgresql", 1), Config("postgresql", 2), Config("postgresql", 3))


@dataclass(frozen=True)
class Sizes:
    distinct: int
    duplicate: int
    every_server: int
    steady_s: float


def run(quick: bool) -> dict[str, Any]:
    sizes = Sizes(300, 300, 100, 3.0) if quick else Sizes(3000, 3000, 1000, 10.0)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cairn-bench-serve-") as scratch, postgres() as cluster:
        for index, config in enumerate(CONFIGS):
            root = Path(scratch) / f"{index}-{config.dialect}-{config.servers}"
            store: str | Path = (
                root / "journal.db"
                if config.dialect == "sqlite"
                else fresh_database(cluster, f"serve{config.servers}")
            )
            print(f"  {config.name} …", flush=True)
            database = cluster.processes if config.dialect == "postgresql" else list
            rows[config.name] = _one_config(config, root, store, sizes, database)
    _print(rows, sizes)
    return {
        "configs": rows,
        "sizes": sizes.__dict__,
        "clients": CLIENTS,
        "goals": {
            "alerts_per_s": GOAL_RATE,
            "alerts_per_s_servers": GOAL_SERVERS,
            "receipt_to_first_step_p99_s": GOAL_LATENCY_S,
        },
    }


def _one_config(
    config: Config, root: Path, store: str | Path, sizes: Sizes, database: Callable[[], list[int]]
) -> dict[str, Any]:
    """One row: ``database`` lists PostgreSQL's processes (none for SQLite), for the CPU figures."""
    hosts = [f"h{i:04d}" for i in range(int(STEADY_RATE * sizes.steady_s) + 10)]
    setup = Setup.write(root, {"bench-alert": RUNBOOK}, hosts, "fleet")
    servers = Servers(setup, store, ("--workers", "8"))
    try:
        servers.start(config.servers)
        urls = [s.url + "/alertmanager" for s in servers.started]
        meter = CpuMeter(lambda: [s.process.pid for s in servers.started], database)
        result = asyncio.run(_measure(urls, store, sizes, meter))
    finally:
        servers.close()
    return {"store": config.dialect, "servers": config.servers, **result}


async def _measure(urls: list[str], store: str | Path, sizes: Sizes, meter: CpuMeter) -> dict[str, Any]:
    result: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        distinct = [webhook(alert("BenchAlert", f"x{i}", f"dist-{i}")) for i in range(sizes.distinct)]
        result["distinct"] = await _burst(session, _round_robin(urls, distinct), len(distinct), meter)
        result["distinct"]["persisted"] = _count(store, "dist-%")
        same = [webhook(alert("BenchAlert", "x-same", "same"))] * sizes.duplicate
        result["duplicate"] = await _burst(session, _round_robin(urls, same), len(same))
        result["duplicate"]["persisted"] = _count(store, "same")
        if len(urls) > 1:
            every = [webhook(alert("BenchAlert", f"y{i}", f"all-{i}")) for i in range(sizes.every_server)]
            jobs = [(url, body) for body in every for url in urls]  # each alert to each server at once
            result["every_server"] = await _burst(session, jobs, len(every), meter)
            result["every_server"]["persisted"] = _count(store, "all-%")
        result["drain_s"] = _drain(store)
        sent = await _steady(session, urls, sizes.steady_s)
    latency = _latencies(store, sent, wait_s=30.0)
    result["latency_s"], result["receipt_to_run_started_s"] = latency["first_step"], latency["run_started"]
    result["first_steps_span_s"] = latency["first_steps_span"][0] if latency["first_steps_span"] else 0.0
    return result


def _drain(store: str | Path, timeout: float = 300.0) -> float:
    """Seconds until no entry of the bursts is queued or running: the steady alerts must not wait
    behind them (a worker claims the oldest entry first)."""
    from engine.core.queue_read import EntryState, QueueReader

    started = time.perf_counter()

    def drained() -> bool:
        queue = QueueReader(store)
        try:
            return queue.count(EntryState.QUEUED, EntryState.RUNNING) == 0
        finally:
            queue.close()

    wait_until(drained, "the queue to drain after the bursts", timeout, every=0.1)
    return time.perf_counter() - started


def _round_robin(urls: list[str], bodies: list[bytes]) -> list[tuple[str, bytes]]:
    return [(urls[i % len(urls)], body) for i, body in enumerate(bodies)]


async def _burst(
    session: aiohttp.ClientSession, jobs: list[tuple[str, bytes]], alerts: int, meter: CpuMeter | None = None
) -> dict[str, Any]:
    """Send every (url, body) with :data:`CLIENTS` concurrent clients; the queued ids the answers name,
    and (with ``meter``) where the CPU went meanwhile."""
    pending = list(reversed(jobs))
    ok = 0
    queued: list[int] = []

    async def client() -> None:
        nonlocal ok
        while pending:
            url, body = pending.pop()
            async with session.post(url, data=body) as answer:
                text = await answer.read()
                if answer.status == 200:
                    ok += 1
                    queued.extend(json.loads(text)["queued"])

    cpu_before = meter.snapshot() if meter else None
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - started
    cpu = CpuMeter.spent(cpu_before, meter.snapshot()) if meter and cpu_before else {}
    return {
        "cpu": cpu,
        "alerts": alerts,
        "webhooks": len(jobs),
        "ok": ok,
        "queued": len(queued),
        "queued_distinct": len(set(queued)),
        "seconds": elapsed,
        "per_s": alerts / elapsed,
    }


async def _steady(session: aiohttp.ClientSession, urls: list[str], duration: float) -> list[str]:
    """One alert every 20 ms for ``duration`` seconds, each for its own inventory host, round-robin."""
    fingerprints: list[str] = []
    tasks = []
    started = time.perf_counter()
    index = 0
    while time.perf_counter() - started < duration:
        fingerprint = f"steady-{index}"
        body = webhook(alert("BenchAlert", f"h{index:04d}", fingerprint))
        url = urls[index % len(urls)]
        tasks.append(asyncio.create_task(session.post(url, data=body)))
        fingerprints.append(fingerprint)
        index += 1
        await asyncio.sleep(max(0.0, started + index / STEADY_RATE - time.perf_counter()))
    for task in tasks:
        answer = await task
        if answer.status != 200:
            raise RuntimeError(f"a steady alert was answered {answer.status}: {await answer.text()}")
        answer.release()
    return fingerprints


def _latencies(store: str | Path, fingerprints: list[str], wait_s: float) -> dict[str, list[float]]:
    """Seconds from each steady alert's receipt to its run's first step, and to its run's start (waits
    for the runs)."""
    query = (
        "SELECT q.received_at, r.started_at, min(s.started_at) FROM alert_queue q"
        " JOIN runs r ON r.id = q.run_id JOIN steps s ON s.run_id = q.run_id"
        " WHERE q.fingerprint LIKE ? AND s.started_at IS NOT NULL GROUP BY q.id, q.received_at, r.started_at"
    )

    def all_started() -> list[tuple[Any, ...]] | None:
        rows = read(store, query, ("steady-%",))
        return rows if len(rows) >= len(fingerprints) else None

    try:
        rows = wait_until(all_started, "every steady alert's run to start", wait_s, every=0.2)
    except RuntimeError:
        rows = read(store, query, ("steady-%",))  # reported: the table shows how many started
    return {
        "first_step": [float(first) - float(received) for received, _, first in rows],
        "run_started": [float(run) - float(received) for received, run, _ in rows],
        "first_steps_span": [max(float(r[2]) for r in rows) - min(float(r[2]) for r in rows)] if rows else [],
    }


def _count(store: str | Path, fingerprint: str) -> int:
    """Queue rows whose fingerprint is LIKE ``fingerprint``."""
    return int(read(store, "SELECT count(*) FROM alert_queue WHERE fingerprint LIKE ?", (fingerprint,))[0][0])


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _print(rows: dict[str, dict[str, Any]], sizes: Sizes) -> None:
    base = next(iter(rows.values()))

    def goal(row: dict[str, Any]) -> str:
        if row["store"] != "postgresql" or row["servers"] != GOAL_SERVERS:
            return "-"
        return "PASS" if row["distinct"]["per_s"] >= GOAL_RATE else "FAIL"

    for kind, title in (
        ("distinct", "distinct alerts persisted"),
        ("duplicate", "one alert again and again"),
    ):
        print_table(
            f"{title}, {CLIENTS} concurrent clients in all, one alert per webhook, round-robin over the servers",
            ["store", "sent", "answered 200", "queued", "persisted", "per second", "x SQLite, 1 server"]
            + ([f"goal >= {GOAL_RATE:,.0f}/s ({GOAL_SERVERS} on PostgreSQL)"] if kind == "distinct" else []),
            [
                [
                    name,
                    r[kind]["alerts"],
                    r[kind]["ok"],
                    r[kind]["queued"],
                    r[kind]["persisted"],
                    f"{r[kind]['per_s']:,.0f}",
                    ratio(r[kind]["per_s"], base[kind]["per_s"]),
                ]
                + ([goal(r)] if kind == "distinct" else [])
                for name, r in rows.items()
            ],
        )
    _print_cpu(rows)
    every = {name: r["every_server"] for name, r in rows.items() if "every_server" in r}
    print_table(
        f"every alert to every server ({sizes.every_server} distinct alerts, each sent to each server at once)",
        [
            "store",
            "webhooks",
            "answered 200",
            "queued (answers)",
            "persisted",
            "each queued once",
            "alerts/s",
            "webhooks/s",
        ],
        [
            [
                name,
                e["webhooks"],
                e["ok"],
                e["queued"],
                e["persisted"],
                "yes" if e["queued"] == e["queued_distinct"] == e["persisted"] == e["alerts"] else "NO",
                f"{e['per_s']:,.0f}",
                f"{e['webhooks'] / e['seconds']:,.0f}",
            ]
            for name, e in every.items()
        ],
    )
    expected = int(STEADY_RATE * sizes.steady_s)
    print_table(
        f"receipt to first step at {STEADY_RATE:g} alerts/s for {sizes.steady_s:g} s (~{expected} runs)",
        [
            "store",
            "bursts drained in",
            "runs started",
            "median",
            "p90",
            "p99",
            "max",
            "to run start: median",
            "runs started/s",
            f"goal p99 < {GOAL_LATENCY_S * 1000:g} ms",
        ],
        [
            [
                name,
                seconds(r["drain_s"]),
                *_latency_row(r["latency_s"], r["receipt_to_run_started_s"], r["first_steps_span_s"]),
            ]
            for name, r in rows.items()
        ],
    )


def _print_cpu(rows: dict[str, dict[str, Any]]) -> None:
    """Where the CPU went during the distinct burst, and the rate the machine's cores could carry at that cost."""
    cores = os.cpu_count() or 1
    table = []
    for name, r in rows.items():
        cpu, alerts = r["distinct"]["cpu"], r["distinct"]["alerts"]
        per = {k: cpu[k] / alerts * 1000 for k in ("servers_s", "postgresql_s", "client_s")}
        total = sum(per.values())
        table.append(
            [
                name,
                f"{cpu['machine_busy']:.0%}",
                f"{per['servers_s']:.1f}",
                f"{per['postgresql_s']:.1f}" if r["store"] == "postgresql" else "-",
                f"{per['client_s']:.1f}",
                f"{total:.1f}",
                f"{cores / total * 1000:,.0f}/s" if total else "-",
            ]
        )
    print_table(
        "CPU during the distinct burst, in ms per alert (PostgreSQL: its processes alive at both ends of the burst)",
        ["store", "machine busy", "servers", "PostgreSQL", "clients (this process)", "sum",
         f"{cores} cores / sum"],
        table,
    )  # fmt: skip


def _latency_row(latency: list[float], to_run: list[float], span: float) -> list[object]:
    """``span``: seconds from the first run's first step to the last's (how fast runs were started)."""
    if not latency:
        return [0, "-", "-", "-", "-", "-", "-", "FAIL"]
    p99 = _p(latency, 0.99)
    return [
        len(latency),
        seconds(statistics.median(latency)),
        seconds(_p(latency, 0.9)),
        seconds(p99),
        seconds(max(latency)),
        seconds(statistics.median(to_run)),
        f"{(len(latency) - 1) / span:.0f}" if span > 0 else "-",
        "PASS" if p99 < GOAL_LATENCY_S else "FAIL",
    ]
