"""The command line: held-out set, checkpoints, clips, scores, figures and report, in that order."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from avgen.files import write_text_atomic
from results.clips import load_system, produce_clips, score_all
from results.common import LABELS, LOG_OBJECTIVE, SPLIT_NAMES, System, fmt_duration, say
from results.metrics import summarise
from results.plots import plot_bars, plot_contact_sheet, plot_losses, plot_mouth_signals
from results.report import write_report

DESCRIPTION = (
    "Results of ground truth, baseline flow matching and Self-Flow on held-out clips (see scripts/make_results.py)."
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="checkpoint of the flow-matching baseline (safetensors)")
    p.add_argument("--selfflow", help="checkpoint of the Self-Flow model (safetensors)")
    p.add_argument("--logs", help="folder with the training logs model-<objective>.log.jsonl")
    p.add_argument("--clips", type=int, default=32, help="number of clips (at least 2)")
    p.add_argument("--split", choices=tuple(SPLIT_NAMES), default="heldout",
                   help="corpus split of the clips: heldout (default; identities and sentences no training clip "
                        "has) or train (the training corpus's identities and sentences: a check of fit, not of "
                        "generalisation)")  # fmt: skip
    p.add_argument("--out", default="docs", help="writes OUT/results.md and OUT/results/*.png")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance (default: the checkpoint's)")
    p.add_argument("--shift", type=float, default=None, help="timestep shift (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="generation seed of clip i is SEED + i")
    p.add_argument("--corpus-seed", type=int, default=0, help="seed of the corpus")
    p.add_argument("--contact-clips", type=int, default=2, help="clips shown on the contact sheet")
    p.add_argument("--work", default=None, help="keep the MP4s here (default: a temporary folder, deleted)")
    p.add_argument("--threads", type=int, default=0, help="torch/OpenCV threads (0: their defaults)")
    args = p.parse_args(argv)
    if args.clips < 2:
        p.error("--clips must be at least 2 (the mismatched-audio control pairs clip i with clip i + 1)")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    began = time.monotonic()
    import torch

    if args.threads > 0:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    from avgen.data.corpus import make_sample

    out = Path(args.out)
    figures = out / "results"
    figures.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="avgen-results-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        say(f"{SPLIT_NAMES[args.split]} set: {args.clips} clips")
        samples = [make_sample(i, split=args.split, seed=args.corpus_seed) for i in range(args.clips)]
        logs = Path(args.logs) if args.logs else None
        systems = {"gt": System("gt", LABELS["gt"])}
        systems["baseline"] = load_system("baseline", args.baseline, logs, work)
        systems["selfflow"] = load_system("selfflow", args.selfflow, logs, work)
        for key in ("baseline", "selfflow"):
            s = systems[key]
            if s.available:
                say(f"{s.label}: {s.checkpoint}, objective {s.objective}, {s.steps} steps, "
                    f"wall-clock {fmt_duration(s.train_seconds)}")  # fmt: skip
                if s.objective and s.objective != LOG_OBJECTIVE[key]:
                    say(f"warning: {s.label} checkpoint says objective {s.objective!r}")
        t0 = time.monotonic()
        produce_clips(systems, samples, args, work)
        t1 = time.monotonic()
        score_all(systems, keep_frames=args.contact_clips)
        t2 = time.monotonic()
        summary = summarise(systems)
        say("plotting")
        plot_losses(systems, figures / "loss_curves.png")
        set_name = SPLIT_NAMES[args.split]
        plot_bars(systems, summary, figures / "metrics.png", set_name)
        plot_contact_sheet(systems, samples, args.contact_clips, figures / "contact_sheet.png", set_name)
        plot_mouth_signals(systems, samples, args.contact_clips, figures / "mouth_signals.png", set_name)
        timings = {"generate": t1 - t0, "score": t2 - t1, "total": time.monotonic() - began}
        write_report(out / "results.md", systems, samples, summary, args, argv, timings)
        if args.work:
            rows = {key: [{"index": c.index, "learned": c.learned, "landmarks": c.landmarks, "mismatch": c.mismatch,
                           "mouth_motion": c.mouth_motion, "generation_seconds": c.generation_seconds}
                          for c in system.clips] for key, system in systems.items()}  # fmt: skip
            write_text_atomic(work / "rows.json", json.dumps(rows, indent=1, default=str))
        say(f"wrote {out / 'results.md'} and {len(list(figures.glob('*.png')))} PNGs in {figures}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0
