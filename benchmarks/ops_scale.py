"""What /metrics and the retention sweep cost as the store grows: both read the whole store (GET /metrics one
GROUP BY for the job counts and one for the duration histogram, plus a walk of the data dir; a sweep lists
every upload and result file).

Usage: python benchmarks/ops_scale.py [--jobs 100000] [--files 5000] [--repeats 5] [--out benchmarks/results/ops_scale.json]

A real JobStore (SQLite, WAL) and Artifacts in a temporary folder (under /dev/shm when it exists, so that
building the store is not bound by fsync): `--jobs` jobs created, leased and finished through the store's
methods (run times spread over 1..3600 s, all finished in the last two days), `--files` of them with a 1 KB result file, `--files` uploads of
1 KB. Then, each repeated: GET /metrics through the app in process (fastapi TestClient); a sweep with nothing
to expire (the steady state); and once, a sweep that expires every job and deletes every file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import contention, cpu_snapshot, git_state, load_avg  # (benchmarks/ is on sys.path)

from api.app import create_app
from api.artifacts import Artifacts
from api.config import ServiceConfig
from api.retention import sweep
from api.store import JobStore
from avgen.files import write_text_atomic


def timed(fn, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        before = cpu_snapshot()
        start = time.perf_counter()
        fn()
        runs.append({"seconds": round(time.perf_counter() - start, 5), **contention(before, cpu_snapshot())})
    return {"runs": runs, "median_s": statistics.median(r["seconds"] for r in runs)}


def main() -> None:
    from fastapi.testclient import TestClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100000)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/ops_scale.json")
    args = parser.parse_args()
    load_before = load_avg()
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        base = time.time() - 2 * 86400 - args.jobs  # every job finished within the last two days: none expires yet
        now = [base]
        store, files = JobStore(Path(tmp) / "jobs.sqlite3", clock=lambda: now[0]), Artifacts(Path(tmp) / "data")
        start = time.perf_counter()
        for i in range(args.jobs):
            now[0] = base + i
            job, _ = store.create(f"owner-{i % 20}", ("generate", "evaluate")[i % 2], {"text": f"job {i}"})
            leased = store.lease("bench", 60)
            if i < args.files:
                files.save_result(leased.id, bytes(1024), "video/mp4")
            now[0] += 1 + (i * 7919) % 3600  # its run time
            store.finish(leased.id, leased.lease_token, ("succeeded", "failed")[i % 5 == 0])
        for i in range(args.files):
            files.save_upload(f"owner-{i % 20}", bytes(1024), "image")
        build_s = time.perf_counter() - start

        config = ServiceConfig(workers="0", max_disk_bytes=1 << 40)
        with TestClient(create_app(config, store, files)) as client:
            scrape = timed(lambda: client.get("/metrics").raise_for_status(), args.repeats)
            size = len(client.get("/metrics").content)
        keep_all = 10 * 365 * 86400.0  # every file is listed and weighed, none is old enough to go
        assert store.counts()["expired"] == 0, "the app's own sweeper expired jobs before the timing"
        idle = timed(lambda: sweep(store, files, keep_all, config.max_disk_bytes), args.repeats)
        full = timed(lambda: sweep(store, files, 1.0, None, now=time.time() + 10), 1)
        expired = store.counts()["expired"]
        store.close()

    print(f"{args.jobs} jobs, {args.files} results + {args.files} uploads (built in {build_s:.1f} s): "
          f"GET /metrics {scrape['median_s'] * 1000:.1f} ms ({size} bytes), idle sweep "
          f"{idle['median_s'] * 1000:.1f} ms, sweep expiring {expired} jobs {full['median_s'] * 1000:.0f} ms")  # fmt: skip
    report = {
        "benchmark": "GET /metrics (in process) and retention sweeps over a store of --jobs finished jobs",
        "settings": vars(args),
        "build_s": round(build_s, 2),
        "metrics_scrape": {**scrape, "bytes": size},
        "sweep_nothing_to_do": idle,
        "sweep_expiring_all": {**full, "expired_jobs": expired},
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_before": load_before,
            "load_after": load_avg(),
        },
        "code": git_state(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
