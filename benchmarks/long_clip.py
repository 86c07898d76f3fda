"""Peak memory and wall time of long clips: 600 s vs 8 s, each in a fresh process, streamed to MP4.

    python benchmarks/long_clip.py [--out benchmarks/results/long_clip.json] [--quick]
                                   [--seconds 8 600] [--repeats 1] [--steps N] [--threads N]

Each (length, repeat) runs in its own subprocess (`--worker S`), so the peak resident set it
reports is that length's alone: resource.getrusage(RUSAGE_SELF).ru_maxrss inside the child,
after loading the model (tiny preset, the default: untrained when no weights ship; the compute
is the same) and generating S seconds straight into an MP4 (`Generator.open` + `write_stream`,
the path `avgen generate` takes: frames and audio are encoded chunk by chunk as they finish),
2 threads by default (`--threads`). The child prints one JSON line on stdout. It also reports
its peak RSS just before generating (imports + model), so the growth due to generation is
visible apart from the ~constant cost of torch itself, and its current RSS (/proc/self/statm)
after the first piece of the stream, after each further tenth of the pieces, and the largest,
which shows whether anything accumulates over the clip.

`--steps N` sets the sampler steps (default: the model's, 8 for the tiny preset). Memory does not
depend on the step count (each step re-runs the same chunk-sized forward), only time does, so a
600 s clip at 2 steps measures the memory of a 600 s clip at a quarter of the time. The JSON says
which steps were used (`settings.steps` and each run's `steps`, read back from the stream's own
metadata).

Acceptance (from the issue): peak RSS(600 s) <= 1.2 x peak RSS(8 s); time roughly linear in
duration, checked as time(longest)/time(shortest) <= 1.5 x the ideal duration ratio (faster is
fine); seconds of wall time per clip-second are reported for every length, and so is the ratio
the chunk schedule predicts (long clips are generated in fixed-size overlapping chunks, so the
transformer work grows with the number of chunks, not exactly with the duration).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import contention, cpu_snapshot, git_state, load_avg  # benchmarks/ is on sys.path (this folder)

from avgen.files import write_text_atomic

THREADS = 2  # default; --threads changes it (memory does not depend on it, time under load does)
RSS_FACTOR = 1.2  # peak RSS(longest) <= this x peak RSS(shortest)
LINEAR_TOLERANCE = 1.5  # time(longest)/time(shortest) <= this x the ideal duration ratio
TEXT = "Hello from the Black Forest. This long clip checks that memory stays flat as the clip grows."


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


def worker(seconds: float, seed: int, out_dir: str, steps: int | None, threads: int) -> dict:
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    from avgen.pipeline import GenerationRequest, Generator, chunk_spans, write_stream

    t_imported = time.perf_counter()
    generator = Generator.load(warn=lambda m: None)
    t_loaded = time.perf_counter()
    rss_before = peak_rss_mib()
    current_before = current_rss_mib()
    stream = generator.open(GenerationRequest(text=TEXT, seconds=seconds, seed=seed, steps=steps))
    pieces, current = stream.pieces, []

    def probed():  # the current RSS after each piece has been encoded (the stream is read lazily)
        for piece in pieces:
            yield piece
            current.append(current_rss_mib())

    stream.pieces = probed()
    path = Path(out_dir) / f"long_{seconds:g}s_{seed}.mp4"
    write_stream(stream, path)
    t_done = time.perf_counter()
    peak = peak_rss_mib()
    cfg = generator.cfg
    probes = [c for c in current if c is not None]
    return {
        "seconds": seconds,
        "seed": seed,
        "steps": int(stream.metadata["avgen_steps"]),
        "threads": torch.get_num_threads(),
        "clip_seconds": stream.seconds,
        "frames": stream.frames,
        "chunks": len(chunk_spans(stream.frames, cfg.chunk_frames, cfg.overlap_frames)),
        "pieces": len(current),
        "checkpoint": generator.checkpoint_id,
        "import_s": round(t_imported - t_start, 4),
        "load_s": round(t_loaded - t_imported, 4),
        "generate_and_mux_s": round(t_done - t_loaded, 4),
        "peak_rss_before_generate_mib": round(rss_before, 1),
        "current_rss_before_generate_mib": None if current_before is None else round(current_before, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_rss_growth_mib": round(peak - rss_before, 1),
        # current RSS after the first piece, after each further tenth of the pieces, and the largest
        "current_rss_after_pieces_mib": [round(probes[round(k * (len(probes) - 1) / 10)], 1) for k in range(11)]
        if probes
        else None,
        "current_rss_after_pieces_max_mib": round(max(probes), 1) if probes else None,
        "mp4": mp4_summary(path),
        "cpu_s": round(time.process_time(), 3),
    }


def mp4_summary(path: Path) -> dict:
    """Size, video frames and the durations the file's own header gives (no decoding)."""
    import av

    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        return {
            "bytes": path.stat().st_size,
            "video_frames": v.frames,
            "video_s": round(float(v.duration * v.time_base), 3),
            "audio_s": round(float(a.duration * a.time_base), 3),
        }


