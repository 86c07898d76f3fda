"""fp32 vs bf16 (autocast) generation on this CPU, side by side in one run.

    python benchmarks/precision.py [--seconds 4 8] [--repeats 3] [--out benchmarks/results/precision.json]

The shipped model loaded once; per repeat, for each length, one request in fp32 and one in bf16
(`Generator.precision`), interleaved so both see the same machine load; each timed as generate +
MP4 mux (`write_result`), torch with 2 threads. Also one transformer forward on a 4 s chunk with
guidance (batch 2) in each precision, and how far bf16 frames land from fp32's (mean |difference|,
0-255) on the same seed. bf16 needs native support (avx512_bf16 or AMX here): without it the
Generator stays fp32 and this benchmark says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import contention, cpu_snapshot, git_state, load_avg  # noqa: E402 (benchmarks/ is on sys.path)

from avgen.files import write_text_atomic  # noqa: E402
from avgen.model import bf16_native  # noqa: E402
from avgen.pipeline import GenerationRequest, Generator, sampler_inputs, write_result  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home across the field."
PRECISIONS = ("fp32", "bf16")


def forward_seconds(generator: Generator, precision: str, repeats: int = 5) -> float:
    cfg, times = generator.cfg, []
    frames = cfg.chunk_frames
    video = torch.randn(2, frames, cfg.video_tokens_per_frame, cfg.video_token_dim)
    audio = torch.randn(2, frames, cfg.audio_latent_channels)
    t = torch.full((2, frames), 0.5)
    phones = torch.zeros(2, frames, dtype=torch.long)
    told = sampler_inputs(cfg, cfg.guidance)  # a distilled model is told the scale and a step size
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for i in range(repeats + 1):
            start = time.perf_counter()
            generator.model.transformer(video, audio, t[:, :, None].expand(-1, -1, video.shape[2]), t, phones, **told)
            if i:  # the first call warms up
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    generator = Generator.load()
    native = bf16_native(torch.device("cpu"))
    runs: dict[str, list[dict]] = {f"{p}_{s:g}": [] for p in PRECISIONS for s in args.seconds}
    frames: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        generator.generate(GenerationRequest(text=TEXT, seconds=args.seconds[0], seed=0))  # warm-up
        for rep in range(args.repeats):
            for s in args.seconds:
                for precision in PRECISIONS:
                    generator.precision = precision
                    snap, start = cpu_snapshot(), time.perf_counter()
                    result = generator.generate(GenerationRequest(text=TEXT, seconds=s, seed=rep))
                    write_result(result, Path(tmp) / "clip.mp4")
                    wall = time.perf_counter() - start
                    runs[f"{precision}_{s:g}"].append(
                        {
                            "seed": rep,
                            "total_s": round(wall, 3),
                            "rtf": round(s / wall, 3),
                            **contention(snap, cpu_snapshot()),
                        }
                    )
                    if rep == 0:
                        frames[f"{precision}_{s:g}"] = result.frames
                    print(f"repeat {rep} {s:g} s {precision}: {wall:.2f} s (RTF {s / wall:.2f})", flush=True)
    summary = {}
    for s in args.seconds:
        fp32, bf16 = (statistics.median(r["total_s"] for r in runs[f"{p}_{s:g}"]) for p in PRECISIONS)
        diff = np.abs(frames[f"fp32_{s:g}"].astype(np.float32) - frames[f"bf16_{s:g}"].astype(np.float32)).mean()
        summary[f"{s:g}"] = {"fp32_total_s_median": round(fp32, 3), "bf16_total_s_median": round(bf16, 3),
                             "fp32_rtf": round(s / fp32, 3), "bf16_rtf": round(s / bf16, 3),
                             "speedup": round(fp32 / bf16, 3), "frame_mean_abs_diff": round(float(diff), 3)}  # fmt: skip
    forward = {p: round(forward_seconds(generator, p), 4) for p in PRECISIONS}
    report = {
        "benchmark": "fp32 vs bf16 autocast generation (generate + mux), model loaded, 2 threads, interleaved",
        "bf16_native": native,
        "git": git_state(),
        "load_avg_after": load_avg(),
        "summary": summary,
        "transformer_forward_s": forward | {"speedup": round(forward["fp32"] / forward["bf16"], 3)},
        "runs": runs,
    }
    write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
    print(json.dumps(summary | {"forward": report["transformer_forward_s"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
