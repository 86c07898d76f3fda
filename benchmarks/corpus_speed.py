"""Speed of the synthetic corpus: seconds to render and speak one 4 s training clip (make_sample).

This was a timed test (< 1 s per 4 s clip); timings belong here, not in tests.
Usage: python benchmarks/corpus_speed.py [--seconds 4] [--repeats 5] [--out benchmarks/results/corpus_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import contention, cpu_snapshot, git_state, load_avg  # (benchmarks/ is on sys.path)

from avgen.data import make_sample

TARGET_S = 1.0  # per 4 s clip: the training loop renders windows on the fly for the codecs stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/corpus_speed.json")
    args = parser.parse_args()
    load_before = load_avg()
    make_sample(0, seconds=args.seconds)  # warm-up: the CMUdict load
    runs = []
    for index in range(1, args.repeats + 1):
        before = cpu_snapshot()
        start = time.perf_counter()
        make_sample(index, seconds=args.seconds)
        runs.append({"index": index, "seconds": round(time.perf_counter() - start, 4),
                     **contention(before, cpu_snapshot())})  # fmt: skip
    median = statistics.median(r["seconds"] for r in runs)
    print(f"make_sample({args.seconds:g} s): median {median:.3f} s over {args.repeats} clips (target < {TARGET_S:g} s)")
    report = {
        "benchmark": "synthetic corpus: wall time of make_sample(i, seconds) after one warm-up, one clip per repeat",
        "settings": {"seconds": args.seconds, "repeats": args.repeats},
        "runs": runs,
        "median_s": median,
        "target_s": TARGET_S,
        "meets_target": median < TARGET_S,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_before": load_before,
            "load_after": load_avg(),
        },
        "code": git_state(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
