"""`make bench`: every performance figure of Chorus beside its baseline, measured in one run.

Baselines are raw Celery (`bench/rawcelery.py`: same broker, threads pool, late acks, the
same SDK call to the simulator, nothing of Chorus) or the ideal wall-clock. Each phase starts
its own workers and simulator and stops them before the next, so phases do not compete for
the CPU. One table at the end; the exit status is non-zero only when a run fails, never when
a target is missed.

    .venv/bin/python -m bench [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from celery import chain, group

from bench import batches as batched_runs
from bench import documents as shared_documents
from bench import memory as redis_memory
from bench import ratelimit, rawcelery, startup
from bench import tools as tool_loop
from dispatcher import Dispatcher
from dispatcher.embedded import (
    ManagedProcess,
    celery_worker_argv,
    start_redis,
    start_simulator,
    start_worker,
    wait_until,
)
from workers.app import create_app
from workers.claude import _output_schema
from workers.flow import StepOptions, output_model
from workers.models import DEFAULT_PRICES, DEFAULT_TIERS, Usage, cost_micro_usd
from workers.registry import AGENTS
from workers.settings import Settings

TEXT = "Summarize the storage options for the archive"
PHASE_NAMES = (
    "hop",
    "fanout",
    "concurrency",
    "throughput",
    "ratelimit",
    "cost",
    "tools",
    "documents",
    "memory",
    "batches",
    "startup",
)


@dataclass
class Row:
    figure: str
    chorus: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.3f}"
        verdict = {True: "met", False: "MISSED", None: ""}[self.met]
        return [self.figure, self.chorus, self.baseline, ratio, self.target, verdict]


class Bench:
    """One Redis for the whole run; each phase gets its own database, simulator and workers."""

    def __init__(self, work: Path, redis_url: str) -> None:
        self.work = work
        self.redis_url = redis_url
        self.base = {
            k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))
        }
        self.failures: list[str] = []
        self._next_db = 0

    def expect(self, ok: bool, what: str) -> None:
        """Note a run that did not end as it should; the table still prints."""
        if not ok:
            self.failures.append(what)

    def db_url(self) -> str:
        self._next_db += 1
        url = self.redis_url.rsplit("/", 1)[0] + f"/{self._next_db}"
        redis.Redis.from_url(url).flushdb()
        return url

    @contextmanager
    def simulator(self, latency: float) -> Iterator[str]:
        process, url = start_simulator(self.work, latency=latency)
        try:
            yield url
        finally:
            process.stop()

    def chorus_env(self, sim_url: str, **extra: str) -> dict[str, str]:
        return {
            **self.base,
            "CHORUS_REDIS_URL": self.db_url(),
            "ANTHROPIC_BASE_URL": sim_url,
            "ANTHROPIC_API_KEY": "sk-sim-bench",
            "CHORUS_AUDIT": "0",
            "CHORUS_RATE_LIMITER": "0",
            **extra,
        }

    @contextmanager
    def chorus(
        self, agents: Sequence[str], sim_url: str, concurrency: int, **extra: str
    ) -> Iterator[tuple[Dispatcher, list[ManagedProcess]]]:
        """One worker process per agent; audit and limiter off (benchmarked on their own)."""
        env = self.chorus_env(sim_url, **extra)
        with ExitStack() as stack:
            workers = []
            for agent in agents:
                worker = start_worker([agent], env, self.work, concurrency=concurrency)
                stack.callback(worker.stop)
                workers.append(worker)
            dispatcher = Dispatcher(create_app(Settings.from_env(env)))
            wanted = {AGENTS[a].queue for a in agents}
            wait_until(
                lambda: wanted <= dispatcher.consumed_queues(0.5), timeout=60, what="bench workers"
            )
            yield dispatcher, workers

    @contextmanager
    def raw(self, sim_url: str, concurrency: int) -> Iterator[tuple[Any, ManagedProcess]]:
        """A raw Celery worker on its own database; yields the configured app and the worker."""
        url = self.db_url()
        env = {
            **self.base,
            "RAW_REDIS_URL": url,
            "ANTHROPIC_BASE_URL": sim_url,
            "ANTHROPIC_API_KEY": "sk-sim-bench",
        }
        node = f"raw.{os.getpid()}.{self._next_db}@{platform.node()}"
        argv = celery_worker_argv("bench.rawcelery", rawcelery.QUEUE, node, concurrency)
        worker = ManagedProcess(f"raw-{self._next_db}", argv, env, self.work)
        app = rawcelery.producer(url)
        try:
            wait_until(
                lambda: bool(app.control.ping([node], timeout=0.5)), timeout=60, what="raw worker"
            )
            yield app, worker
        finally:
            worker.stop()

    def chorus_hop(self, dispatcher: Dispatcher, agent: str = "summarizer") -> float:
        started = time.perf_counter()
        outcome = dispatcher.submit(TEXT, pattern="pipeline", steps=[agent]).wait(120)
        self.expect(outcome.status == "done", f"hop on {agent}: {outcome.status}")
        return time.perf_counter() - started

    def raw_hop(self, app: Any) -> float:
        started = time.perf_counter()
        raw_call(app, TEXT).apply_async().get(timeout=120)
        return time.perf_counter() - started


def agent_request(agent: str) -> dict[str, Any]:
    """What `agent` asks the model (model, system prompt, output schema, max_tokens), so the
    raw baseline asks the simulator for exactly the same work."""
    spec = AGENTS[agent]
    return {
        "model": Settings().model_for(spec.tier),
        "system": spec.system_prompt,
        "schema": _output_schema(output_model(spec.output_model, StepOptions())),
        "max_tokens": spec.max_tokens,
    }


def raw_call(app: Any, text: str, agent: str = "summarizer") -> Any:
    request = agent_request(agent)
    return app.signature("raw.call", args=(text, request), queue=rawcelery.QUEUE)


def raw_relay(app: Any, agent: str = "summarizer") -> Any:
    request = agent_request(agent)
    return app.signature("raw.relay", kwargs={"request": request}, queue=rawcelery.QUEUE)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# -- 1. hop overhead --------------------------------------------------------------------------


def hop_overhead(bench: Bench, hops: int) -> list[Row]:
    with (
        bench.simulator(0.0) as sim,
        bench.chorus(["summarizer"], sim, 16) as (dispatcher, _),
        bench.raw(sim, 16) as (raw_app, _),
    ):
        for _ in range(20):  # warm connections, caches, thread pools
            bench.chorus_hop(dispatcher)
            bench.raw_hop(raw_app)
        ours: list[float] = []
        theirs: list[float] = []
        for number in range(hops):  # alternate, so drift on the machine hits both alike
            if number % 2:
                ours.append(bench.chorus_hop(dispatcher))
                theirs.append(bench.raw_hop(raw_app))
            else:
                theirs.append(bench.raw_hop(raw_app))
                ours.append(bench.chorus_hop(dispatcher))
    rows = []
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        a, b = percentile(ours, q) * 1000, percentile(theirs, q) * 1000
        rows.append(
            Row(
                f"1. hop round trip {name}, L = 0",
                f"{a:.1f} ms",
                f"raw Celery {b:.1f} ms",
                a / b,
                "<= 1.3",
                a / b <= 1.3,
            )
        )
    return rows


# -- 2, 3. fan-out and pipeline ---------------------------------------------------------------


def timed_task(bench: Bench, dispatcher: Dispatcher, **submit: Any) -> tuple[float, float]:
    """Wall-clock seconds and the final step's own seconds (the merge call of a fan-out)."""
    started = time.perf_counter()
    handle = dispatcher.submit(TEXT, **submit)
    outcome = handle.wait(300)
    wall = time.perf_counter() - started
    bench.expect(outcome.status == "done", f"{submit.get('pattern')}: {outcome.status}")
    return wall, handle.trace()[-1].latency_ms / 1000