def run_child(seconds: float, seed: int, out_dir: str, steps: int | None, threads: int) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        f"{seconds:g}",
        "--seed",
        str(seed),
        "--tmp",
        out_dir,
        "--threads",
        str(threads),
    ] + ([] if steps is None else ["--steps", str(steps)])
    snap = cpu_snapshot()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    busy = contention(snap, cpu_snapshot())
    if proc.returncode != 0:
        raise RuntimeError(f"worker {seconds:g} s failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record["process_wall_s"] = round(wall, 4)
    record["others_cpu_s"] = busy.get("others_cpu_s")  # includes the child's own CPU: see cpu_s
    record["steal_s"] = busy.get("steal_s")
    if record["others_cpu_s"] is not None:
        record["others_cpu_s"] = round(max(0.0, record["others_cpu_s"] - record["cpu_s"]), 3)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "long_clip.json"))
    parser.add_argument("--seconds", type=float, nargs="+", default=[8.0, 600.0])
    parser.add_argument("--repeats", type=int, help="fresh processes per length (default 3; 1 with --quick)")
    parser.add_argument(
        "--steps", type=int, help="sampler steps (default: the model's, 8); memory does not depend on it"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help=f"torch threads per child (default {THREADS}; 1 with --quick): under load, 2 can be far slower",
    )
    parser.add_argument("--quick", action="store_true", help="only 8 s and 600 s, 1 repeat, 2 steps, 1 thread")
    parser.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.seed, args.tmp, args.steps, args.threads or THREADS)))
        return 0

    if args.quick:
        args.seconds = [8.0, 600.0]
        args.steps = 2 if args.steps is None else args.steps
        args.threads = 1 if args.threads is None else args.threads
    if args.threads is None:
        args.threads = THREADS
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    seconds = sorted(set(args.seconds))
    started = time.perf_counter()
    import torch

    report = {
        "benchmark": "long_clip",
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "code": git_state(),
        "settings": {
            "preset": "tiny",
            "threads": args.threads,
            "device": "cpu",
            "seconds": seconds,
            "repeats": args.repeats,
            "quick": args.quick,
            "text": TEXT,
            "steps": args.steps if args.steps is not None else "model default (see each run's steps)",
            "path": "Generator.open + write_stream (chunks streamed to the MP4, as `avgen generate`)",
            "rss": "ru_maxrss of a fresh child process per run (imports + load + generate + mux)",
        },
        "load_avg_before": load_avg(),
    }
    del torch
    raw = []
    with tempfile.TemporaryDirectory(prefix="avgen-long-") as tmp:
        for rep in range(args.repeats):
            for s in seconds:
                record = run_child(s, rep, tmp, args.steps, args.threads)
                raw.append(record)
                print(
                    f"  {s:g} s: {record['generate_and_mux_s']} s, peak RSS {record['peak_rss_mib']} MiB "
                    f"(+{record['peak_rss_growth_mib']} over load), {record['chunks']} chunks",
                    file=sys.stderr,
                )
                for f in Path(tmp).glob("*.mp4"):
                    f.unlink()
    report["load_avg_after"] = load_avg()

    per_length = {}
    for s in seconds:
        runs = [r for r in raw if r["seconds"] == s]
        t = median([r["generate_and_mux_s"] for r in runs])
        per_length[f"{s:g}"] = {
            "seconds": s,
            "chunks": runs[0]["chunks"],
            "generate_and_mux_s_median": round(t, 4),
            "steps": runs[0]["steps"],
            "s_per_clip_second": round(t / s, 4),
            "rtf": round(s / t, 4),
            "peak_rss_mib_median": median([r["peak_rss_mib"] for r in runs]),
            "peak_rss_growth_mib_median": median([r["peak_rss_growth_mib"] for r in runs]),
            "peak_rss_before_generate_mib_median": median([r["peak_rss_before_generate_mib"] for r in runs]),
            "current_rss_after_pieces_mib": runs[0]["current_rss_after_pieces_mib"],  # the first repeat's
            "current_rss_after_pieces_max_mib": runs[0]["current_rss_after_pieces_max_mib"],
        }
    short, long = per_length[f"{seconds[0]:g}"], per_length[f"{seconds[-1]:g}"]
    ideal = seconds[-1] / seconds[0]
    time_ratio = long["generate_and_mux_s_median"] / short["generate_and_mux_s_median"]
    chunk_ratio = long["chunks"] / short["chunks"]
    rss_ratio = long["peak_rss_mib_median"] / short["peak_rss_mib_median"]
    growth_short = max(short["peak_rss_growth_mib_median"], 1e-9)
    report["per_length"] = per_length
    report["comparison"] = {
        "short_seconds": seconds[0],
        "long_seconds": seconds[-1],
        "peak_rss_ratio": round(rss_ratio, 3),
        "peak_rss_limit_ratio": RSS_FACTOR,
        "peak_rss_meets_target": rss_ratio <= RSS_FACTOR,
        "peak_rss_growth_ratio": round(long["peak_rss_growth_mib_median"] / growth_short, 3),
        "time_ratio": round(time_ratio, 3),
        "time_ratio_ideal_linear": ideal,
        "time_ratio_predicted_by_chunks": round(chunk_ratio, 3),
        "time_ratio_over_ideal": round(time_ratio / ideal, 3),
        "time_linear_tolerance": f"time_ratio / ideal <= {LINEAR_TOLERANCE:g}",
        "time_meets_target": time_ratio / ideal <= LINEAR_TOLERANCE,
    }
    report["meets_target"] = report["comparison"]["peak_rss_meets_target"] and report["comparison"]["time_meets_target"]
    report["runs"] = raw
    report["benchmark_wall_s"] = round(time.perf_counter() - started, 1)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({"comparison": report["comparison"], "meets_target": report["meets_target"]}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def median(xs):
    return statistics.median(xs)


if __name__ == "__main__":
    sys.exit(main())
