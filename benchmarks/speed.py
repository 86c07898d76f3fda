"""The teacher (today's model) against its distilled student, side by side in one run on this CPU.

    python benchmarks/speed.py [--student avgen/weights/tiny.safetensors]
        [--teacher avgen/weights/teacher/tiny.safetensors] [--seconds 4 8] [--repeats 3]
        [--per-second 4 8 16 32 64] [--out benchmarks/results/speed.json]

Per repeat and clip length, every variant generates the same request (the same text, seed = the
repeat) one after another, so all see the same machine load; each is timed as generate + MP4 mux
(`write_result`), models loaded, torch with 2 threads, each Generator in the precision it picks
(bf16 where the CPU has it). Variants: the teacher at its defaults (8 steps, classifier-free
guidance: two forwards a step) in fp32 (the model as it ran before bf16 and distillation) and in
the Generator's precision, and the student at 8, 4, 2 and 1 steps (guidance folded in: one forward
a step).

Each run is split by stage, timed by wrapping the pieces the pipeline calls: transformer forwards,
video decode (`Generator._decode_video`), audio (`AudioStream.push`/`finish`: audio decoder and
vocoder) and the mux; what is left is the rest (noise, phones, Python).

`--per-second`: compute seconds per clip second at growing lengths (chunking makes long clips cost
more per second if chunks are mostly context): the teacher once, the student at its default steps
`--per-second-repeats` times, lengths interleaved, the median kept; `--student-long`: more lengths
for the student alone (600 s takes minutes). `--student-chunks 4`: the student again with 4 s
chunks instead of its shipped chunk length (the same weights: the chunk is a generation setting),
interleaved with it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import contention, cpu_snapshot, git_state, load_avg  # noqa: E402 (benchmarks/ is on sys.path)

from avgen import audio_codec  # noqa: E402
from avgen.files import write_text_atomic  # noqa: E402
from avgen.pipeline import GenerationRequest, Generator, write_result  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home across the field."


@contextlib.contextmanager
def stage_timers(generator: Generator):
    """Seconds spent per stage while the block runs: {'transformer', 'video_decode', 'audio'}."""
    spent: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    transformer = generator.model.transformer
    stream = audio_codec.AudioStream
    originals = (transformer.forward, generator._decode_video, stream.push, stream.finish)
    transformer.forward = timed("transformer", originals[0])
    generator._decode_video = timed("video_decode", originals[1])
    stream.push, stream.finish = timed("audio", originals[2]), timed("audio", originals[3])
    try:
        yield spent
    finally:
        del transformer.forward, generator._decode_video
        stream.push, stream.finish = originals[2], originals[3]


def timed_request(generator: Generator, request: GenerationRequest, path: Path) -> dict:
    snap = cpu_snapshot()
    with stage_timers(generator) as spent:
        start = time.perf_counter()
        result = generator.generate(request)
        generated = time.perf_counter()
        write_result(result, path)
        end = time.perf_counter()
    total = end - start
    stages = {k: round(v, 3) for k, v in spent.items()} | {"mux": round(end - generated, 3)}
    stages["rest"] = round(total - sum(stages.values()), 3)
    return {"seed": request.seed, "total_s": round(total, 3), "rtf": round(request.seconds / total, 3),
            "stages_s": stages, **contention(snap, cpu_snapshot())}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(ROOT / "avgen" / "weights" / "teacher" / "tiny.safetensors"))
    parser.add_argument("--student", default=str(ROOT / "avgen" / "weights" / "tiny.safetensors"))
    parser.add_argument("--seconds", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--student-steps", type=int, nargs="+", default=[8, 4, 2, 1])
    parser.add_argument("--per-second", type=float, nargs="*", default=[4, 4.2, 8, 16, 32, 64])
    parser.add_argument("--per-second-repeats", type=int, default=1)
    parser.add_argument("--student-long", type=float, nargs="*", default=[], help="lengths for the student only")
    parser.add_argument(
        "--student-chunks", type=float, nargs="*", default=[], help="other chunk lengths (s) to compare"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    teacher, student = Generator.load(args.teacher), Generator.load(args.student)
    teacher_fp32 = Generator.load(args.teacher)
    teacher_fp32.precision = "fp32"
    variants = {"teacher_fp32": (teacher_fp32, None), "teacher": (teacher, None)} | {
        f"student_{k}": (student, k) for k in args.student_steps
    }
    runs: dict[str, list[dict]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        for generator in (teacher_fp32, teacher, student):  # warm-up: first calls build caches and load the vocoder
            generator.generate(GenerationRequest(text=TEXT, seconds=args.seconds[0], seed=0))
        for rep in range(args.repeats):
            for s in args.seconds:
                for name, (generator, steps) in variants.items():
                    row = timed_request(generator, GenerationRequest(text=TEXT, seconds=s, seed=rep, steps=steps), clip)
                    runs[f"{name}_{s:g}"].append(row)
                    print(f"repeat {rep} {s:g} s {name}: {row['total_s']:.2f} s (RTF {row['rtf']:.2f}) {row['stages_s']}",
                          flush=True)  # fmt: skip
        students = {f"student_{student.cfg.steps}": student}
        for chunk in args.student_chunks:
            other = Generator(student.model, student.checkpoint_id)  # the same weights: the chunk is a setting
            other.cfg = other.cfg.replace(chunk_seconds=chunk)
            students[f"student_{student.cfg.steps}_chunk{chunk:g}s"] = other
        per_second_runs: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        plan = [(0, s, "teacher", teacher) for s in args.per_second]
        plan += [(rep, s, name, g) for rep in range(args.per_second_repeats) for s in args.per_second
                 for name, g in students.items()]  # fmt: skip
        plan += [(0, s, name, g) for s in args.student_long for name, g in students.items()]
        for rep, s, name, generator in plan:
            row = timed_request(generator, GenerationRequest(text=TEXT, seconds=s, seed=rep), clip)
            per_second_runs[name][f"{s:g}"].append(row | {"compute_s_per_clip_s": round(row["total_s"] / s, 3)})
            print(f"per second {s:g} s {name} (repeat {rep}): {row['total_s'] / s:.3f} s per clip second", flush=True)
        per_second = {
            name: {
                length: {
                    "compute_s_per_clip_s": statistics.median(r["compute_s_per_clip_s"] for r in rows),
                    "chunk_seconds": students.get(name, teacher).cfg.chunk_seconds,
                    "runs": rows,
                }
                for length, rows in by_length.items()
            }
            for name, by_length in per_second_runs.items()
        }
    summary = {}
    for key, rows in runs.items():
        total = statistics.median(r["total_s"] for r in rows)
        seconds = float(key.rsplit("_", 1)[1])
        stages = {k: round(statistics.median(r["stages_s"][k] for r in rows), 3) for k in rows[0]["stages_s"]}
        summary[key] = {"total_s_median": round(total, 3), "rtf": round(seconds / total, 3), "stages_s_median": stages}
    for s in args.seconds:
        for base_name in ("teacher_fp32", "teacher"):
            base = summary[f"{base_name}_{s:g}"]["total_s_median"]
            for k in ["teacher", *(f"student_{k}" for k in args.student_steps)]:
                if k != base_name:
                    summary[f"{k}_{s:g}"][f"speedup_vs_{base_name}"] = round(
                        base / summary[f"{k}_{s:g}"]["total_s_median"], 3
                    )
    report = {
        "benchmark": "teacher vs distilled student, generate + MP4 mux, models loaded, 2 threads, interleaved",
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "teacher": {
            "checkpoint": args.teacher,
            "steps": teacher.cfg.steps,
            "guidance": teacher.cfg.guidance,
            "precision": [teacher_fp32.precision, teacher.precision],
        },  # fmt: skip
        "student": {
            "checkpoint": args.student,
            "default_steps": student.cfg.steps,
            "guidance": student.cfg.guidance,
            "precision": student.precision,
        },  # fmt: skip
        "git": git_state(),
        "load_avg_after": load_avg(),
        "summary": summary,
        "per_second": per_second,
        "runs": runs,
    }
    write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
