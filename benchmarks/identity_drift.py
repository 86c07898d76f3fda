"""Identity drift without a reference image: a first-chunk rest frame as the reference vs none, vs ground truth.

    python benchmarks/identity_drift.py [--clips 4] [--seconds 12] [--threads 2] [--steps N]
                                        [--out docs/results/identity_drift.json] [--sheet PNG]

For each of `--clips` held-out transcripts (avgen.data.make_sample(i, split="heldout",
seconds=S)), the shipped tiny model generates the clip from the transcript alone (no reference
image, seed i) twice: "old", every chunk without a reference (Generator.self_reference = False),
and "new", a rest frame of the first second as the reference (the default: the first second is
generated alone first, with the first chunk's noise, then every chunk with it). Per clip and as means:

- drift (eval.drift.drift): face-box and background distance between the mean frame of the first
  second and that of the last second (0..255 pixel units), for old, new and the ground truth
  (the corpus's own drawn clip: its head moves and blinks, its identity and background do not);
- face_curve: the face-box distance of each second's mean frame from the first second's;
- seam ratio (eval.drift.seam_ratio): the frame-to-frame change into each chunk's first new frame
  over the median change elsewhere (about 1: no jump), for old and new, and for the ground truth
  at the same frames (no seams there: what chance gives);
- mouth motion after the first chunk (after the first second in a clip of one chunk): the mean
  frame-to-frame change in the lower-centre mouth box (a reference that froze the mouth would show
  as less motion than old);
- the rest frame chosen (avgen.pipeline.rest_frame) and the drawn mouth opening there (ground truth).

With `--sheet`, a PNG: per clip, the first frame, then the last frame of old, new and ground truth.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np
from machine import git_state, load_avg  # benchmarks/ is on sys.path (this folder)

from avgen.files import atomic_path, write_text_atomic
from eval.drift import drift, frame_changes, seam_ratio
from eval.landmarks import FALLBACK_COLS as MOUTH_COLS
from eval.landmarks import FALLBACK_ROWS as MOUTH_ROWS

FPS = 25
KEYS = ("drift_face", "drift_background", "seam_ratio", "mouth_motion_after_first_chunk")


def face_curve(frames, fps: int = FPS) -> list[float]:
    """Face-box distance of each whole second's mean frame from the first second's."""
    first = frames[:fps]
    return [
        round(drift(np.concatenate([first, frames[s * fps : (s + 1) * fps]]), fps).face, 3)
        for s in range(1, len(frames) // fps)
    ]


def mouth_motion(frames) -> float:
    """Mean frame-to-frame change in the mouth box (the lower centre, as eval.landmarks' fixed region):
    a reference that froze the mouth would show here."""
    h, w = frames.shape[1:3]
    mouth = frames[
        :, round(MOUTH_ROWS[0] * h) : round(MOUTH_ROWS[1] * h), round(MOUTH_COLS[0] * w) : round(MOUTH_COLS[1] * w)
    ]
    return float(frame_changes(np.ascontiguousarray(mouth)).mean())


def measure(frames, seams: list[int], after: int) -> dict:
    d = drift(frames)
    return {
        "drift_face": round(d.face, 3),
        "drift_background": round(d.background, 3),
        "seam_ratio": round(seam_ratio(frames, seams), 3) if seams else None,  # None: one chunk, no seams
        "seam_ratio_each": [
            round(seam_ratio(frames, [seam]), 3) for seam in seams
        ],  # the first: where the reference starts
        "mouth_motion_after_first_chunk": round(mouth_motion(frames[after:]), 3),
        "face_curve": face_curve(frames),
    }


def mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.fmean(known), 3) if known else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=4, help="held-out transcripts (default 4)")
    parser.add_argument("--seconds", type=float, default=12.0, help="clip length (default 12 s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "identity_drift.json"))
    parser.add_argument("--sheet", help="also write a PNG of first and last frames here")
    args = parser.parse_args()
    if args.clips < 1 or args.seconds < 2:
        parser.error("give at least one clip of at least 2 seconds")

    import torch

    torch.set_num_threads(args.threads)
    from avgen.data import make_sample
    from avgen.pipeline import GenerationRequest, Generator, chunk_spans, resolve, rest_frame

    generator = Generator.load(warn=lambda m: print(m, file=sys.stderr))
    cfg = generator.cfg
    started = time.perf_counter()
    rows, sheet = [], []
    for i in range(args.clips):
        sample = make_sample(i, split="heldout", seconds=args.seconds)
        request = GenerationRequest(text=sample.text, seconds=args.seconds, seed=i, steps=args.steps)
        settings = resolve(request, cfg)
        spans = chunk_spans(settings.frames, cfg.chunk_frames, cfg.overlap_frames)
        seams = [start + context for start, _, context in spans[1:]]
        chosen = rest_frame(settings.phones, min(FPS, spans[0][1]))
        after = spans[0][1] if len(spans) > 1 else FPS  # a one-chunk clip: after its first second
        clips, seconds = {}, {}
        for name, on in (("old", False), ("new", True)):
            generator.self_reference = on
            t0 = time.perf_counter()
            result = generator.generate(request)
            seconds[name] = round(time.perf_counter() - t0, 1)
            clips[name] = result.frames
            assert result.metadata["avgen_reference"] == ("first-chunk" if on else "none")
        row = {
            "index": i,
            "identity": sample.identity,
            "text": sample.text,
            "frames": settings.frames,
            "seams": seams,
            "rest_frame": chosen,
            "rest_frame_phone": int(settings.phones[chosen]),
            "rest_frame_truth_mouth_open": round(float(sample.mouth_open[chosen]), 3),
            "generate_s": seconds,
            "old": measure(clips["old"], seams, after),
            "new": measure(clips["new"], seams, after),
            "truth": measure(sample.frames, seams, after),
        }
        rows.append(row)
        sheet.append(np.concatenate([clips["new"][0], clips["old"][-1], clips["new"][-1], sample.frames[-1]], axis=1))
        print(
            f"clip {i}: face drift old {row['old']['drift_face']} new {row['new']['drift_face']} "
            f"truth {row['truth']['drift_face']}; seam ratio old {row['old']['seam_ratio']} "
            f"new {row['new']['seam_ratio']} truth {row['truth']['seam_ratio']} ({seconds})",
            file=sys.stderr,
        )

    summary = {name: {key: mean([r[name][key] for r in rows]) for key in KEYS} for name in ("old", "new", "truth")}
    summary["new_face_drift_below_old_in_clips"] = sum(r["new"]["drift_face"] < r["old"]["drift_face"] for r in rows)
    report = {
        "benchmark": "identity_drift",
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code": git_state(),
        "checkpoint": generator.checkpoint_id,
        "settings": {
            "clips": args.clips,
            "seconds": args.seconds,
            "threads": args.threads,
            "steps": args.steps or cfg.steps,
            "guidance": cfg.guidance,
            "chunk_frames": cfg.chunk_frames,
            "overlap_frames": cfg.overlap_frames,
            "transcripts": "avgen.data.make_sample(i, split='heldout', seconds), i = 0..clips-1; seed i",
            "reference_image": "none (text only)",
            "units": "mean absolute pixel difference, 0..255",
        },
        "load_avg_before_end": load_avg(),
        "summary": summary,
        "clips": rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    if args.sheet:
        import cv2

        image = np.ascontiguousarray(np.concatenate(sheet)[:, :, ::-1])  # 64x64 frames, RGB -> BGR
        with atomic_path(args.sheet, suffix=".png") as tmp:
            cv2.imwrite(str(tmp), image)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