def raw_timed(canvas: Any) -> float:
    started = time.perf_counter()
    canvas.apply_async().get(timeout=300)
    return time.perf_counter() - started


def fanout_and_pipeline(bench: Bench, latency: float, widths: list[int]) -> list[Row]:
    L = latency
    slots = max(64, max(widths) + 8)
    rows: list[Row] = []
    agents = ["research", "merger", "drafter", "critic"]
    with (
        bench.simulator(L) as sim,
        bench.chorus(agents, sim, slots, CHORUS_WORKER_CONCURRENCY=str(slots)) as (dispatcher, _),
        bench.raw(sim, slots) as (raw_app, _),
    ):
        call = raw_call(raw_app, TEXT, "research")
        timed_task(bench, dispatcher, pattern="pipeline", steps=["research"])  # warm up
        sequential, _ = timed_task(
            bench, dispatcher, pattern="pipeline", steps=["research", "research", "research"]
        )
        for width in widths:
            aspects = [(f"aspect_{i}", f"Look at angle {i}.") for i in range(width)]
            # 50 branches reserve their worst case (prompt + max_tokens) at once: more than
            # the default $1 budget, which would (rightly) refuse some of them.
            wide = {"pattern": "fanout", "aspects": aspects, "budget_usd": 10.0}
            timed_task(bench, dispatcher, **wide)  # warm threads
            wall, merge = timed_task(bench, dispatcher, **wide)
            raw_timed(group([call] * width))
            raw = raw_timed(group([call] * width))
            ratio = (wall - merge) / L
            rows.append(
                Row(
                    f"2. {width}-way fan-out, L = {L:g} s: (wall - merge) / L",
                    f"{wall:.2f} s (merge {merge:.2f} s)",
                    f"raw Celery group {raw / L:.3f} L",
                    ratio,
                    "<= 1.05",
                    ratio <= 1.05,
                )
            )
            if width == 3:
                saved = 1 - (wall - merge) / sequential
                rows.append(
                    Row(
                        "2. 3-way fan-out: time saved vs the 3 calls in sequence",
                        f"{saved:.1%}",
                        f"3 calls in sequence {sequential:.2f} s",
                        None,
                        "~60 % (limit 66.7 %)",
                        saved >= 0.6,
                    )
                )
        timed_task(bench, dispatcher, pattern="pipeline")
        wall, _ = timed_task(bench, dispatcher, pattern="pipeline")  # research, drafter, critic

        def steps() -> Any:
            """A fresh chain per run: a chain that ran keeps its task ids, and running it
            again would only read the old results back."""
            return chain(
                raw_call(raw_app, TEXT, "research"),
                raw_relay(raw_app, "drafter"),
                raw_relay(raw_app, "critic"),
            )

        raw_timed(steps())
        raw_chain = raw_timed(steps())
        rows.append(
            Row(
                f"3. 3-step pipeline, L = {L:g} s: wall / 3L",
                f"{wall:.2f} s",
                f"raw Celery chain {raw_chain / (3 * L):.3f}",
                wall / (3 * L),
                "<= 1.03",
                wall / (3 * L) <= 1.03,
            )
        )
    return rows


