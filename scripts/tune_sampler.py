#!/usr/bin/env python
"""Choose the sampler defaults of a checkpoint on a tuning set, not on the clips results are reported on.

    python scripts/tune_sampler.py --checkpoint runs/tiny/model-flow.safetensors --clips 8 \
        --grid "steps=8 cfg=2 shift=1; steps=8 cfg=4 shift=3" --out docs/results/sampler_tuning.json

Tuning set: held-out clips of the corpus with seed `--corpus-seed` (default 1; docs/results.md
reports on seed 0), generated with their transcript, length and reference frame, generation seed i
for clip i. For each setting it writes the mean learned-scorer sync confidence, |AV offset|,
temporal flickering and warping error, next to ground truth's on the same clips.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avgen.files import write_text_atomic


def parse_grid(text: str) -> list[dict]:
    kinds = {"steps": int, "cfg": float, "shift": float, "sampler": str}
    settings = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        setting = {}
        for item in part.split():
            key, _, value = item.partition("=")
            if key not in kinds:
                raise SystemExit(f"unknown setting {key!r} in {part!r}; use {', '.join(kinds)}")
            setting[key] = kinds[key](value)
        settings.append(setting)
    return settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--grid", required=True, help='settings separated by ";", e.g. "steps=8 cfg=2; cfg=4 shift=3"')
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--corpus-seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from results.clips import generation_request  # scripts/ is on sys.path: this script's folder

    from avgen.data import make_sample
    from avgen.media import write_mp4
    from avgen.pipeline import Generator, write_result
    from eval.run import EvalSettings, SyncScorer, score_clip

    scorer = SyncScorer(EvalSettings(backend="learned"))
    samples = [make_sample(i, split="heldout", seed=args.corpus_seed) for i in range(args.clips)]
    generator = Generator.load(args.checkpoint)

    def summary(rows: list[dict]) -> dict:
        def mean(key, f=lambda x: x):
            values = [f(r[key]) for r in rows if r.get(key) is not None]
            return round(float(np.mean(values)), 4) if values else None

        return {
            "sync_confidence": mean("sync_confidence"),
            "abs_av_offset": mean("av_offset_frames", abs),
            "temporal_flickering": mean("temporal_flickering"),
            "warping_error": mean("warping_error", float),
        }

    with tempfile.TemporaryDirectory() as work:
        gt_rows = []
        for i, sample in enumerate(samples):
            path = Path(work) / f"gt{i}.mp4"
            write_mp4(path, sample.frames, sample.audio)
            gt_rows.append(score_clip(str(path), scorer))
        ground_truth = summary(gt_rows)
        print(f"ground truth: {ground_truth}", flush=True)
        results = []
        for setting in parse_grid(args.grid):
            rows, began = [], time.monotonic()
            for i, sample in enumerate(samples):
                request = generation_request(
                    sample, i, **{"guidance" if k == "cfg" else k: v for k, v in setting.items()}
                )
                path = Path(work) / f"gen{i}.mp4"
                write_result(generator.generate(request), path)
                rows.append(score_clip(str(path), scorer))
            result = {"setting": setting, **summary(rows), "seconds": round(time.monotonic() - began, 1)}
            conf, gt_conf = result["sync_confidence"], ground_truth["sync_confidence"]
            result["confidence_ratio"] = round(conf / gt_conf, 3) if conf is not None and gt_conf else None
            print(result, flush=True)
            results.append(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps({"checkpoint": args.checkpoint, "clips": args.clips,
                                          "corpus_seed": args.corpus_seed, "ground_truth": ground_truth,
                                          "results": results}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
