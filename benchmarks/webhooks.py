"""Webhooks: what a delivery costs the job's transaction, and how soon it reaches a receiver.

    python benchmarks/webhooks.py [--jobs N] [--out PATH]

1. store: `JobStore.finish` of N jobs on a fresh SQLite file, half with a webhook (the delivery row and the
   job's JSON written in the same transaction) and half without, alternating; median and p99 per call.
2. delivery: a real `avgen serve --workers 0` (benchmarks/service.py `served`) and a receiver (http.server on
   127.0.0.1, answering 200 at once); N jobs submitted over HTTP with a webhook, then finished one after
   another through a JobStore on the same file, as the pool does. Latency: from `finish` returning to the
   receiver reading the request (one machine, one clock); p50, p99, max, and the time for all N. The
   deliverer finds another process's deliveries by looking every POLL_SECONDS (0.5 s).
3. the same with one receiver that never answers (its attempts time out after 10 s) taking a job first: the
   other N deliveries still go out (on the deliverer's other threads).
4. the same, but each job canceled over HTTP (POST /cancel of a queued job), so that the delivery is queued in
   the server's own process, as the pool's are in production: the store wakes the deliverer at commit.
   Latency from before the POST.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from machine import git_state, load_avg  # benchmarks/ is on sys.path (this folder)
from service import ALL_KEYS, served

from api.store import JobStore
from avgen.files import write_text_atomic
from workers.jobs import Status

ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def store_part(n: int) -> dict:
    hook = {"url": "http://127.0.0.1:9/hook", "events": ["completed"]}
    times = {"webhook": [], "none": []}
    with tempfile.TemporaryDirectory() as tmp, JobStore(Path(tmp) / "jobs.db") as store:
        for i in range(n):
            spec = {"text": f"job {i}", **({"webhook": hook} if i % 2 else {})}
            store.create("bench", "generate", spec)
        for _ in range(n):
            lease = store.lease("w", 60)
            started = time.perf_counter()
            store.finish(lease.id, lease.lease_token, Status.SUCCEEDED, result={"media_type": "video/mp4"})
            times["webhook" if "webhook" in lease.spec else "none"].append(time.perf_counter() - started)
    return {f"finish_{k}_ms": {"median": ms(statistics.median(v)), "p99": ms(pct(v, 0.99)), "n": len(v)}
            for k, v in times.items()}  # fmt: skip


class Receiver:
    def __init__(self, hang: threading.Event | None = None):
        self.arrived: dict[str, float] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.arrived.setdefault(json.loads(body)["id"], time.time())
                if hang is not None:
                    hang.wait(60)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def delivery_part(n: int, root: Path, hung: bool = False, cancel: bool = False) -> dict:
    receiver, release = Receiver(), threading.Event()
    stuck = Receiver(hang=release) if hung else None
    headers = {"Authorization": f"Bearer {ALL_KEYS[0]}"}
    try:
        with served(root, 0, 1, False) as server, JobStore(root / "data" / "jobs.sqlite3") as worker:
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:

                def submit(url: str) -> str:
                    body = {"kind": "generate", "text": "hello", "seconds": 1, "webhook": {"url": url}}
                    r = c.post("/v1/jobs", json=body)
                    r.raise_for_status()
                    return r.json()["id"]

                first = [submit(stuck.url)] if stuck else []
                ids = first + [submit(receiver.url) for _ in range(n)]
                finished = {}
                started = time.time()
                for job_id in ids:
                    if cancel:
                        finished[job_id] = time.time()
                        c.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
                        continue
                    lease = worker.lease("bench-worker", 600)
                    assert lease.id == job_id
                    worker.finish(job_id, lease.lease_token, Status.SUCCEEDED, result={"media_type": "video/mp4"})
                    finished[job_id] = time.time()
            deadline = time.time() + 120
            while len(receiver.arrived) < n and time.time() < deadline:
                time.sleep(0.01)
            latencies = [receiver.arrived[j] - finished[j] for j in ids[len(first) :] if j in receiver.arrived]
            return {
                "jobs": n,
                "delivered": len(latencies),
                "hung_receiver": hung,
                "finished_by": "POST /cancel (the server's process)" if cancel else "JobStore.finish (another process)",
                "latency_ms": {
                    "p50": ms(pct(latencies, 0.5)),
                    "p99": ms(pct(latencies, 0.99)),
                    "max": ms(max(latencies)),
                },  # fmt: skip
                "all_delivered_s": round(max(receiver.arrived.values()) - started, 3),
            }
    finally:
        release.set()
        receiver.close()
        if stuck:
            stuck.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "webhooks.json")
    args = parser.parse_args()
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": git_state(), "load_before": load_avg()}
    report["store"] = store_part(2 * args.jobs)
    print(json.dumps(report["store"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report["delivery"] = delivery_part(args.jobs, Path(tmp) / "plain", hung=False)
        print(json.dumps(report["delivery"]), flush=True)
        report["delivery_with_a_hung_receiver"] = delivery_part(args.jobs, Path(tmp) / "hung", hung=True)
        print(json.dumps(report["delivery_with_a_hung_receiver"]), flush=True)
        report["delivery_queued_in_process"] = delivery_part(args.jobs, Path(tmp) / "cancel", cancel=True)
        print(json.dumps(report["delivery_queued_in_process"]), flush=True)
    report["load_after"] = load_avg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
