"""The service end to end: a real `avgen serve` (Ray worker pool, SQLite job store, HTTP on loopback).

    python benchmarks/service.py [--only overhead|latency|throughput|store] [--quick] [--out PATH]
                                 [--repeats N] [--threads N]

Each server is `python -m avgen serve --port P --data-dir D --workers N` in its own process group (and
session), with API keys from AVGEN_API_KEYS and the per-key cap raised (AVGEN_MAX_QUEUED_PER_KEY) so that no
submission here is refused; it is measured only once GET /readyz says 200 (a worker has loaded the model), and
stopped at the end with SIGTERM to its process group, then SIGKILL to whatever of its session is left (Ray's
worker processes have process groups of their own). Each server starts a Ray of its own (RAY_TMPDIR private
to it; see `served`). The model is the default one (the shipped weights).

1. overhead: a 4 s generate job through HTTP (POST /v1/jobs, follow its SSE events until the stream closes
   after `succeeded`, GET the result and write it to a file) against the same request in one plain process
   (a child of this script, class Baseline: `Generator.load()` once, then `Generator.open` + `write_stream` to
   a file per request, what `avgen generate` and the worker's JobRunner do), same seed, steps and torch
   threads, score=false in both
   (scoring is the same work either way; leaving it out makes the generation, which the two share, smaller and
   the ratio stricter). One warm-up of each, then `--repeats` pairs, the order alternating within the pairs.
   Target: median(HTTP) <= 1.10 x median(in process).
2. latency: one long job running on the pool (1 worker), then 50 concurrent clients (asyncio, one
   httpx.AsyncClient each, their connection opened before the clock starts, three API keys) each POST 4
   generate jobs; p50/p99 of the POST round trip seen by the client. Target p99 <= 100 ms. Every job is
   canceled afterwards.
3. throughput: 16 queued 2 s generate jobs (score=false), with --workers 1 and with --workers 2: wall time
   from the first submit to the last job's finished_at (the server's clock; same machine), jobs/minute, and
   the ratio. One warm-up job per worker first.
4. store: the latency part's burst without HTTP or a server, straight on a JobStore from as many threads
   (see store_contention): SQLite's write lock as shipped against one process-level lock around each write.

Torch threads: the pool's actors use `--threads` of `avgen serve` where it has one (this script passes it),
else the pool's default (workers/pool.py start_pool: 1); the in-process baseline uses the same count.
The JSON records, for each part, the load average and the CPU seconds used by this script (with its baseline
child), by the server's process tree (API, Ray, actors) and by everything else on the machine (others share it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_snapshot, git_state, load_avg  # benchmarks/ is on sys.path (this folder)

from avgen.files import write_text_atomic

TEXT = "Hello from the Black Forest. This clip measures what the service adds."
KEY_OVERHEAD = "bench-overhead-key-0001"
KEYS_LATENCY = ("bench-latency-key-a-0001", "bench-latency-key-b-0002", "bench-latency-key-c-0003")
KEY_THROUGHPUT = "bench-throughput-key-0001"
ALL_KEYS = (KEY_OVERHEAD, *KEYS_LATENCY, KEY_THROUGHPUT)
OVERHEAD_TARGET = 1.10  # HTTP job time <= this x the in-process time
LATENCY_P99_TARGET_S = 0.100
READY_TIMEOUT_S = 300  # Ray start + model load on a loaded 2-core machine
JOB_TIMEOUT_S = 600

FULL = {
    "overhead": {"seconds": 4.0, "repeats": 5},
    "latency": {"clients": 50, "per_client": 4, "running_job_seconds": 24.0, "sequential": 20, "pace_s": 0.5},
    "throughput": {"jobs": 16, "seconds": 2.0, "workers": [1, 2]},
}
QUICK = {
    "overhead": {"seconds": 2.0, "repeats": 1},
    "latency": {"clients": 10, "per_client": 2, "running_job_seconds": 8.0, "sequential": 5, "pace_s": 0.5},
    "throughput": {"jobs": 4, "seconds": 1.0, "workers": [1, 2]},
}


# --- the server's process tree -------------------------------------------------------------------------------


def session_cpu(sid: int) -> dict[int, tuple[str, float]]:
    """The processes of session `sid` (from /proc): pid -> (name, CPU seconds so far, user + system)."""
    found, tick = {}, os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ... utime(11) stime(12)
        if int(fields[3]) == sid:
            found[int(entry)] = (
                stat[stat.index("(") + 1 : stat.rindex(")")],
                (int(fields[11]) + int(fields[12])) / tick,
            )
    return found


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    workers: int
    threads: int
    log: Path
    ready_s: float = 0.0  # from the start of the process to /readyz 200

    def cpu(self) -> float:
        return sum(cpu for _, cpu in session_cpu(self.proc.pid).values())

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of the API process (FastAPI, the store, the pool's dispatcher and consumers), the
        worker actors, and the rest of Ray (raylet, GCS, dashboard, idle workers)."""
        out = {"api": 0.0, "actors": 0.0, "ray_other": 0.0}
        for pid, (name, cpu) in session_cpu(self.proc.pid).items():
            role = "api" if pid == self.proc.pid else "actors" if name.startswith("ray::WorkerAct") else "ray_other"
            out[role] += cpu
        return out


