"""Sliding-window attention on CPU: chunked (linear) vs dense masked SDPA (quadratic).

    python benchmarks/attention.py [--out benchmarks/results/attention.json] [--max-dense-tokens N]

Tiny-preset token layout (17 tokens per 40 ms frame: 16 video patches + 1 audio latent), window
+-12 frames, B=1, 4 heads x 64, fp32, 2 threads. Each (backend, length) runs in its own
subprocess so its peak resident set is its own: memory is the peak RSS (getrusage ru_maxrss)
of that process, and its growth over the baseline taken after inputs and mask metadata exist.
Times are the median of a few calls after a warm-up call that builds the cached mask structures
(built once per forward pass and shared by all layers); the warm-up time is reported too.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avgen.files import write_text_atomic

PER_FRAME, WINDOW, HEADS, DIM, THREADS = 17, 12, 4, 64, 2
BASE_FRAMES = 60  # 1020 tokens
SCALES = [1, 2, 4, 8, 16]


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def make_inputs(n_frames: int, seed: int = 0):
    import torch

    from avgen.attention import SlidingWindowMask

    frame_index = torch.arange(n_frames).repeat_interleave(PER_FRAME)
    mask = SlidingWindowMask(frame_index, torch.zeros_like(frame_index, dtype=torch.bool), WINDOW)
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, HEADS, len(frame_index), DIM, generator=g) for _ in range(3))
    return q, k, v, mask


def worker(backend: str, n_frames: int, repeats: int, block_tokens: int | None) -> dict:
    import torch

    from avgen.attention import chunked_attention, sliding_window_attention

    torch.set_num_threads(THREADS)
    q, k, v, mask = make_inputs(n_frames)
    if block_tokens is None:
        run = lambda: sliding_window_attention(q, k, v, mask, backend=backend)
    else:
        run = lambda: chunked_attention(q, k, v, mask, block_tokens=block_tokens)
    baseline = rss_peak_bytes()
    load_before = os.getloadavg()[0]
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            run()
            first = time.perf_counter() - t0
            times, cpu = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                run()
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    except (RuntimeError, MemoryError) as e:
        return {"status": "out of memory", "error": f"{type(e).__name__}: {str(e)[:200]}"}
    peak = rss_peak_bytes()
    return {
        "status": "ok",
        "times_s": times,
        "cpu_s": cpu,
        "first_call_s": first,
        "peak_rss_mb": peak / 2**20,
        "peak_rss_over_baseline_mb": (peak - baseline) / 2**20,
        "loadavg_1min": [load_before, os.getloadavg()[0]],
    }


def summarize(runs: list[dict]) -> dict:
    """Pool the samples of several subprocess runs of one case (rounds interleave the cases, so a
    burst of load from other processes spreads over all lengths instead of hitting one)."""
    bad = [r for r in runs if r["status"] != "ok"]
    if bad:
        return bad[0]
    times = [t for r in runs for t in r["times_s"]]
    return {
        "status": "ok",
        "median_s": statistics.median(times),
        "min_s": min(times),
        "median_cpu_s": statistics.median([c for r in runs for c in r["cpu_s"]]),
        "first_call_s": statistics.median(r["first_call_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "peak_rss_over_baseline_mb": max(r["peak_rss_over_baseline_mb"] for r in runs),
        "loadavg_1min": [r["loadavg_1min"] for r in runs],
        "times_s": times,
    }


def measure(backend: str, n_frames: int, repeats: int, block_tokens: int | None = None, timeout: float = 900) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, str(n_frames), str(repeats), str(block_tokens or 0)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:  # e.g. SIGKILL from the OOM killer
        status = "out of memory (killed)" if proc.returncode == -9 else f"failed (rc={proc.returncode})"
        return {"status": status, "error": proc.stderr[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def fmt(r: dict, key: str, spec: str) -> str:
    return format(r[key], spec) if r.get("status") == "ok" else r["status"].split(":")[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/attention.json")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per subprocess, after one warm-up")
    ap.add_argument("--rounds", type=int, default=3, help="subprocess runs per case, interleaved over cases")
    ap.add_argument(
        "--max-dense-tokens", type=int, default=None, help="skip dense above this many tokens (recorded as skipped)"
    )
    ap.add_argument("--block-sweep-scale", type=int, default=4, help="length multiple for the block-size sweep")
    args = ap.parse_args()

    import torch

    from avgen.attention import CHUNK_TOKENS

    rows = [{"scale": sc, "frames": BASE_FRAMES * sc, "tokens": BASE_FRAMES * sc * PER_FRAME} for sc in SCALES]
    runs = {(r["scale"], b): [] for r in rows for b in ["chunked", "dense"]}
    sweep_frames = BASE_FRAMES * args.block_sweep_scale
    blocks = [32, 64, 128, 256, 512, 1024]
    sweep_runs = {b: [] for b in blocks}
    for rnd in range(args.rounds):
        for r in rows:
            runs[r["scale"], "chunked"].append(measure("chunked", r["frames"], args.repeats))
            if args.max_dense_tokens is not None and r["tokens"] > args.max_dense_tokens:
                runs[r["scale"], "dense"].append({"status": f"skipped: > {args.max_dense_tokens} tokens"})
            else:
                runs[r["scale"], "dense"].append(measure("dense", r["frames"], args.repeats))
            print(
                f"round {rnd + 1}/{args.rounds} {r['tokens']:>6} tokens  chunked "
                f"{fmt(summarize(runs[r['scale'], 'chunked']), 'median_s', '.4f')} s  "
                f"dense {fmt(summarize(runs[r['scale'], 'dense']), 'median_s', '.4f')} s",
                flush=True,
            )
        for b in blocks:
            sweep_runs[b].append(measure("chunked", sweep_frames, args.repeats, block_tokens=b))
    results = [
        dict(r, chunked=summarize(runs[r["scale"], "chunked"]), dense=summarize(runs[r["scale"], "dense"]))
        for r in rows
    ]
    sweep = {str(b): summarize(v) for b, v in sweep_runs.items()}

    def ratio(backend, key="median_s"):
        first, last = results[0][backend], results[-1][backend]
        if first.get("status") == "ok" and last.get("status") == "ok":
            return last[key] / first[key]
        return None

    ratios = {"chunked": ratio("chunked"), "dense": ratio("dense")}
    ratios_min = {"chunked": ratio("chunked", "min_s"), "dense": ratio("dense", "min_s")}
    mem_key = "peak_rss_over_baseline_mb"
    ratios_mem = {"chunked": ratio("chunked", mem_key), "dense": ratio("dense", mem_key)}
    report = {
        "benchmark": "sliding-window attention, CPU: chunked vs dense masked SDPA",
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": THREADS,
        },
        "settings": {
            "batch": 1,
            "heads": HEADS,
            "head_dim": DIM,
            "dtype": "float32",
            "tokens_per_frame": PER_FRAME,
            "layout": "16 video patches + 1 audio latent per frame, no globals",
            "window_frames": WINDOW,
            "base_tokens": BASE_FRAMES * PER_FRAME,
            "scales": SCALES,
            "chunk_tokens": CHUNK_TOKENS,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "max_dense_tokens": args.max_dense_tokens,
        },
        "measures": {
            "median_s": f"median wall time of {args.rounds} rounds x {args.repeats} forward calls (inference_mode),"
            " each round a fresh subprocess with one untimed warm-up call",
            "min_s": "fastest of those calls (less sensitive to other processes on this shared machine)",
            "median_cpu_s": "median process CPU time of those calls (both threads together)",
            "loadavg_1min": "machine 1-minute load average before/after the case: > 2 on 2 cores means contention",
            "first_call_s": "the warm-up call, which also builds and caches the mask structures",
            "peak_rss_mb": "peak resident set (getrusage ru_maxrss) of a subprocess running only this case (max over rounds)",
            "peak_rss_over_baseline_mb": "that peak minus the peak before the first call (inputs and torch loaded):"
            " what attention itself (mask structures included) added",
        },
        "results": results,
        "block_size_sweep": {
            "tokens": sweep_frames * PER_FRAME,
            "median_s_by_block_tokens": {b: r.get("median_s", r["status"]) for b, r in sweep.items()},
            "min_s_by_block_tokens": {b: r.get("min_s", r["status"]) for b, r in sweep.items()},
        },
        "ratio_time_16x_over_1x": ratios,
        "ratio_min_time_16x_over_1x": ratios_min,
        "ratio_peak_rss_over_baseline_16x_over_1x": ratios_mem,
        "acceptance": {"chunked_16x_le_20x_1x": ratios["chunked"] is not None and ratios["chunked"] <= 20},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")

    print(f"\n{'tokens':>6} | {'chunked s':>9} | {'chunked MB':>10} | {'dense s':>9} | {'dense MB':>10}")
    for r in results:
        print(
            f"{r['tokens']:>6} | {fmt(r['chunked'], 'median_s', '9.4f'):>9} | "
            f"{fmt(r['chunked'], 'peak_rss_over_baseline_mb', '10.1f'):>10} | "
            f"{fmt(r['dense'], 'median_s', '9.4f'):>9} | {fmt(r['dense'], 'peak_rss_over_baseline_mb', '10.1f'):>10}"
        )
    for name, rs in [("time", ratios), ("min time", ratios_min), ("memory", ratios_mem)]:
        print(f"{name} 16x / 1x: " + ", ".join(f"{b} {v:.1f}x" if v else f"{b} n/a" for b, v in rs.items()))
    print(
        "block sweep ("
        + str(sweep_frames * PER_FRAME)
        + " tokens): "
        + ", ".join(f"{b}: {fmt(r, 'median_s', '.4f')} s" for b, r in sweep.items())
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        backend, n_frames, repeats, block = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(worker(backend, n_frames, repeats, block or None)))
    else:
        main()
