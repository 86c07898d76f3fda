#!/usr/bin/env python
"""Variants of one model against a reference, metric by metric, from `make_results.py --work` runs.

    python scripts/make_results.py --selfflow TEACHER.safetensors --work W/teacher ...
    python scripts/make_results.py --selfflow STUDENT.safetensors --steps 4 --work W/student-4 ...
    python scripts/compare_results.py --run "teacher (8 steps)=W/teacher" --run "student, 4 steps=W/student-4" \
        --out docs/results/distilled.md

The first --run is the reference. Each run's "Self-Flow" column (the checkpoint given as
--selfflow) is read from its rows.json, with the same held-out clips and seeds in every run. For
every metric of docs/results.md a variant holds when its mean lies inside the reference's 95%
interval or beyond it on the better side (for metrics best near ground truth: closer to ground
truth's mean than the reference's mean is, or inside the interval).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/: the `results` package

from results.common import ClipScores, System
from results.metrics import TABLE_METRICS, cell, summarise

from avgen.files import write_text_atomic

# +1: higher is better, -1: lower is better, 0: best near ground truth's value
DIRECTION = {
    "abs_offset_learned": -1, "within1_learned": +1, "abs_offset_landmarks": -1, "within1_landmarks": +1,
    "conf_learned": +1, "ratio_learned": +1, "conf_landmarks": +1, "ratio_landmarks": +1, "conf_mismatch": -1,
    "conf_drop": +1, "mouth_motion": 0, "ratio_mouth": 0, "temporal_flickering": 0, "warping_error": -1,
    "audio_flicker": -1, "speech_fraction": 0, "generation_seconds": -1,
}  # fmt: skip
GROUND_TRUTH_RATIO = {"ratio_mouth": 1.0}  # where ground truth's value of a ratio is 1 by definition


def read_run(folder: Path) -> dict[str, System]:
    rows = json.loads((folder / "rows.json").read_text())
    systems = {}
    for key in ("gt", "selfflow"):
        if key not in rows:
            raise SystemExit(
                f"{folder / 'rows.json'} has no {key!r} rows: run make_results.py with --selfflow and --work"
            )
        clips = [ClipScores(r["index"], "", r.get("learned"), r.get("landmarks"), r.get("mismatch"), r.get("mouth_motion"),
                            generation_seconds=r.get("generation_seconds")) for r in rows[key]]  # fmt: skip
        systems[key] = System(key, key, clips=clips)
    return systems


def interval(stat: tuple) -> tuple[float | None, float | None, float | None]:
    """(value, low, high) of a summary entry: mean ± half-width, or a ratio/fraction's interval."""
    if len(stat) == 4:
        return stat[0], stat[1], stat[2]
    mean, half = stat[0], stat[1]
    if mean is None or half is None:
        return mean, mean, mean
    return mean, mean - half, mean + half


def holds(metric: str, variant: float | None, reference: tuple, truth: float | None) -> bool | None:
    """Whether `variant` is within the reference's interval or better (None: cannot tell)."""
    mean, low, high = interval(reference)
    if variant is None or mean is None:
        return None
    if low is not None and high is not None and low <= variant <= high:
        return True
    direction = DIRECTION[metric]
    if direction == 0:
        truth = GROUND_TRUTH_RATIO.get(metric, truth)
        return truth is not None and abs(variant - truth) < abs(mean - truth)
    return (variant - mean) * direction > 0


def compare(runs: list[tuple[str, dict[str, System]]]) -> tuple[list[str], dict]:
    """Markdown table lines, and {label: {metric: holds}} for every variant."""
    summaries = [(label, summarise(systems), systems) for label, systems in runs]
    ref_label, ref_summary, ref_systems = summaries[0]
    n_clips = len(ref_systems["selfflow"].clips)
    lines = ["| metric | ground truth | " + " | ".join(label for label, _, _ in summaries) + " |",
             "|---|---|" + "---|" * len(summaries)]  # fmt: skip
    verdicts: dict[str, dict[str, bool | None]] = {label: {} for label, _, _ in summaries[1:]}
    for metric, name, digits in TABLE_METRICS:
        gt_stat = ref_summary[metric].get("gt")
        truth = interval(gt_stat)[0] if gt_stat else None
        cells = [cell(ref_summary, metric, "gt", ref_systems["gt"], digits, n_clips)]
        cells.append(cell(ref_summary, metric, "selfflow", ref_systems["selfflow"], digits, n_clips))
        for label, summary, systems in summaries[1:]:
            text = cell(summary, metric, "selfflow", systems["selfflow"], digits, n_clips)
            if metric != "generation_seconds":
                verdict = holds(
                    metric, interval(summary[metric]["selfflow"])[0], ref_summary[metric]["selfflow"], truth
                )
                verdicts[label][metric] = verdict
                text += {True: " ✓", False: " ✗", None: ""}[verdict]
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines, verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, metavar="LABEL=FOLDER",
                   help="a make_results --work folder; the first is the reference")  # fmt: skip
    p.add_argument("--out", help="write the markdown table here (default: print it)")
    args = p.parse_args(argv)
    if len(args.run) < 2:
        p.error("give the reference and at least one variant (--run twice or more)")
    runs = []
    for item in args.run:
        label, sep, folder = item.rpartition("=")
        if not sep or not label:
            p.error(f"--run {item!r} is not LABEL=FOLDER")
        runs.append((label, read_run(Path(folder))))
    lines, verdicts = compare(runs)
    legend = [f"✓: within the 95% interval of {runs[0][0]} or better; ✗: worse. Mean ± 95% CI half-width "
              "(Student t), ratios with a paired bootstrap interval, fractions with a Wilson interval."]  # fmt: skip
    summary = [f"- {label}: {sum(v is True for v in marks.values())} of {len(marks)} metrics hold"
               + (f"; worse: {', '.join(m for m, v in marks.items() if v is False)}" if any(v is False for v in marks.values()) else "")
               for label, marks in verdicts.items()]  # fmt: skip
    text = "\n".join(lines + [""] + legend + [""] + summary) + "\n"
    if args.out:
        write_text_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