# -- 4. concurrency ---------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def backlog_run(
    control: Any, queue: str, node: str, submit: Callable[[], list[Callable[[], object]]]
) -> float:
    """Stop the worker consuming, queue the whole backlog, then time it from the restart."""
    control.cancel_consumer(queue, destination=[node], reply=True, timeout=5)
    waits = submit()
    started = time.perf_counter()
    control.add_consumer(queue, destination=[node], reply=True, timeout=5)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda wait: wait(), waits))
    return time.perf_counter() - started


def concurrency(bench: Bench, in_flight: int, latency: float) -> list[Row]:
    ideal = in_flight / latency
    rows = []
    with bench.simulator(latency) as sim:
        with bench.chorus(
            ["summarizer"], sim, in_flight, CHORUS_WORKER_CONCURRENCY=str(in_flight)
        ) as (dispatcher, [worker]):
            node = node_of(worker)

            def submit() -> list[Callable[[], object]]:
                handles = [
                    dispatcher.submit(f"{TEXT} {n}", pattern="pipeline", steps=["summarizer"])
                    for n in range(in_flight)
                ]
                return [lambda h=h: check(bench, h.wait(300).status) for h in handles]

            backlog_run(dispatcher.app.control, AGENTS["summarizer"].queue, node, submit)
            elapsed = backlog_run(dispatcher.app.control, AGENTS["summarizer"].queue, node, submit)
            ours, ours_rss = in_flight / elapsed, peak_rss_mb(worker.process.pid)
        with bench.raw(sim, in_flight) as (app, raw_worker):
            raw_node = node_of(raw_worker)

            def submit_raw() -> list[Callable[[], object]]:
                results = [raw_call(app, f"{TEXT} {n}").apply_async() for n in range(in_flight)]
                return [lambda r=r: r.get(timeout=300) for r in results]

            backlog_run(app.control, rawcelery.QUEUE, raw_node, submit_raw)
            raw_elapsed = backlog_run(app.control, rawcelery.QUEUE, raw_node, submit_raw)
            theirs, raw_rss = in_flight / raw_elapsed, peak_rss_mb(raw_worker.process.pid)
    rows.append(
        Row(
            f"4. one worker, {in_flight} in flight, L = {latency:g} s: calls/s / ideal",
            f"{ours:.0f}/s of {ideal:.0f}/s, peak RSS {ours_rss:.0f} MB",
            f"raw Celery {theirs / ideal:.3f} ({theirs:.0f}/s, RSS {raw_rss:.0f} MB)",
            ours / ideal,
            ">= 0.9",
            ours / ideal >= 0.9,
        )
    )
    return rows


