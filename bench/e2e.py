"""End-to-end load: `lustrax simulate` at a rising rate against a whole local stack, until the lag
from the ingest API's acknowledgement to ClickHouse passes 2 s p99; then a soak at half the highest
sustained rate.

    .venv/bin/python -m bench.e2e [--rates 250,500,1000,...] [--step-seconds 30] [--soak-seconds 600]
                                  [--heat-emit-interval 0.5] [--sink-batch-interval 0.5] [--skip-soak]

The stack is `lustrax up --detach` in a scratch LUSTRAX_HOME on free ports, every component, the
local defaults except the heat worker's emission interval (LUSTRAX_HEAT_EMIT_INTERVAL_S, 10 s by
default: a floor under the heat lag that no rate changes; --heat-emit-interval sets it) and the
sink's batch interval (LUSTRAX_SINK_BATCH_INTERVAL_S, 1 s by default: the longest a row waits for
its insert, in both lags; --sink-batch-interval sets it). Both are what an operator who wants
low-latency rows sets; the stack's defaults favour fewer, larger writes.

After a 15 s warm-up at the first rate (not counted), each step runs `lustrax simulate --rate R --duration S` (its own process, the real command). Beside
it the benchmark sends probes through the same API: a view every 100 ms, each on a video of its own,
with the project's client, and records when the API acknowledged it. Two lags per probe:
- store lag: acknowledgement -> the row visible in ClickHouse `views` (its `ingested_at`, set by
  the server when the sink's insert lands);
- heat lag: acknowledgement -> the first `heat_scores` row of its video (the heat worker scored it,
  the sink stored it).
A rate is delivered when simulate sent at least 95 % of it with no failed event, and sustained when
both lags also stay at or under 2 s p99; the steps go on while rates are delivered and stop past
the first rate over the lag goal after a sustained one. The soak runs at half the highest
sustained rate (half the highest delivered one, said so, when none met the goal). CPU (share of one core) and RSS of every process of the stack are sampled
over each step from /proc. The baseline is the offered rate itself: what the step asked for
against what went through. The soak samples lag and RSS per window: flat is what it should show.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proc import cpu_seconds, rss_kib
from common.process import free_port
from common.settings import Settings, load_settings
from common.tokens import issue_token
from infra.clickhouse.analyst import _ask_sink
from lustrax.stack import read_state
from producers.client import AsyncIngestClient, IngestClientError

LAG_GOAL_S = 2.0
PROBE_EVERY_S = 0.1
PORT_SETTINGS = ("KAFKA_CONTROLLER_PORT", "EDGE_PORT", "INGEST_PORT", "TRANSCODE_WEB_PORT", "SINK_QUERY_PORT",
                 "HEAT_WEB_PORT", "MODERATION_WEB_PORT", "WS_PORT", "RECS_WEB_PORT", "RECS_MILVUS_PORT")


def stack_env(home: Path, heat_emit_interval_s: float, sink_batch_interval_s: float) -> dict[str, str]:
    env = {"LUSTRAX_HOME": str(home), "LUSTRAX_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
           "LUSTRAX_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "LUSTRAX_HEAT_EMIT_INTERVAL_S": str(heat_emit_interval_s),
           "LUSTRAX_SINK_BATCH_INTERVAL_S": str(sink_batch_interval_s)}
    env.update({f"LUSTRAX_{name}": str(free_port()) for name in PORT_SETTINGS})
    return env


def lustrax(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lustrax.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def query(settings: Settings, sql: str, parameters: dict[str, Any]) -> list[list[Any]]:
    """Through the sink's endpoint only (the sink holds the embedded engine)."""
    for _ in range(120):
        answer = _ask_sink(settings, sql, parameters)
        if answer is not None:
            return answer[1]
        time.sleep(0.5)
    raise RuntimeError("the sink's query endpoint does not answer")