def serve_threads_flag() -> bool:
    """Whether `avgen serve` has a --threads option (being added; the pool's default is used without it)."""
    out = subprocess.run(
        [sys.executable, "-m", "avgen", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return "--threads" in out.stdout


def pool_default_threads() -> int:
    """The pool's thread count without --threads: ServiceConfig.threads where it exists, else start_pool's 1."""
    from api.config import ServiceConfig

    return max(1, int(getattr(ServiceConfig(), "threads", 1) or 1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(root: Path, workers: int, threads: int, pass_threads: bool):
    """A real `avgen serve --workers N` on a free loopback port, ready (GET /readyz 200) when yielded."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "avgen",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(root / "data"),
        "--workers",
        str(workers),
    ] + (["--threads", str(threads)] if pass_threads else [])
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AVGEN_API_KEYS": ",".join(ALL_KEYS),
        "AVGEN_MAX_QUEUED_PER_KEY": "1000",
        # A Ray of its own: ray.init(address=None), as start_pool calls it without RAY_ADDRESS, joins the newest
        # cluster named in $RAY_TMPDIR/ray/ray_current_cluster (another agent's test cluster on a shared machine)
        "RAY_TMPDIR": str(root),
    }
    log_path = root / "serve.log"
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=ROOT, start_new_session=True)
        try:
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.perf_counter() - started > READY_TIMEOUT_S:
                    raise RuntimeError(f"avgen serve --workers {workers} never became ready: {tail(log_path)}")
                time.sleep(0.5)
            yield Server(url, proc, workers, threads, log_path, round(time.perf_counter() - started, 2))
        finally:
            server_stop(proc)


def server_stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it stops Ray and its actors); SIGKILL to what is left of its
    session after 30 s (Ray's workers run in process groups of their own, in the same session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    for pid in session_cpu(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text()[-chars:]
    except OSError:
        return ""


# --- HTTP ----------------------------------------------------------------------------------------------------


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def body(seconds: float, seed: int, steps: int | None) -> dict:
    out = {"kind": "generate", "text": TEXT, "seconds": seconds, "seed": seed, "score": False}
    return out if steps is None else {**out, "steps": steps}


def submit(c: httpx.Client, payload: dict) -> dict:
    r = c.post("/v1/jobs", json=payload)
    if r.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs: {r.status_code} {r.text[:500]}")
    return r.json()


def follow(c: httpx.Client, job: dict) -> list[dict]:
    """Every event of the job's SSE stream, until the server closes it after the final event."""
    events, current = [], {}
    with c.stream("GET", job["urls"]["events"], timeout=JOB_TIMEOUT_S) as r:
        if r.status_code != 200:
            raise RuntimeError(f"GET events: {r.status_code}")
        for line in r.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(":")
                current[key] = value.strip()
            elif not line and current:
                events.append({"type": current["event"], "data": json.loads(current["data"])})
                current = {}
    return events


def wait_for(c: httpx.Client, ids: list[str], timeout: float = JOB_TIMEOUT_S, poll: float = 1.0) -> dict[str, dict]:
    """The jobs once every one is in a final state (polled with GET /v1/jobs?limit=100 of the key)."""
    wanted, deadline = set(ids), time.monotonic() + timeout
    while True:
        r = c.get("/v1/jobs", params={"limit": 100})
        jobs = {j["id"]: j for j in r.json()["jobs"] if j["id"] in wanted}
        if len(jobs) == len(wanted) and all(j["status"] in ("succeeded", "failed", "canceled") for j in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not finished after {timeout} s: {[j['status'] for j in jobs.values()]}")
        time.sleep(poll)


def wait_running(c: httpx.Client, job: dict, timeout: float = JOB_TIMEOUT_S) -> None:
    """Until the job is running and its first sampler step has reported progress."""
    deadline = time.monotonic() + timeout
    while (now := c.get(job["urls"]["self"]).json())["status"] != "running" or now["progress"] <= 0:
        if now["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            raise RuntimeError(f"the job never ran: {now['status']} {now.get('error')}")
        time.sleep(0.2)


# --- measurements --------------------------------------------------------------------------------------------


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


class Part:
    """Load average and CPU seconds around one part: this script (and its baseline child), the server's tree
    (by role, see Server.cpu_by_role) and everything else on the machine."""

    def __init__(self, server: Server | None):
        self.server = server

    def __enter__(self):
        self.load_before, self.snap, self.children = load_avg(), cpu_snapshot(), children_cpu()
        self.server_cpu = self.server.cpu_by_role() if self.server else {}
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        after = cpu_snapshot()
        own = after["own"] - self.snap["own"] + children_cpu() - self.children  # the baseline child, once ended
        now = self.server.cpu_by_role() if self.server else {}
        server = {k: round(v - self.server_cpu[k], 2) for k, v in now.items()}
        self.record = {
            "wall_s": round(wall, 2),
            "load_avg_before": self.load_before,
            "load_avg_after": load_avg(),
            "bench_cpu_s": round(own, 2),
            "server_cpu_s": server,
        }
        if after["busy"] is not None and self.snap["busy"] is not None:
            busy = after["busy"] - self.snap["busy"]
            self.record["others_cpu_s"] = round(max(0.0, busy - own - sum(server.values())), 2)
            self.record["others_cores"] = round(self.record["others_cpu_s"] / wall, 2)  # of the machine's cpu_count
            self.record["steal_s"] = round(after["steal"] - self.snap["steal"], 2)


class Baseline:
    """The in-process side of the overhead comparison: a child process (this script, --baseline-worker) that
    loads the model once and then, per request on its stdin, generates it into an MP4 (`Generator.open` +
    `write_stream`, as `avgen generate` and the worker's JobRunner do) and answers with its own timing. It runs
    with the torch threads of the pool's actors and OMP_NUM_THREADS set to them, as Ray sets it in an actor's
    process (ray._private.utils.set_omp_num_threads_if_unset: the actor's num_cpus, which the pool sets to its
    threads), and in a session of its own, as the server's processes are."""

    def __init__(self, threads: int, steps: int | None):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-worker", "--threads", str(threads)]
        cmd += [] if steps is None else ["--steps", str(steps)]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
        )  # its own session, as the server has: with autogroup scheduling each session competes for CPU as one
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the baseline process ended ({self.proc.wait()})")
        return json.loads(line)

    def run(self, seconds: float, seed: int, path: Path) -> dict:
        self.proc.stdin.write(json.dumps({"seconds": seconds, "seed": seed, "path": str(path)}) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def baseline_worker(threads: int, steps: int | None) -> None:
    import torch

    torch.set_num_threads(threads)
    from avgen.pipeline import GenerationRequest, Generator, write_stream

    t = time.perf_counter()
    generator = Generator.load(warn=lambda m: None)
    loaded = {
        "checkpoint": generator.checkpoint_id,
        "load_s": round(time.perf_counter() - t, 3),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(json.dumps(loaded), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        t, cpu = time.perf_counter(), time.process_time()
        request = GenerationRequest(text=TEXT, seconds=job["seconds"], seed=job["seed"], steps=steps)
        write_stream(generator.open(request), job["path"])
        total, cpu = time.perf_counter() - t, time.process_time() - cpu
        answer = {"total_s": round(total, 4), "cpu_s": round(cpu, 3), "sha256": digest(Path(job["path"]))}
        print(json.dumps(answer), flush=True)


def overhead(server: Server, settings: dict, steps: int | None, tmp: Path) -> dict:
    seconds = settings["seconds"]
    baseline = Baseline(server.threads, steps)

    def over_http(c: httpx.Client, seed: int, path: Path) -> dict:
        t, cpu = time.perf_counter(), server.cpu_by_role()
        at_submit = time.time()
        job = submit(c, body(seconds, seed, steps))
        posted = time.perf_counter()
        events = follow(c, job)
        at_closed, closed = time.time(), time.perf_counter()
        r = c.get(job["urls"]["result"])
        if r.status_code != 200:
            raise RuntimeError(f"GET result: {r.status_code} {r.text[:300]}")
        path.write_bytes(r.content)
        downloaded = time.perf_counter()
        total, cpu = downloaded - t, {k: v - cpu[k] for k, v in server.cpu_by_role().items()}
        view = c.get(job["urls"]["self"]).json()
        if view["status"] != "succeeded":
            raise RuntimeError(f"job {view['status']}: {view['error']}")
        progress = [e["data"]["at"] for e in events if e["type"] == "progress"]
        return {
            "total_s": round(total, 4),
            "cpu_s": round(sum(cpu.values()), 3),  # the server's whole process tree, its idle use included
            **{f"cpu_{role}_s": round(v, 3) for role, v in cpu.items()},
            "sha256": digest(path),
            "post_s": round(posted - t, 4),
            # server-side timeline (time.time on this same machine)
            "submit_to_created_s": round(view["created_at"] - at_submit, 4),
            "queued_s": round(view["started_at"] - view["created_at"], 4),  # until the dispatcher leased it
            "started_to_first_progress_s": round(progress[0] - view["started_at"], 4),  # incl. the first step
            "first_to_last_progress_s": round(progress[-1] - progress[0], 4),
            "last_progress_to_finished_s": round(view["finished_at"] - progress[-1], 4),  # result via Ray, saved
            "running_s": round(view["finished_at"] - view["started_at"], 4),
            "finished_to_sse_closed_s": round(at_closed - view["finished_at"], 4),
            "download_s": round(downloaded - closed, 4),
            "progress_events": len(progress),
            "result_bytes": len(r.content),
        }

    raw = []
    try:
        with client(server, KEY_OVERHEAD) as c:
            warm_http = over_http(c, 10_000, tmp / "warm_http.mp4")  # first job of the actor, first of this process
            warm_local = baseline.run(seconds, 10_000, tmp / "warm_local.mp4")
            for i in range(settings["repeats"]):
                order = ("http", "in_process") if i % 2 == 0 else ("in_process", "http")
                pair = {"repeat": i, "seed": i, "order": list(order)}
                for mode in order:
                    path = tmp / f"{mode}_{i}.mp4"
                    pair[mode] = over_http(c, i, path) if mode == "http" else baseline.run(seconds, i, path)
                    path.unlink()
                pair["ratio"] = round(pair["http"]["total_s"] / pair["in_process"]["total_s"], 4)
                pair["same_mp4"] = pair["http"]["sha256"] == pair["in_process"]["sha256"]
                raw.append(pair)
                print(
                    f"  overhead {i}: HTTP {pair['http']['total_s']:.2f} s, in process "
                    f"{pair['in_process']['total_s']:.2f} s",
                    file=sys.stderr,
                )
    finally:
        baseline.close()
    http = statistics.median(p["http"]["total_s"] for p in raw)
    local = statistics.median(p["in_process"]["total_s"] for p in raw)
    breakdown = {
        k: round(statistics.median(p["http"][k] for p in raw), 4)
        for k in raw[0]["http"]
        if k.endswith("_s") and not k.startswith("cpu_")
    }
    return {
        "seconds": seconds,
        "baseline_process": baseline.info,
        "warmup": {"http": warm_http, "in_process": warm_local},
        "raw": raw,
        "summary": {
            "http_median_s": round(http, 4),
            "in_process_median_s": round(local, 4),
            "ratio": round(http / local, 4),
            "extra_percent": round(100 * (http / local - 1), 1),
            "ratio_of_pairs_median": round(statistics.median(p["ratio"] for p in raw), 4),
            # the worker side alone (lease to finish: Ray, the actor, the result back and saved) vs in process
            "running_over_in_process": round(breakdown["running_s"] / local, 4),
            "target_ratio": OVERHEAD_TARGET,
            "meets_target": http / local <= OVERHEAD_TARGET,
            "same_mp4_every_pair": all(p["same_mp4"] for p in raw),
            "http_cpu_median_s": {
                k: round(statistics.median(p["http"][k] for p in raw), 3)
                for k in raw[0]["http"]
                if k.startswith("cpu_")
            },
            "in_process_cpu_median_s": round(statistics.median(p["in_process"]["cpu_s"] for p in raw), 3),
            "http_breakdown_median_s": breakdown,
        },
    }


def latency(server: Server, settings: dict, steps: int | None) -> dict:
    clients, per_client = settings["clients"], settings["per_client"]
    with client(server, KEYS_LATENCY[0]) as c:
        running = submit(c, body(settings["running_job_seconds"], 0, steps))
        wait_running(c, running)
        sequential = []  # one client, one at a time, while the job runs: the round trip without a crowd
        for k in range(settings["sequential"]):
            t = time.perf_counter()
            job = submit(c, body(2.0, 50_000 + k, steps))
            sequential.append({"s": round(time.perf_counter() - t, 5), "id": job["id"], "key": 0})

        async def crowd(pace_s: float) -> tuple[list[dict], float]:
            """Every client at once: pace_s 0 sends each client's POSTs back to back (all first POSTs together:
            a synchronized storm); else each POST follows a pause drawn uniformly from 0..2 x pace_s, as people
            and scripts submitting on their own would (clients / pace_s submissions a second in all)."""
            barrier = asyncio.Barrier(clients + 1)
            rng = random.Random(pace_s)

            async def one(i: int) -> list[dict]:
                key = KEYS_LATENCY[i % len(KEYS_LATENCY)]
                headers = {"Authorization": f"Bearer {key}"}
                async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as ac:
                    await ac.get("/healthz")  # the connection is open before the clock starts
                    await barrier.wait()
                    out = []
                    for k in range(per_client):
                        if pace_s:
                            await asyncio.sleep(rng.uniform(0, 2 * pace_s))
                        t = time.perf_counter()
                        r = await ac.post("/v1/jobs", json=body(2.0, i * 100 + k + int(pace_s * 1e6), steps))
                        s = time.perf_counter() - t
                        out.append(
                            {
                                "client": i,
                                "n": k,
                                "key": i % len(KEYS_LATENCY),
                                "status": r.status_code,
                                "s": round(s, 5),
                                "id": r.json().get("id") if r.status_code == 202 else None,
                            }
                        )
                    return out

            tasks = [asyncio.create_task(one(i)) for i in range(clients)]
            await barrier.wait()
            t = time.perf_counter()
            results = await asyncio.gather(*tasks)
            return [r for rs in results for r in rs], time.perf_counter() - t

        samples, burst_s = asyncio.run(crowd(0.0))
        paced, paced_s = asyncio.run(crowd(settings["pace_s"]))
        still = c.get(running["urls"]["self"]).json()
        # every job submitted here is canceled (queued ones never run), then the running one
        t = time.perf_counter()
        cancelers = [client(server, key) for key in KEYS_LATENCY]
        for s in sequential + samples + paced:
            if s["id"]:
                cancelers[s["key"]].post(f"/v1/jobs/{s['id']}/cancel")
        for kc in cancelers:
            kc.close()
        cancel_s = time.perf_counter() - t
        c.post(running["urls"]["cancel"])
        final = follow(c, running)[-1]["type"]
    ok = [s["s"] for s in samples if s["status"] == 202]
    statuses = {str(code): sum(s["status"] == code for s in samples) for code in sorted({s["status"] for s in samples})}
    p50, p90, p99 = percentiles(ok, (50, 90, 99))
    first = percentiles([s["s"] for s in samples if s["status"] == 202 and s["n"] == 0], (50, 99))
    later = percentiles([s["s"] for s in samples if s["status"] == 202 and s["n"] > 0], (50, 99))
    paced_ok = [s["s"] for s in paced if s["status"] == 202]
    paced_p50, paced_p90, paced_p99 = percentiles(paced_ok, (50, 90, 99))
    return {
        "clients": clients,
        "per_client": per_client,
        "keys": len(KEYS_LATENCY),
        "running_job": {
            "seconds": settings["running_job_seconds"],
            "status_after_burst": still["status"],
            "progress_after_burst": still["progress"],
            "final": final,
        },
        "sequential_s": [s["s"] for s in sequential],
        "raw": samples,
        "raw_paced": paced,
        "cancel_all_s": round(cancel_s, 2),
        "summary": {
            "statuses": statuses,
            "p50_s": p50,
            "p90_s": p90,
            "p99_s": p99,
            # all clients' first POSTs arrive together; the later ones are spread by the first ones' answers
            "first_per_client_p50_p99_s": first,
            "later_p50_p99_s": later,
            "max_s": round(max(ok), 4) if ok else None,
            "mean_s": round(statistics.fmean(ok), 4) if ok else None,
            "sequential_median_s": round(statistics.median(s["s"] for s in sequential), 4) if sequential else None,
            "burst_s": round(burst_s, 3),
            "submissions_per_s": round(len(samples) / burst_s, 1),
            "target_p99_s": LATENCY_P99_TARGET_S,
            "meets_target": p99 is not None and p99 <= LATENCY_P99_TARGET_S and statuses.get("202") == len(samples),
        },
        "paced": {
            "pace_s": settings["pace_s"],
            "submissions_per_s": round(len(paced) / paced_s, 1),
            "accepted": len(paced_ok),
            "p50_s": paced_p50,
            "p90_s": paced_p90,
            "p99_s": paced_p99,
            "max_s": round(max(paced_ok), 4) if paced_ok else None,
            "meets_target": paced_p99 is not None and paced_p99 <= LATENCY_P99_TARGET_S and len(paced_ok) == len(paced),
        },
    }


def throughput(server: Server, settings: dict, steps: int | None) -> dict:
    n, seconds = settings["jobs"], settings["seconds"]
    with client(server, KEY_THROUGHPUT) as c:
        warm = [submit(c, body(seconds, 20_000 + k, steps))["id"] for k in range(server.workers)]
        wait_for(c, warm)
        first = time.time()
        ids = [submit(c, body(seconds, k, steps))["id"] for k in range(n)]
        submitted = time.time() - first
        jobs = wait_for(c, ids)
    bad = [j["status"] for j in jobs.values() if j["status"] != "succeeded"]
    if bad:
        raise RuntimeError(f"throughput jobs did not all succeed: {bad}")
    runs = sorted(
        (
            {
                "seed": j["spec"]["seed"],
                "created": j["created_at"],
                "started": j["started_at"],
                "finished": j["finished_at"],
            }
            for j in jobs.values()
        ),
        key=lambda r: r["started"],
    )
    last = max(r["finished"] for r in runs)
    wall = last - first
    busy = sum(r["finished"] - r["started"] for r in runs)
    edges = sorted([(r["started"], 1) for r in runs] + [(r["finished"], -1) for r in runs])
    at_once, most = 0, 0
    for _, d in edges:
        at_once += d
        most = max(most, at_once)
    return {
        "workers": server.workers,
        "jobs": n,
        "seconds": seconds,
        "submit_all_s": round(submitted, 3),
        "raw": [
            {
                "seed": r["seed"],
                "queued_s": round(r["started"] - r["created"], 3),
                "running_s": round(r["finished"] - r["started"], 3),
                "finished_after_first_submit_s": round(r["finished"] - first, 3),
            }
            for r in runs
        ],
        "wall_s": round(wall, 3),
        "jobs_per_minute": round(60 * n / wall, 2),
        "running_s_median": round(statistics.median(r["finished"] - r["started"] for r in runs), 3),
        "mean_jobs_running": round(busy / wall, 3),  # 1.0 per fully used worker
        "most_jobs_running_at_once": most,
    }


def store_contention(settings: dict, tmp: Path) -> dict:
    """Where the latency tail comes from, without HTTP: `clients` threads of one process (as the API's thread
    pool) each create `per_client` jobs on a real JobStore at once, as shipped (every writer waits for SQLite's
    write lock in its busy handler, which sleeps and retries) and with one threading.Lock taken around each
    create (writers queue in the process and the lock is handed straight on). Two rounds of each, alternating."""
    import threading

    from api.store import JobStore

    clients, per_client = settings["clients"], settings["per_client"]

    def burst(store: JobStore, lock: threading.Lock | None) -> dict:
        barrier, seconds = threading.Barrier(clients), []

        def one(i: int) -> None:
            owner = f"owner-{i % len(KEYS_LATENCY)}"
            store.counts(owner)  # this thread's connection is open before the clock starts
            barrier.wait()
            for k in range(per_client):
                t = time.perf_counter()
                if lock is None:
                    store.create(owner, "generate", {"text": TEXT, "seed": i * 100 + k})
                else:
                    with lock:
                        store.create(owner, "generate", {"text": TEXT, "seed": i * 100 + k})
                seconds.append(time.perf_counter() - t)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        p50, p99, top = percentiles(seconds, (50, 99, 100))
        return {"p50_s": p50, "p99_s": p99, "max_s": top, "wall_s": round(wall, 3)}

    rounds = []
    for r in range(2):
        for mode in ("as_shipped", "process_lock"):
            with JobStore(tmp / f"store-{mode}-{r}.sqlite3") as store:
                rounds.append({"mode": mode, **burst(store, threading.Lock() if mode == "process_lock" else None)})
    return {"clients": clients, "per_client": per_client, "rounds": rounds}


def percentiles(xs: list[float], qs: tuple[int, ...]) -> list[float | None]:
    return [round(float(np.percentile(xs, q)), 4) if xs else None for q in qs]


def idle_cpu(server: Server, seconds: float = 10.0) -> float:
    """CPU seconds per second the idle server's whole tree (API, dispatcher, Ray, actors) uses."""
    before = server.cpu()
    time.sleep(seconds)
    return round((server.cpu() - before) / seconds, 3)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# --- main ----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        choices=("overhead", "latency", "throughput", "store"),
        action="append",
        help="run only this part (may be given more than once; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="a fast check: short clips, few repeats, few clients")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/service.json, service_quick.json)")
    parser.add_argument("--repeats", type=int, help="overhead pairs (default 5; 1 with --quick)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument(
        "--threads", type=int, help="torch threads per actor and for the baseline (default: the pool's)"
    )
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        baseline_worker(args.threads, args.steps)
        return 0
    parts = args.only or ["overhead", "latency", "throughput", "store"]
    settings = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.repeats is not None:
        settings["overhead"]["repeats"] = args.repeats
    name = "service_quick.json" if args.quick else "service.json"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name
    pass_threads = serve_threads_flag()
    if args.threads is not None and not pass_threads:
        parser.error("--threads: this `avgen serve` has no --threads option; its pool uses its default")
    threads = args.threads or pool_default_threads()

    import ray
    import torch

    started = time.perf_counter()
    report = {
        "benchmark": "service",
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch": torch.__version__,
            "ray": ray.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "code": git_state(),
        "settings": {
            "quick": args.quick,
            "parts": parts,
            "text": TEXT,
            "score": False,
            "steps": args.steps if args.steps is not None else "model default",
            "threads_per_actor": threads,
            "threads_source": "avgen serve --threads"
            if pass_threads
            else "the pool's default (serve has no --threads)",
            "baseline_threads": threads,
            "model": "Generator.load() default: the shipped weights (see overhead.baseline_process.checkpoint)",
            "ray": "a fresh local Ray per server (RAY_TMPDIR private to it)",
            **settings,
        },
        "load_avg_before": load_avg(),
        "servers": [],
    }
    del ray, torch
    with tempfile.TemporaryDirectory(prefix="avb-", dir="/tmp") as tmp_name:  # short: Ray's socket paths live in it
        tmp = Path(tmp_name)
        needed = {1} if {"overhead", "latency"} & set(parts) else set()
        needed |= set(settings["throughput"]["workers"]) if "throughput" in parts else set()
        for workers in sorted(needed):  # one server per pool size; the parts on 1 worker share theirs
            with served(tmp / f"w{workers}", workers, threads, pass_threads) as server:
                info = {"workers": workers, "ready_s": server.ready_s, "idle_cpu_per_s": idle_cpu(server)}
                report["servers"].append(info)
                print(
                    f"server --workers {workers}: ready in {server.ready_s} s, idle CPU {info['idle_cpu_per_s']} s/s",
                    file=sys.stderr,
                )
                if workers == 1 and "overhead" in parts:
                    with Part(server) as p:
                        report["overhead"] = overhead(server, settings["overhead"], args.steps, tmp)
                    report["overhead"]["machine_during"] = p.record
                    print(f"overhead: {report['overhead']['summary']}", file=sys.stderr)
                if workers == 1 and "latency" in parts:
                    with Part(server) as p:
                        report["latency"] = latency(server, settings["latency"], args.steps)
                    report["latency"]["machine_during"] = p.record
                    print(f"latency: {report['latency']['summary']}", file=sys.stderr)
                if "throughput" in parts and workers in settings["throughput"]["workers"]:
                    with Part(server) as p:
                        run = throughput(server, settings["throughput"], args.steps)
                    run["machine_during"] = p.record
                    report.setdefault("throughput", {"runs": []})["runs"].append(run)
                    print(
                        f"throughput --workers {workers}: {run['wall_s']} s, {run['jobs_per_minute']} jobs/min, "
                        f"{run['mean_jobs_running']} running on average",
                        file=sys.stderr,
                    )
        if "store" in parts:
            with Part(None) as p:
                report["store_contention"] = store_contention(settings["latency"], tmp)
            report["store_contention"]["machine_during"] = p.record
            print(f"store contention: {report['store_contention']['rounds']}", file=sys.stderr)
    if "throughput" in report:
        by = {r["workers"]: r for r in report["throughput"]["runs"]}
        if 1 in by and 2 in by:
            report["throughput"]["speedup_2_over_1"] = round(by[1]["wall_s"] / by[2]["wall_s"], 3)
    report["load_avg_after"] = load_avg()
    report["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    summary = {k: report[k]["summary"] for k in ("overhead", "latency") if k in report}
    if "store_contention" in report:
        summary["store_contention"] = report["store_contention"]["rounds"]
    if "throughput" in report:
        summary["throughput"] = {
            **{
                f"workers_{r['workers']}": {k: r[k] for k in ("wall_s", "jobs_per_minute", "mean_jobs_running")}
                for r in report["throughput"]["runs"]
            },
            "speedup_2_over_1": report["throughput"].get("speedup_2_over_1"),
        }
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