def node_of(worker: ManagedProcess) -> str:
    argv = worker.process.args
    assert isinstance(argv, list)
    return str(argv[argv.index("-n") + 1])


def check(bench: Bench, status: str) -> None:
    bench.expect(status == "done", f"concurrency run: {status}")


# -- 5. throughput ----------------------------------------------------------------------------


def throughput(bench: Bench, requests: int) -> list[Row]:
    agents = ["router", "research", "code_review", "summarizer"]
    with (
        bench.simulator(0.0) as sim,
        bench.chorus(agents, sim, 16) as (dispatcher, _),
        bench.raw(sim, 16) as (raw_app, _),
    ):

        def routed(count: int) -> float:
            started = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                handles = list(pool.map(lambda n: dispatcher.submit(f"{TEXT} {n}"), range(count)))
                statuses = list(pool.map(lambda h: h.wait(300).status, handles))
            for status in statuses:
                bench.expect(status == "done", f"routed request: {status}")
            return count / (time.perf_counter() - started)

        def noops(count: int) -> float:
            started = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                results = list(
                    pool.map(
                        lambda _: raw_app.send_task("raw.noop", queue=rawcelery.QUEUE),
                        range(count),
                    )
                )
                list(pool.map(lambda r: r.get(timeout=300), results))
            return count / (time.perf_counter() - started)

        routed(20), noops(20)
        ours, theirs = routed(requests), noops(requests)
    return [
        Row(
            "5. throughput, L = 0: routed requests/s (2 agent hops, 2 model calls each)",
            f"{ours:.1f}/s",
            f"raw Celery no-op tasks {theirs:.1f}/s",
            ours / theirs,
            "reported",
            None,
        )
    ]


# -- 6. rate limits ---------------------------------------------------------------------------


def rate_limits(bench: Bench, seconds: float) -> list[Row]:
    limits = {"rpm": 240, "itpm": 2_000_000, "otpm": 400_000}
    results = {
        on: ratelimit.run(on, **limits, seconds=seconds, work=bench.work, redis_url=bench.db_url())
        for on in (True, False)
    }
    on, off = results[True], results[False]
    bench.expect(on["failed"] == 0, f"rate limiter on: {on['failed']} failed")
    return [
        Row(
            f"6. rate limiter, 4 workers, simulator at {limits['rpm']} rpm: achieved / limit",
            f"{on['efficiency']:.3f}, {on['rate_limited']} x 429",
            f"limiter off: {off['rate_limited']} x 429, {off['retries']} retries, "
            f"{off['failed']} failed",
            on["efficiency"],
            ">= 0.95, no 429",
            on["efficiency"] >= 0.95 and on["rate_limited"] == 0,
        )
    ]


# -- 7. cost ----------------------------------------------------------------------------------


COST_PATTERNS = ("route", "pipeline", "fanout", "consensus", "evaluate", "orchestrate")


def ledger_cost(sim_url: str) -> tuple[int, int]:
    """Micro-dollars billed by the simulator since the last clear, and its cache-read tokens."""
    with urllib.request.urlopen(f"{sim_url}/_sim/ledger", timeout=10) as answer:
        report = json.loads(answer.read())
    total = cached = 0
    for charge in report["calls"]:
        usage = Usage(**charge["usage"])
        total += cost_micro_usd(usage, DEFAULT_PRICES[charge["model"]])
        cached += usage.cache_read_input_tokens
    return total, cached


def clear_ledger(sim_url: str) -> None:
    request = urllib.request.Request(f"{sim_url}/_sim/ledger", method="DELETE")
    urllib.request.urlopen(request, timeout=10).close()


def cost(bench: Bench, requests: int) -> list[Row]:
    strong = DEFAULT_TIERS["strong"]
    setups = {
        "tiered": {},
        "strong": {"CHORUS_MODEL_FAST": strong, "CHORUS_PROMPT_CACHE": "0"},
    }
    per_request: dict[str, dict[str, tuple[float, int]]] = {}
    with bench.simulator(0.0) as sim:
        for setup, extra in setups.items():
            with bench.chorus(list(AGENTS), sim, 16, **extra) as (dispatcher, _):
                for pattern in COST_PATTERNS:
                    clear_ledger(sim)
                    for n in range(requests):
                        text = f"Should we move the archive to cold storage? Case {n}."
                        outcome = dispatcher.submit(text, pattern=pattern).wait(120)
                        bench.expect(
                            outcome.status in {"done", "needs_review"},
                            f"cost {setup} {pattern}: {outcome.status}",
                        )
                    total, cached = ledger_cost(sim)
                    per_request.setdefault(pattern, {})[setup] = (total / requests, cached)
    rows = []
    for pattern, figures in per_request.items():
        tiered, cached = figures["tiered"]
        baseline, _ = figures["strong"]
        rows.append(
            Row(
                f"7. cost per {pattern} request (simulator's ledger)",
                f"${tiered / 1e6:.6f} ({cached} cache-read tokens)",
                f"all strong, no cache ${baseline / 1e6:.6f}",
                tiered / baseline,
                "reported (< 1 saves)",
                None,
            )
        )
    return rows