@dataclass
class Probes:
    """A view every PROBE_EVERY_S on a fresh video; the acknowledgement time of each."""

    settings: Settings
    run: str
    acked: dict[str, float] = field(default_factory=dict)  # video_id -> wall time of the 202
    refused: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Probes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    async def _run(self) -> None:
        token = issue_token(self.settings.jwt_signing_secret, "e2e-probe", ("service",), 86400)
        url = f"http://127.0.0.1:{self.settings.ingest_port}"
        async with AsyncIngestClient(url, token, max_retries=0) as client:
            n = 0
            next_at = time.monotonic()
            while not self.stopping.is_set():
                video = f"probe-{self.run}-{n}"
                try:
                    await client.send_event({"type": "view", "video_id": video, "user_id": "probe",
                                             "session_id": video})
                    self.acked[video] = time.time()
                except IngestClientError:
                    self.refused += 1
                n += 1
                next_at += PROBE_EVERY_S
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def lags(settings: Settings, acked: dict[str, float], wait_s: float = 15.0) -> tuple[list[float], list[float], int]:
    """(store lags, heat lags, probes never seen) for the probes in `acked`, after waiting `wait_s`
    for the last ones; a probe not visible by then counts as lagging by the time waited."""
    time.sleep(wait_s)
    videos = sorted(acked)
    store: dict[str, float] = {}
    heat: dict[str, float] = {}
    for offset in range(0, len(videos), 2000):
        chunk = videos[offset:offset + 2000]
        for table, found in (("views", store), ("heat_scores", heat)):
            rows = query(settings, f"SELECT video_id, toUnixTimestamp64Milli(min(ingested_at)) FROM {{db}}.{table} "
                         "WHERE video_id IN {v:Array(String)} GROUP BY video_id", {"v": chunk})
            found.update((video, int(ms) / 1000) for video, ms in rows)
    now = time.time()
    store_lags = [store.get(v, now) - acked[v] for v in videos]
    heat_lags = [heat.get(v, now) - acked[v] for v in videos]
    return store_lags, heat_lags, sum(1 for v in videos if v not in store or v not in heat)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ProcessSampler:
    """CPU seconds and RSS of each process of the stack (pids from its state file), sampled."""

    def __init__(self, settings: Settings, extra: dict[str, int] | None = None) -> None:
        state = read_state(settings) or {}
        self.pids = {name: int(entry["pid"]) for name, entry in state.get("components", {}).items()}
        self.pids.update(extra or {})
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.last = dict(self.start)  # a process that ended keeps its last reading
        self.began = time.monotonic()
        self.rss_peak: dict[str, int] = dict.fromkeys(self.pids, 0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for name, pid in self.pids.items():
                self.rss_peak[name] = max(self.rss_peak[name], rss_kib(pid) // 1024)
                self.last[name] = max(self.last[name], cpu_seconds(pid))

    def finish(self) -> dict[str, tuple[float, int]]:
        """name -> (CPU share of one core over the sampling, peak RSS MiB)."""
        self.stop.set()
        self.thread.join(timeout=5)
        wall = time.monotonic() - self.began
        return {name: ((max(self.last[name], cpu_seconds(pid)) - self.start[name]) / wall, self.rss_peak[name])
                for name, pid in self.pids.items()}


SENT = re.compile(r"sent (\d+) events in ([\d.]+) s \((\d+)/s\); failed (\d+)")


@dataclass
class Step:
    rate: float
    achieved: float
    failed: int
    store_p50: float
    store_p99: float
    heat_p50: float
    heat_p99: float
    unseen: int
    probes: int
    processes: dict[str, tuple[float, int]]

    @property
    def delivered(self) -> bool:
        """Everything offered went through: simulate kept the rate and nothing failed."""
        return self.achieved >= 0.95 * self.rate and self.failed == 0

    @property
    def sustained(self) -> bool:
        return self.delivered and self.store_p99 <= LAG_GOAL_S and self.heat_p99 <= LAG_GOAL_S

    def line(self) -> str:
        return (f"rate {self.rate:>6,.0f}/s: sent {self.achieved:>6,.0f}/s, failed {self.failed}; store lag p50 "
                f"{self.store_p50:.2f} s p99 {self.store_p99:.2f} s; heat lag p50 {self.heat_p50:.2f} s p99 "
                f"{self.heat_p99:.2f} s ({self.probes} probes, {self.unseen} unseen) -> "
                f"{'sustained' if self.sustained else 'delivered, lag over the goal' if self.delivered else 'NOT delivered'}")


def run_step(env: dict[str, str], settings: Settings, rate: float, seconds: float, seed: int) -> Step:
    run = uuid.uuid4().hex[:8]
    users, videos = max(200, int(rate * 2)), max(50, int(rate / 5))
    simulate = subprocess.Popen([sys.executable, "-m", "lustrax.cli", "simulate", "--rate", str(rate),
                                 "--duration", str(seconds), "--users", str(users), "--videos", str(videos),
                                 "--seed", str(seed), "--quiet"],
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = ProcessSampler(settings, {"simulate": simulate.pid, "bench (probes)": os.getpid()})
    with Probes(settings, run) as probes:
        out, err = simulate.communicate(timeout=seconds + 300)
    processes = sampler.finish()
    match = SENT.search(out)
    achieved, failed = (float(match.group(3)), int(match.group(4))) if match else (0.0, -1)
    if not match:
        print(f"  simulate said: {out.strip()} {err.strip()[-300:]}", flush=True)
    store, heat, unseen = lags(settings, probes.acked)
    return Step(rate, achieved, failed, quantile(store, 0.5), quantile(store, 0.99), quantile(heat, 0.5),
                quantile(heat, 0.99), unseen, len(probes.acked), processes)


def print_processes(processes: dict[str, tuple[float, int]]) -> None:
    for name, (cpu, rss) in sorted(processes.items()):
        print(f"    {name:<16} CPU {cpu * 100:6.1f} % of a core   RSS peak {rss:5d} MiB")


def soak(env: dict[str, str], settings: Settings, rate: float, seconds: float, window_s: float = 60.0) -> None:
    print(f"soak at {rate:,.0f} events/s for {seconds:.0f} s (windows of {window_s:.0f} s):", flush=True)
    users, videos = max(200, int(rate * 2)), max(50, int(rate / 5))
    simulate = subprocess.Popen([sys.executable, "-m", "lustrax.cli", "simulate", "--rate", str(rate),
                                 "--duration", str(seconds), "--users", str(users), "--videos", str(videos),
                                 "--seed", "99", "--quiet"],
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = ProcessSampler(settings, {"simulate": simulate.pid})
    windows: list[dict[str, Any]] = []
    with Probes(settings, uuid.uuid4().hex[:8]) as probes:
        began = time.monotonic()
        while simulate.poll() is None and (left := seconds - (time.monotonic() - began)) > 1.0:
            time.sleep(min(window_s, left))
            done = dict(probes.acked)
            probes.acked.clear()
            rss = {name: round(rss_kib(pid) / 1024) for name, pid in sampler.pids.items()}
            windows.append({"at_s": round(time.monotonic() - began), "probes": done, "rss": rss})
    out, _ = simulate.communicate()
    processes = sampler.finish()
    time.sleep(10)  # the last window's probes land; a probe still unseen counts until this moment
    for window in windows:
        store, heat, unseen = lags(settings, window["probes"], wait_s=0.0)
        rss = ", ".join(f"{name} {mib}" for name, mib in sorted(window["rss"].items()))
        print(f"  t={window['at_s']:>4} s: store lag p99 {quantile(store, 0.99):.2f} s, heat lag p99 "
              f"{quantile(heat, 0.99):.2f} s, unseen {unseen}; RSS MiB: {rss}", flush=True)
    match = SENT.search(out)
    print(f"  simulate: {match.group(0) if match else out.strip()}")
    print("  per process over the soak:")
    print_processes(processes)
    first, last = windows[0]["rss"], windows[-1]["rss"]
    growth = {name: last[name] - first[name] for name in first}
    print(f"  RSS growth first -> last window (MiB): {json.dumps(growth)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,250,500,1000,1500,2000,3000,4000,6000,8000",
                        help="rising rates to try, events/s (comma-separated)")
    parser.add_argument("--step-seconds", type=float, default=30.0)
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--heat-emit-interval", type=float, default=0.5,
                        help="LUSTRAX_HEAT_EMIT_INTERVAL_S of the stack (default 0.5; the stack's own default is 10)")
    parser.add_argument("--sink-batch-interval", type=float, default=0.5,
                        help="LUSTRAX_SINK_BATCH_INTERVAL_S of the stack (default 0.5; the stack's own default is 1)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="lustrax-e2e-") as tmp:
        env = stack_env(Path(tmp), args.heat_emit_interval, args.sink_batch_interval)
        began = time.monotonic()
        up = lustrax(env, "up", "--detach")
        if up.returncode != 0:
            print(up.stderr, file=sys.stderr)
            return 1
        settings = load_settings(**{key.removeprefix("LUSTRAX_").lower(): value for key, value in env.items()})
        print(f"stack up in {time.monotonic() - began:.1f} s (heat emit interval {args.heat_emit_interval} s, "
              f"sink batch {settings.sink_batch_rows} rows / {settings.sink_batch_interval_s} s); "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
        try:
            warm = run_step(env, settings, rates[0], 15, seed=0)  # first inserts, JIT, caches: not counted
            print(f"warm-up, not counted: {warm.line()}", flush=True)
            best: Step | None = None  # the highest rate within the lag goal
            delivered: Step | None = None  # the highest rate that went through in full, whatever the lag
            for index, rate in enumerate(rates):
                step = run_step(env, settings, rate, args.step_seconds, seed=index + 1)
                print(step.line(), flush=True)
                print_processes(step.processes)
                if not step.delivered:
                    break
                delivered = step
                if step.sustained:
                    best = step
                elif best is not None:
                    break  # past the knee
            print(f"highest sustained (lag p99 <= {LAG_GOAL_S:g} s): "
                  + (f"{best.rate:,.0f} events/s (store p99 {best.store_p99:.2f} s, heat p99 {best.heat_p99:.2f} s)"
                     if best else "none"), flush=True)
            if delivered:
                print(f"highest delivered in full: {delivered.rate:,.0f} events/s (store p99 "
                      f"{delivered.store_p99:.2f} s, heat p99 {delivered.heat_p99:.2f} s); load average now "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
            soak_base = best or delivered
            if soak_base is None:
                return 1
            if not args.skip_soak:
                if best is None:
                    print("no rate within the lag goal: the soak runs at half the highest delivered rate")
                soak(env, settings, soak_base.rate / 2, args.soak_seconds)
        finally:
            lustrax(env, "down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
