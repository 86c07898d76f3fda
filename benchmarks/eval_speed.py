"""Speed of scoring: every metric of `avgen eval` together (decode, lip-sync, flicker, warping
error, audio flicker) on drawn talking-head MP4s at 64x64 and 512x512, as x real time; and the
`landmarks` lip-sync scorer alone (eval.landmarks.score_landmarks on frames in memory: BlazeFace,
face mesh, signals, protocol) at 64x64 and 256x256 in frames/s, on a real clip at 256x256 too where
../shared/data/real-clips is present.

Targets: >= 10x real time at 64x64 and >= 1x at 512x512 on this CPU (all metrics, issue 3);
the landmarks scorer alone >= 10x real time (250 frames/s) at 256x256.
Usage: python benchmarks/eval_speed.py [--seconds 8] [--repeats 3] [--out benchmarks/results/eval_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from avgen.files import write_text_atomic
from avgen.media import read_mp4, write_mp4
from eval.drawn_face import drawn_talking_head
from eval.landmarks import score_landmarks
from eval.run import EvalSettings, SyncScorer, score_clip

TARGETS = {64: 10.0, 512: 1.0}
LIPSYNC_TARGET = 10.0  # x real time, landmarks scorer alone
REAL_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-clips"


def lipsync_speed(frames: np.ndarray, audio: np.ndarray, repeats: int) -> dict:
    """Median wall time of score_landmarks on frames in memory, after one warm-up."""
    score_landmarks(frames, audio)
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result, face = score_landmarks(frames, audio)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    median = statistics.median(times)
    seconds = len(frames) / 25
    return {
        "frames": len(frames),
        "size": list(frames.shape[1:3]),
        "score_s_raw": [round(t, 4) for t in times],
        "score_s_median": round(median, 4),
        "frames_per_s": round(len(frames) / median, 1),
        # CPU seconds this process used (all its threads): what the scoring costs whatever else runs
        "cpu_s_median": round(statistics.median(cpu), 4),
        "frames_per_cpu_s": round(len(frames) / statistics.median(cpu), 1),
        "x_real_time": round(seconds / median, 2),
        "target_x_real_time": LIPSYNC_TARGET,
        "meets_target": seconds / median >= LIPSYNC_TARGET,
        "av_offset_frames": result.av_offset_frames,
        "face": face,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="landmarks")
    parser.add_argument("--out", default="benchmarks/results/eval_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    scorer = SyncScorer(EvalSettings(backend=args.backend))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size, target in TARGETS.items():
            frames, audio = drawn_talking_head(args.seconds, seed=0, size=64)
            if size != 64:
                frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in frames])
            path = os.path.join(tmp, f"clip{size}.mp4")
            write_mp4(path, frames, audio)
            score_clip(path, scorer)  # warm-up (imports, cascade load)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                row = score_clip(path, scorer)
                times.append(time.perf_counter() - start)
            assert row["error"] is None, row["error"]
            median = statistics.median(times)
            results[f"{size}x{size}"] = {
                "clip_seconds": args.seconds,
                "score_s_raw": [round(t, 4) for t in times],
                "score_s_median": round(median, 4),
                "x_real_time": round(args.seconds / median, 2),
                "target_x_real_time": target,
                "meets_target": args.seconds / median >= target,
                "scores": {
                    k: row[k]
                    for k in (
                        "av_offset_frames",
                        "sync_confidence",
                        "temporal_flickering",
                        "warping_error",
                        "audio_flicker",
                    )
                },
            }
            print(
                f"{size}x{size}: {median:.3f} s for {args.seconds:g} s of video = {args.seconds / median:.1f}x real time "
                f"(target {target:g}x)"
            )
    lipsync = {}
    frames, audio = drawn_talking_head(args.seconds, seed=0, size=64)
    lipsync["drawn 64x64"] = lipsync_speed(frames, audio, args.repeats)
    big = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC) for f in frames])
    lipsync["drawn 256x256 (upscaled)"] = lipsync_speed(big, audio, args.repeats)
    real = sorted(REAL_CLIPS.glob("*.mp4")) if REAL_CLIPS.is_dir() else []
    if real:
        clip = read_mp4(real[0], fps=25)
        lipsync[f"real 256x256 ({real[0].name})"] = lipsync_speed(clip.frames, clip.audio, args.repeats)
    for name, row in lipsync.items():
        print(
            f"landmarks scorer alone, {name}: {row['frames_per_s']:.0f} frames/s = {row['x_real_time']:.1f}x real time "
            f"(target {LIPSYNC_TARGET:g}x); {row['frames_per_cpu_s']:.0f} frames per CPU second"
        )
    report = {
        "benchmark": "eval speed: decode + lip-sync + temporal flickering + warping error + audio flicker, per clip",
        "backend": args.backend,
        "how": "median wall time of score_clip() over repeats after one warm-up; drawn talking-head clips upscaled "
        "bicubically for 512x512; flow at <=256 px, face detection at 128x128 and face mesh at 192x192 "
        "crops (the models' inputs)",
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "opencv": cv2.__version__,
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "loadavg": os.getloadavg(),
        },
        "results": results,
        "landmarks_scorer_alone": lipsync,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