# -- 8. tool loop -----------------------------------------------------------------------------


def tool_loops(bench: Bench, loops: int) -> list[Row]:
    result = tool_loop.run(loops, work=bench.work, redis_url=bench.db_url())
    return [
        Row(
            "8. tool loop, 3 turns: time per model turn (bench/tools.py)",
            f"{result['chorus_turn_ms']:.2f} ms (+{result['overhead_turn_ms']:.2f} ms/turn)",
            f"SDK tool_runner {result['sdk_turn_ms']:.2f} ms",
            result["ratio"],
            "reported",
            None,
        )
    ]


# -- 9. documents ----------------------------------------------------------------------------


def documents(bench: Bench) -> list[Row]:
    result = shared_documents.run(bench.db_url())
    return [
        Row(
            f"9. {result['branches']}-way fan-out over a 1 MB document: bytes published",
            f"{result['published_bytes'] / 1e3:.0f} kB "
            f"({result['per_branch_bytes'] / 1e3:.1f} kB/branch)",
            f"copied per branch {result['copied_bytes'] / 1e6:.1f} MB",
            result["ratio"],
            "reported (stored once)",
            None,
        )
    ]


# -- 10. Redis memory -------------------------------------------------------------------------


def memory(tasks: int) -> list[Row]:
    result = redis_memory.run(tasks)
    per_event = result["audit_bytes_per_event"]
    audit_share = result["audit_events_per_task"] * per_event
    return [
        Row(
            f"10. Redis memory per routed task ({result['done']}/{result['tasks']} done)",
            f"{result['bytes_per_task'] / 1e3:.1f} kB",
            f"of which audit stream {audit_share / 1e3:.1f} kB ({per_event / 1e3:.2f} kB/event)",
            audit_share / result["bytes_per_task"],
            "reported (bounded by TTL, MAXLEN)",
            None,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--only", metavar="PHASE", help="run one phase: " + ", ".join(PHASE_NAMES))
    args = parser.parse_args(argv)
    quick = args.quick
    if args.only is not None and args.only not in PHASE_NAMES:
        parser.error(f"--only takes one of: {', '.join(PHASE_NAMES)}")
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-"))
    server, url = start_redis(work)
    bench = Bench(work, url)
    started = time.perf_counter()
    rows: list[Row] = []
    phases: list[tuple[str, Callable[[], list[Row]]]] = [
        ("hop", lambda: hop_overhead(bench, 40 if quick else 300)),
        ("fanout", lambda: fanout_and_pipeline(bench, 1.0, [3, 10, 50])),
        ("concurrency", lambda: concurrency(bench, 100 if quick else 500, 2.0)),
        ("throughput", lambda: throughput(bench, 60 if quick else 300)),
        ("ratelimit", lambda: rate_limits(bench, 5 if quick else 20)),
        ("cost", lambda: cost(bench, 1 if quick else 3)),
        ("tools", lambda: tool_loops(bench, 20 if quick else 100)),
        ("documents", lambda: documents(bench)),
        ("memory", lambda: memory(100 if quick else 500)),
        ("batches", lambda: [Row(*r) for r in batched_runs.rows(bench.work, bench.db_url(), 20)]),
        ("startup", lambda: [Row(*r) for r in startup.rows(bench.work, bench.db_url())]),
    ]
    try:
        for name, phase in phases:
            if args.only not in (None, name):
                continue
            print(f"# {name} ...", file=sys.stderr, flush=True)
            rows.extend(phase())
    finally:
        server.stop()
    print(
        f"# chorus benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.perf_counter() - started:.0f} s"
    )
    header = ["figure", "Chorus", "baseline (same run)", "ratio", "target", ""]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    for failure in bench.failures:
        print(f"run did not end as expected: {failure}", file=sys.stderr)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
