#!/usr/bin/env python
"""Issue 4, section 5: results of ground truth, baseline flow matching and Self-Flow on held-out clips.

    python scripts/make_results.py --baseline runs/tiny/model-flow.safetensors \
        --selfflow runs/tiny/model-selfflow.safetensors --logs runs/tiny --clips 32 --out docs

writes OUT/results.md and OUT/results/*.png (loss curves, metric bars, a contact sheet of frames,
mouth signals). Every number in them comes from the run that wrote them.

What it does
- Held-out set: clips i = 0..N-1 of `make_sample(i, split="heldout", seed=0)` (identities and
  sentences no training clip has), at their natural length. Ground truth is the sample itself,
  written to MP4 like the generated clips, so every system goes through the same H.264/AAC round
  trip before it is scored.
- Each model generates the same transcript with the same number of frames (seconds = T / 25), the
  identity's reference frame (`reference_frame(sample)`) as `reference_image`, generation seed
  `--seed + i` (the same for both models), the checkpoint's default steps/cfg/shift unless --steps/--cfg/--shift.
  Each checkpoint is copied into the work folder before it is read, so a training run that
  rewrites it meanwhile cannot mix two versions.
- Scores (eval.run.score_clip, both sync backends "learned" and "landmarks"): AV offset, sync
  confidence, temporal flickering, warping error, audio flicker (the flicker scores do not depend
  on the backend; they are taken from the learned row).
- Mouth motion: the mean absolute frame-to-frame change of eval.landmarks.mouth_signal (the
  face-mesh lip opening, inner-lip gap over the eye-corner distance, high-passed) of the decoded
  MP4. A frozen face scores 0.
- Mismatched-audio control: the same video muxed with the audio of clip (i + 1) mod N of the same
  system (repeated if shorter, cut if longer, so it is speech all along), scored with the learned
  backend. Its sync confidence must be clearly lower than the matched clip's.
- Training: steps from each checkpoint's metadata; wall-clock from the training log (the logged
  "seconds" are per training session; sessions of a resumed run are summed).

Acceptance checks (issue 4), evaluated from this run's numbers:
- mean |AV offset| <= 1 frame and sync confidence >= 60 % of ground truth's (ratio of the means
  over the same transcripts), learned scorer;
- mismatched audio clearly lower: the 95 % CI of the paired difference (matched - mismatched
  confidence, learned) lies above 0;
- |temporal_flickering - ground truth's| <= 0.01, and mouth motion comparable: between 50 % and
  200 % of ground truth's mean (a frozen face has 0 %);
- Self-Flow vs baseline at equal steps: reported (the check fails only if it cannot be reported).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avgen.timeline import FPS

SYSTEMS = (("gt", "ground truth"), ("baseline", "baseline (flow matching)"), ("selfflow", "Self-Flow"))
LABELS = dict(SYSTEMS)
SHORT = {"gt": "GT", "baseline": "baseline", "selfflow": "Self-Flow"}
LOG_OBJECTIVE = {"baseline": "flow", "selfflow": "selfflow"}
COLORS = {"gt": "#4d4d4d", "baseline": "#1f77b4", "selfflow": "#d62728"}

MAX_MEAN_ABS_OFFSET = 1.0  # frames
MIN_CONFIDENCE_RATIO = 0.60
MAX_FLICKER_GAP = 0.01
MOUTH_MOTION_RANGE = (0.5, 2.0)  # "comparable": this fraction of ground truth's mean mouth motion
LOSS_WINDOW = 100  # steps: the loss at a step is the mean loss_gen over the logged rows in (step - 100, step]
BOOTSTRAP = 2000

_START = time.monotonic()


def say(message: str) -> None:
    print(f"[make_results {time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ data


@dataclass
class ClipScores:
    index: int
    path: str
    learned: dict | None = None
    landmarks: dict | None = None
    mismatch: dict | None = None
    mouth_motion: float | None = None
    mouth_signal: np.ndarray | None = None
    frames: np.ndarray | None = None  # decoded, kept only for the clips on the contact sheet
    generation_seconds: float | None = None


@dataclass
class System:
    key: str
    label: str
    checkpoint: str | None = None
    available: bool = True
    reason: str | None = None  # why not available
    metadata: dict = field(default_factory=dict)
    checkpoint_hash: str | None = None
    steps: int | None = None  # training steps of the checkpoint
    objective: str | None = None
    sampler: dict = field(default_factory=dict)
    log_rows: list[dict] = field(default_factory=list)
    log_path: str | None = None
    train_seconds: float | None = None
    train_seconds_note: str = ""
    clips: list[ClipScores] = field(default_factory=list)


def finite(value) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt(value, digits: int = 3) -> str:
    value = finite(value)
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_ci(stat: tuple, digits: int = 3) -> str:
    mean, half = stat[:2]
    if finite(mean) is None:
        return "n/a"
    text = f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if finite(half) is not None else "")
    return text


def mean_ci(values) -> tuple[float | None, float | None, int]:
    from eval.run import mean_ci95

    return mean_ci95([finite(v) for v in values])


def ratio_of_means(numerator, denominator, seed: int = 0) -> tuple[float | None, float | None, float | None, int]:
    """mean(numerator) / mean(denominator) over the clips where both exist, and a paired
    percentile-bootstrap 95 % interval (clips resampled, fixed seed)."""
    pairs = [(a, b) for a, b in zip(numerator, denominator) if finite(a) is not None and finite(b) is not None]
    if not pairs:
        return None, None, None, 0
    a, b = np.array(pairs, dtype=np.float64).T
    if b.mean() <= 0:
        return None, None, None, len(pairs)
    ratio = float(a.mean() / b.mean())
    if len(pairs) < 2:
        return ratio, None, None, 1
    idx = np.random.default_rng(seed).integers(0, len(pairs), size=(BOOTSTRAP, len(pairs)))
    den = b[idx].mean(axis=1)
    ok = den > 0
    boot = a[idx].mean(axis=1)[ok] / den[ok]
    if boot.size < BOOTSTRAP // 2:
        return ratio, None, None, len(pairs)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return ratio, float(lo), float(hi), len(pairs)


def wilson(values) -> tuple[float | None, float | None, float | None, int]:
    """A fraction of 0/1 values and its 95 % Wilson score interval."""
    values = [v for v in (finite(v) for v in values) if v is not None]
    n = len(values)
    if n == 0:
        return None, None, None, 0
    p, z = float(np.mean(values)), 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half), n


# ------------------------------------------------------------------------------------ training


def read_training_log(path: Path) -> list[dict]:
    """Rows of a training log with `wall`: seconds since the first session began, summing the
    sessions of a resumed run (each session logs seconds since its own start)."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        if isinstance(row, dict) and finite(row.get("step")) is not None:
            rows.append(row)
    rows.sort(key=lambda r: r["step"])
    offset, previous = 0.0, None
    for row in rows:
        seconds = finite(row.get("seconds"))
        if seconds is None:
            row["wall"] = None
            continue
        if previous is not None and seconds < previous:
            offset += previous  # a new session (resumed from a checkpoint at the previous row's step)
        row["wall"], previous = offset + seconds, seconds
    return rows


def wall_at(rows: list[dict], step: int) -> tuple[float | None, str]:
    exact = [r for r in rows if r["step"] == step and r.get("wall") is not None]
    if exact:
        return exact[-1]["wall"], ""
    before = [r for r in rows if r["step"] <= step and r.get("wall") is not None]
    if before:
        return before[-1]["wall"], f" (log row at step {before[-1]['step']})"
    return None, ""


def window_text(step: int) -> str:
    return f"({max(0, step - LOSS_WINDOW)}, {step}]"


def loss_at(rows: list[dict], step: int, key: str = "loss_gen") -> tuple[float | None, int]:
    values = [r[key] for r in rows if step - LOSS_WINDOW < r["step"] <= step and finite(r.get(key)) is not None]
    return (float(np.mean(values)), len(values)) if values else (None, 0)


# ---------------------------------------------------------------------------------------- clips


def load_system(key: str, checkpoint: str | None, logs: Path | None, work: Path) -> System:
    from avgen.checkpoint import CheckpointError, file_hash, read_metadata

    system = System(key, LABELS[key], checkpoint)
    objective = LOG_OBJECTIVE[key]
    if checkpoint is None:
        system.available, system.reason = False, "no checkpoint given"
    elif not Path(checkpoint).is_file():
        system.available, system.reason = False, f"checkpoint {checkpoint} does not exist"
    else:
        copy = work / "checkpoints" / f"{key}.safetensors"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, copy)
        try:
            system.metadata = read_metadata(copy)
        except CheckpointError as e:
            system.available, system.reason = False, str(e)
        else:
            system.checkpoint_hash = file_hash(copy)
            system.steps = int(system.metadata["steps"]) if str(system.metadata.get("steps", "")).isdigit() else None
            system.objective = system.metadata.get("objective")
            objective = system.objective or objective
            system.checkpoint = str(checkpoint)
            system.metadata["_copy"] = str(copy)
    if logs is not None:
        log_path = logs / f"model-{objective}.log.jsonl"
        system.log_path = str(log_path)
        system.log_rows = read_training_log(log_path)
    if system.steps is not None and system.log_rows:
        system.train_seconds, system.train_seconds_note = wall_at(system.log_rows, system.steps)
    return system


def tiled(audio: np.ndarray, length: int) -> np.ndarray:
    audio = np.asarray(audio, np.float32)
    if audio.size == 0:
        return np.zeros(length, np.float32)
    return np.tile(audio, -(-length // audio.size))[:length]


def produce_clips(systems: dict[str, System], samples, args, work: Path) -> None:
    """Write every system's MP4s (and the mismatched-audio MP4s) under work/<system>/."""
    from avgen.data.corpus import reference_frame
    from avgen.media import write_mp4
    from avgen.pipeline import GenerationRequest, Generator, write_result
    from avgen.timeline import SAMPLES_PER_FRAME

    n = len(samples)
    for key, system in systems.items():
        if not system.available:
            say(f"{system.label}: not available ({system.reason})")
            continue
        folder = work / key
        folder.mkdir(parents=True, exist_ok=True)
        pairs = []
        if key == "gt":
            for i, sample in enumerate(samples):
                path = folder / f"clip{i:03d}.mp4"
                write_mp4(path, sample.frames, sample.audio, fps=FPS)
                system.clips.append(ClipScores(i, str(path)))
                pairs.append((sample.frames, sample.audio))
        else:
            generator = Generator.load(system.metadata["_copy"])
            cfg = generator.cfg
            system.sampler = {"steps": args.steps or cfg.steps, "cfg": cfg.cfg if args.cfg is None else args.cfg,
                              "sampler": cfg.sampler, "shift": cfg.shift if args.shift is None else args.shift}  # fmt: skip
            for i, sample in enumerate(samples):
                began = time.monotonic()
                request = GenerationRequest(text=sample.text, seconds=len(sample.frames) / FPS, seed=args.seed + i,
                                            reference_image=reference_frame(sample), steps=args.steps, cfg=args.cfg,
                                            shift=args.shift)  # fmt: skip
                result = generator.generate(request)
                path = folder / f"clip{i:03d}.mp4"
                write_result(result, path)
                clip = ClipScores(i, str(path), generation_seconds=time.monotonic() - began)
                system.clips.append(clip)
                pairs.append((result.frames, result.audio))
                say(f"{system.label}: generated clip {i + 1}/{n} ({len(result.frames)} frames, "
                    f"{clip.generation_seconds:.1f} s)")  # fmt: skip
            del generator
        for i, (frames, _) in enumerate(pairs):
            other = pairs[(i + 1) % n][1]
            path = folder / f"clip{i:03d}-audio-of-clip{(i + 1) % n:03d}.mp4"
            write_mp4(path, frames, tiled(other, len(frames) * SAMPLES_PER_FRAME), fps=FPS)
            system.clips[i].mismatch = {"path": str(path)}
        say(f"{system.label}: {n} clips and {n} mismatched-audio clips written")


def score_all(systems: dict[str, System], keep_frames: int) -> None:
    from avgen.media import MediaError, read_mp4
    from eval.landmarks import mouth_signal
    from eval.run import EvalSettings, SyncScorer, score_clip

    learned = SyncScorer(EvalSettings(backend="learned"))
    landmarks = SyncScorer(EvalSettings(backend="landmarks"))
    if learned.unavailable:
        say(f"learned scorer unavailable: {learned.unavailable}")
    for system in systems.values():
        for clip in system.clips:
            clip.learned = score_clip(clip.path, learned)
            clip.landmarks = score_clip(clip.path, landmarks)
            clip.mismatch = score_clip(clip.mismatch["path"], learned)
            try:
                frames = read_mp4(clip.path, fps=FPS, sample_rate=16_000).frames
                signal, _ = mouth_signal(frames)
                clip.mouth_signal = signal
                clip.mouth_motion = finite(np.mean(np.abs(np.diff(signal)))) if len(signal) > 1 else None
                if clip.index < keep_frames:
                    clip.frames = frames
            except (MediaError, ValueError) as e:
                say(f"{system.label} clip {clip.index}: no mouth motion ({e})")
            for name, row in (("learned", clip.learned), ("landmarks", clip.landmarks), ("mismatch", clip.mismatch)):
                if row.get("error"):
                    say(f"{system.label} clip {clip.index} {name}: {row['error']}")
            say(f"{system.label}: scored clip {clip.index + 1}/{len(system.clips)} "
                f"(learned offset {clip.learned.get('av_offset_frames')}, conf {fmt(clip.learned.get('sync_confidence'), 2)}; "
                f"mismatched conf {fmt(clip.mismatch.get('sync_confidence'), 2)})")  # fmt: skip


# -------------------------------------------------------------------------------------- metrics


def per_clip(system: System, metric: str) -> list[float | None]:
    """One value per clip (None where it could not be computed); [] for an unavailable system."""
    out = []
    for clip in system.clips:
        learned, landmarks, mismatch = clip.learned or {}, clip.landmarks or {}, clip.mismatch or {}
        flicker_row = learned if learned.get("temporal_flickering") is not None else landmarks
        if metric.startswith(("abs_offset_", "within1_")):
            row = learned if metric.endswith("learned") else landmarks
            offset = finite(row.get("av_offset_frames"))
            value = None if offset is None else (abs(offset) if metric.startswith("abs") else float(abs(offset) <= 1))
        elif metric == "conf_learned":
            value = learned.get("sync_confidence")
        elif metric == "conf_landmarks":
            value = landmarks.get("sync_confidence")
        elif metric == "conf_mismatch":
            value = mismatch.get("sync_confidence")
        elif metric == "conf_drop":
            a, b = finite(learned.get("sync_confidence")), finite(mismatch.get("sync_confidence"))
            value = None if a is None or b is None else a - b
        elif metric == "mouth_motion":
            value = clip.mouth_motion
        elif metric in ("temporal_flickering", "warping_error", "audio_flicker", "speech_fraction"):
            value = flicker_row.get(metric)
        elif metric == "generation_seconds":
            value = clip.generation_seconds
        else:
            raise KeyError(metric)
        out.append(finite(value))
    return out


# (metric, label, digits); ratios and training rows are added separately
TABLE_METRICS = (
    ("abs_offset_learned", "\\|AV offset\\| (frames), learned", 2),
    ("within1_learned", "fraction with \\|offset\\| ≤ 1, learned [95% Wilson CI]", 2),
    ("abs_offset_landmarks", "\\|AV offset\\| (frames), landmarks", 2),
    ("within1_landmarks", "fraction with \\|offset\\| ≤ 1, landmarks [95% Wilson CI]", 2),
    ("conf_learned", "sync confidence, learned", 3),
    ("ratio_learned", "confidence ratio vs ground truth, learned [bootstrap 95% CI]", 2),
    ("conf_landmarks", "sync confidence, landmarks", 3),
    ("ratio_landmarks", "confidence ratio vs ground truth, landmarks [bootstrap 95% CI]", 2),
    ("conf_mismatch", "mismatched-audio sync confidence, learned", 3),
    ("conf_drop", "matched − mismatched confidence (paired), learned", 3),
    ("mouth_motion", "mouth-region motion (mean \\|Δ mouth signal\\|)", 4),
    ("ratio_mouth", "mouth motion ratio vs ground truth [bootstrap 95% CI]", 2),
    ("temporal_flickering", "temporal flickering (1 = static)", 4),
    ("warping_error", "warping error", 5),
    ("audio_flicker", "audio flicker (dB)", 3),
    ("speech_fraction", "speech fraction", 3),
    ("generation_seconds", "generation time per clip (s)", 1),
)


DIGITS = {metric: digits for metric, _, digits in TABLE_METRICS}


def summarise(systems: dict[str, System]) -> dict[str, dict[str, tuple]]:
    """summary[metric][system] = (mean, half-width or None, n), or (value, lo, hi, n) for ratios
    (bootstrap interval) and fractions (Wilson interval)."""
    gt = systems["gt"]
    summary: dict[str, dict[str, tuple]] = {}
    for metric, _, _ in TABLE_METRICS:
        summary[metric] = {}
        for key, system in systems.items():
            if not system.available:
                continue
            if metric.startswith("ratio_"):
                base = {"ratio_learned": "conf_learned", "ratio_landmarks": "conf_landmarks", "ratio_mouth": "mouth_motion"}[metric]
                summary[metric][key] = ratio_of_means(per_clip(system, base), per_clip(gt, base)) if gt.available else (None, None, None, 0)
            elif metric.startswith("within1_"):
                summary[metric][key] = wilson(per_clip(system, metric))
            else:
                summary[metric][key] = mean_ci(per_clip(system, metric))
    return summary


def cell(summary, metric: str, key: str, system: System, digits: int, n_clips: int) -> str:
    if not system.available:
        return "not available"
    stat = summary[metric].get(key)
    if stat is None:
        return "n/a"
    if metric.startswith(("ratio_", "within1_")):
        ratio, lo, hi, n = stat
        text = fmt(ratio, digits)
        if finite(lo) is not None:
            text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    else:
        text, n = fmt_ci(stat, digits), stat[2]
    if text != "n/a" and n < n_clips:
        text += f" (n={n})"
    return text


# ----------------------------------------------------------------------------------- acceptance


def verdict(ok: bool | None) -> str:
    return "**PASS**" if ok else ("**FAIL**" if ok is False else "**n/a**")


def acceptance(systems: dict[str, System], summary) -> list[str]:
    lines = []
    generated = [k for k in ("baseline", "selfflow") if k in systems]
    # 1. offset and confidence
    lines.append("**1. Lip-sync of generated clips (learned scorer):** mean |AV offset| ≤ "
                 f"{MAX_MEAN_ABS_OFFSET:g} frame and sync confidence ≥ {MIN_CONFIDENCE_RATIO:.0%} of ground "
                 "truth's on the same transcripts (ratio of the means, paired bootstrap 95% CI).")  # fmt: skip
    for key in generated:
        system = systems[key]
        if not system.available:
            lines.append(f"- {system.label}: {verdict(None)}: not available ({system.reason})")
            continue
        offset = summary["abs_offset_learned"][key][0]
        ratio, lo, hi, _ = summary["ratio_learned"][key]
        ok_offset = None if finite(offset) is None else offset <= MAX_MEAN_ABS_OFFSET
        ok_ratio = None if finite(ratio) is None else ratio >= MIN_CONFIDENCE_RATIO
        ci = f" [95% CI {lo:.2f}, {hi:.2f}]" if finite(lo) is not None else ""
        lines.append(f"- {system.label}: mean |AV offset| = {fmt(offset, 2)} frames → {verdict(ok_offset)}; "
                     f"confidence {fmt(summary['conf_learned'][key][0])} vs ground truth "
                     f"{fmt(summary['conf_learned'].get('gt', (None,))[0])} = {fmt(ratio, 2)}×{ci} → {verdict(ok_ratio)}; "
                     f"both → {verdict(None if ok_offset is None or ok_ratio is None else ok_offset and ok_ratio)}")  # fmt: skip
    # 2. mismatched audio
    lines.append("")
    lines.append("**2. Another clip's audio scores clearly lower** (learned scorer; \"clearly\" = the 95% CI of "
                 "the paired per-clip difference, matched − mismatched confidence, lies above 0). Ground truth "
                 "is the check of the scorer itself.")  # fmt: skip
    for key in ["gt", *generated]:
        system = systems[key]
        if not system.available:
            lines.append(f"- {system.label}: {verdict(None)}: not available ({system.reason})")
            continue
        drop, half, n = summary["conf_drop"][key]
        ok = None if finite(drop) is None or finite(half) is None else drop - half > 0
        lines.append(f"- {system.label}: matched {fmt(summary['conf_learned'][key][0])}, mismatched "
                     f"{fmt(summary['conf_mismatch'][key][0])}, paired difference {fmt_ci((drop, half, n))} (n={n}) → {verdict(ok)}")  # fmt: skip
    # 3. flicker and mouth motion
    lo_m, hi_m = MOUTH_MOTION_RANGE
    lines.append("")
    lines.append(f"**3. Steadiness without a frozen face:** |temporal_flickering − ground truth's| ≤ {MAX_FLICKER_GAP:g}, "
                 f"and mouth-region motion comparable to ground truth's (\"comparable\" = mean between "
                 f"{lo_m:.0%} and {hi_m:.0%} of ground truth's mean; a frozen face has 0%).")  # fmt: skip
    for key in generated:
        system = systems[key]
        if not system.available:
            lines.append(f"- {system.label}: {verdict(None)}: not available ({system.reason})")
            continue
        tf, tf_gt = summary["temporal_flickering"][key][0], summary["temporal_flickering"].get("gt", (None,))[0]
        gap = None if finite(tf) is None or finite(tf_gt) is None else abs(tf - tf_gt)
        ratio = summary["ratio_mouth"][key][0]
        ok_gap = None if gap is None else gap <= MAX_FLICKER_GAP
        ok_mouth = None if finite(ratio) is None else lo_m <= ratio <= hi_m
        ok = None if ok_gap is None or ok_mouth is None else ok_gap and ok_mouth
        lines.append(f"- {system.label}: temporal flickering {fmt(tf, 4)} vs {fmt(tf_gt, 4)} (gap {fmt(gap, 4)}) → "
                     f"{verdict(ok_gap)}; mouth motion {fmt(summary['mouth_motion'][key][0], 4)} vs "
                     f"{fmt(summary['mouth_motion'].get('gt', (None,))[0], 4)} ({fmt(ratio, 2)}×) → {verdict(ok_mouth)}; "
                     f"both → {verdict(ok)}")  # fmt: skip
    # 4. Self-Flow vs baseline
    lines.append("")
    lines.append("**4. Self-Flow vs baseline at equal training steps**, whichever wins.")
    b, s = systems.get("baseline"), systems.get("selfflow")
    if not (b and s and b.available and s.available):
        missing = [x.label for x in (b, s) if x is not None and not x.available]
        lines.append(f"- {verdict(None)}: cannot compare: {', '.join(missing) or 'a system'} not available.")
    else:
        if b.steps == s.steps and b.steps is not None:
            lines.append(f"- Equal steps: both checkpoints are at step {b.steps}. → {verdict(True)} (reported)")
        else:
            lines.append(f"- **The checkpoints are NOT at equal steps**: baseline at {b.steps}, Self-Flow at {s.steps} "
                         "training steps. The clip metrics below compare what is there; the loss comparison is at "
                         f"the largest step both logs reach. → {verdict(False)} (not at equal steps; reported as is)")  # fmt: skip
        for metric, label, better in (("conf_learned", "sync confidence (learned)", "higher"),
                                      ("abs_offset_learned", "|AV offset| (learned)", "lower"),
                                      ("conf_landmarks", "sync confidence (landmarks)", "higher"),
                                      ("warping_error", "warping error", "lower"),
                                      ("audio_flicker", "audio flicker", "lower")):  # fmt: skip
            (mb, hb, _), (ms, hs, _) = summary[metric]["baseline"], summary[metric]["selfflow"]
            if finite(mb) is None or finite(ms) is None:
                lines.append(f"- {label}: n/a")
                continue
            winner = ("Self-Flow" if (ms > mb) == (better == "higher") else "baseline") if ms != mb else "tie"
            overlap = (finite(hb) is not None and finite(hs) is not None and abs(ms - mb) <= hb + hs)
            digits = DIGITS[metric]
            lines.append(f"- {label} ({better} is better): baseline {fmt_ci((mb, hb, 0), digits)}, "
                         f"Self-Flow {fmt_ci((ms, hs, 0), digits)} "
                         f"→ {winner}{' (95% CIs overlap: not a clear difference)' if overlap else ''}")  # fmt: skip
        common = common_step(b, s)
        if common is None:
            lines.append("- training loss: n/a (no training logs)")
        else:
            lb, _nb = loss_at(b.log_rows, common)
            ls, _ns = loss_at(s.log_rows, common)
            winner = "n/a" if lb is None or ls is None else ("Self-Flow" if ls < lb else "baseline" if lb < ls else "tie")
            lines.append(f"- generation loss (loss_gen, mean of the logged rows in steps {window_text(common)}, "
                         f"the largest step both logs reach): baseline {fmt(lb, 4)}, Self-Flow {fmt(ls, 4)} → lower: {winner} "
                         "(Self-Flow's is measured on dual-timestep inputs: indicative only)")  # fmt: skip
        lines.append(f"- wall-clock training time to the checkpoint: baseline {fmt_duration(b.train_seconds)} "
                     f"(step {b.steps}), Self-Flow {fmt_duration(s.train_seconds)} (step {s.steps})")  # fmt: skip
        if b.steps is not None and s.steps is not None:
            equal = min(b.steps, s.steps)
            (tb, nb), (ts, ns) = wall_at(b.log_rows, equal), wall_at(s.log_rows, equal)
            ratio = f" (Self-Flow/baseline = {ts / tb:.2f}×)" if finite(tb) and finite(ts) and tb > 0 else ""
            lines.append(f"- wall-clock to step {equal} (equal steps, from the logs): baseline {fmt_duration(tb)}{nb}, "
                         f"Self-Flow {fmt_duration(ts)}{ns}{ratio}")  # fmt: skip
    return lines


def common_step(b: System, s: System) -> int | None:
    if not b.log_rows or not s.log_rows:
        return None
    return int(min(b.log_rows[-1]["step"], s.log_rows[-1]["step"]))


def fmt_duration(seconds) -> str:
    seconds = finite(seconds)
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s ({seconds / 3600:.2f} h)"


# ---------------------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: list[float], window: int = 10) -> np.ndarray:
    """Centred running mean over up to `window` rows (fewer for short logs; shorter at the ends)."""
    values = np.asarray(values, np.float64)
    window = max(1, min(window, len(values) // 5))
    kernel = np.ones(window)
    return np.convolve(values, kernel, mode="same") / np.convolve(np.ones(len(values)), kernel, mode="same")


def plot_losses(systems: dict[str, System], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for key in ("baseline", "selfflow"):
        system = systems.get(key)
        rows = [r for r in (system.log_rows if system else []) if finite(r.get("loss_gen")) is not None]
        if not rows:
            continue
        drawn = True
        steps = [r["step"] for r in rows]
        walls = [r.get("wall") for r in rows]
        losses = [r["loss_gen"] for r in rows]
        for ax, xs in ((axes[0], steps), (axes[1], [np.nan if w is None else w / 3600 for w in walls])):
            ax.plot(xs, losses, color=COLORS[key], alpha=0.25, linewidth=0.8)
            ax.plot(xs, _smooth(losses), color=COLORS[key], linewidth=1.8,
                    label=f"{SHORT[key]} (loss_gen, running mean)")  # fmt: skip
        if system.steps is not None:
            axes[0].axvline(system.steps, color=COLORS[key], linestyle=":", linewidth=1,
                            label=f"{SHORT[key]} checkpoint, step {system.steps}")  # fmt: skip
            if finite(system.train_seconds) is not None:
                axes[1].axvline(system.train_seconds / 3600, color=COLORS[key], linestyle=":", linewidth=1)
    axes[0].set(xlabel="training step", ylabel="flow-matching loss (loss_gen)", title="loss vs step")
    axes[1].set(xlabel="wall-clock training time (h)", ylabel="flow-matching loss (loss_gen)", title="loss vs wall-clock")
    for ax in axes:
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no training log", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


BAR_METRICS = (
    ("abs_offset_learned", "|AV offset| (frames), learned"),
    ("conf_learned", "sync confidence, learned"),
    ("conf_mismatch", "mismatched-audio conf., learned"),
    ("conf_landmarks", "sync confidence, landmarks"),
    ("mouth_motion", "mouth-region motion"),
    ("temporal_flickering", "temporal flickering"),
    ("warping_error", "warping error"),
    ("audio_flicker", "audio flicker (dB)"),
)


def plot_bars(systems: dict[str, System], summary, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    keys = [k for k, _ in SYSTEMS]
    for ax, (metric, title) in zip(axes.ravel(), BAR_METRICS):
        for x, key in enumerate(keys):
            stat = summary[metric].get(key) if systems[key].available else None
            mean, half = (finite(stat[0]), finite(stat[1])) if stat else (None, None)
            if mean is None:
                ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=8, transform=ax.get_xaxis_transform())
                continue
            ax.bar(x, mean, color=COLORS[key], yerr=half if half is not None else None, capsize=4)
        ax.set_xticks(range(len(keys)), [SHORT[k] for k in keys], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if metric == "temporal_flickering":
            values = [finite(summary[metric][k][0]) for k in keys if systems[k].available and k in summary[metric]]
            values = [v for v in values if v is not None]
            if values:
                ax.set_ylim(min(values) - 0.02, 1.0)
    fig.suptitle("means with 95% confidence intervals over the held-out clips", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_contact_sheet(systems: dict[str, System], samples, count: int, path: Path, per_row: int = 8) -> None:
    plt = _plt()
    count = min(count, len(samples))
    keys = [k for k, _ in SYSTEMS]
    fig, axes = plt.subplots(count * len(keys), 1, figsize=(per_row * 1.15, count * len(keys) * 1.3 + 0.3 * count),
                             squeeze=False)  # fmt: skip
    for c in range(count):
        n_frames = len(samples[c].frames)
        picks = np.linspace(0, n_frames - 1, per_row).round().astype(int)
        for r, key in enumerate(keys):
            ax = axes[c * len(keys) + r, 0]
            ax.set_xticks([]), ax.set_yticks([])
            system = systems[key]
            clip = system.clips[c] if system.available and c < len(system.clips) else None
            if clip is None or clip.frames is None:
                ax.set_facecolor("#dddddd")
                ax.text(0.5, 0.5, "not available" if not system.available else "no frames", ha="center", va="center",
                        transform=ax.transAxes)  # fmt: skip
            else:
                frames = clip.frames
                size = frames.shape[1]
                gap = np.full((size, 2, 3), 255, np.uint8)
                strip = np.concatenate([x for i in picks for x in (frames[min(i, len(frames) - 1)], gap)][:-1], axis=1)
                ax.imshow(strip, interpolation="nearest")
            ax.set_ylabel(SHORT[key], fontsize=9, rotation=0, ha="right", va="center")
            if r == 0:
                text = samples[c].text if len(samples[c].text) < 90 else samples[c].text[:87] + "..."
                ax.set_title(f"held-out clip {c}: \"{text}\"  (frames {', '.join(map(str, picks))})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_mouth_signals(systems: dict[str, System], samples, count: int, path: Path) -> None:
    from eval.landmarks import audio_signal

    plt = _plt()
    count = min(count, len(samples))
    fig, axes = plt.subplots(count, 1, figsize=(10, 2.6 * count), squeeze=False)
    for c in range(count):
        ax = axes[c, 0]
        sample = samples[c]
        t = np.arange(len(sample.frames)) / FPS
        loud_ax = ax.twinx()
        loud_ax.fill_between(t, audio_signal(sample.audio, len(sample.frames)), color="#bbbbbb", alpha=0.45)
        loud_ax.set_ylabel("GT speech loudness (1-3 kHz dB, high-passed; grey)", fontsize=7)
        ax.set_zorder(loud_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        for key, _ in SYSTEMS:
            system = systems[key]
            if system.available and c < len(system.clips) and system.clips[c].mouth_signal is not None:
                signal = system.clips[c].mouth_signal
                ax.plot(np.arange(len(signal)) / FPS, signal, color=COLORS[key], linewidth=1.2, label=SHORT[key])
        ax.set(xlabel="time (s)", ylabel="mouth signal", title=f"held-out clip {c}: mouth opening (eval.landmarks.mouth_signal)")
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------- report


def machine() -> str:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu or 'unknown CPU'}), "
            f"{device}; Python {platform.python_version()}, torch {torch.__version__} "
            f"(torch threads: {torch.get_num_threads()})")  # fmt: skip


def training_lines(systems: dict[str, System]) -> list[str]:
    lines = ["| | baseline (flow matching) | Self-Flow |", "|---|---|---|"]

    def value(key, what):
        system = systems.get(key)
        if system is None or not system.available:
            return "not available"
        if what == "checkpoint":
            return f"`{system.checkpoint}` (sha256 {system.checkpoint_hash})"
        if what == "objective":
            return system.objective or "n/a"
        if what == "steps":
            return "n/a" if system.steps is None else str(system.steps)
        if what == "wall":
            return fmt_duration(system.train_seconds) + system.train_seconds_note
        if what == "loss":
            if system.steps is None:
                return "n/a"
            loss, n = loss_at(system.log_rows, system.steps)
            return f"{fmt(loss, 4)} (mean of the {n} logged rows in steps {window_text(system.steps)})" if n else "n/a"
        if what == "log":
            last = system.log_rows[-1]["step"] if system.log_rows else None
            return f"`{system.log_path}` ({len(system.log_rows)} rows, last step {last})" if system.log_rows else "n/a"
        if what == "sampler":
            s = system.sampler
            return f"{s.get('sampler')}, steps={s.get('steps')}, cfg={s.get('cfg'):g}, shift={s.get('shift'):g}" if s else "n/a"
        if what == "config":
            try:
                tc = json.loads(system.metadata.get("train_config", "{}"))
            except ValueError:
                return "n/a"
            keys = ("batch_size", "lr", "ema_decay", "gamma", "mask_ratio_video", "mask_ratio_audio", "corpus_clips",
                    "clip_seconds", "threads", "bf16", "steps")  # fmt: skip
            return ", ".join(f"{k}={tc[k]}" for k in keys if k in tc) or "n/a"
        raise KeyError(what)

    for what, label in (("checkpoint", "checkpoint"), ("objective", "objective (metadata)"),
                        ("steps", "training steps (metadata)"), ("wall", "wall-clock training time to that step"),
                        ("loss", "loss_gen at that step"), ("log", "training log"),
                        ("config", "training config (metadata; `steps` = the run's target)"),
                        ("sampler", "sampling for these results")):  # fmt: skip
        lines.append(f"| {label} | {value('baseline', what)} | {value('selfflow', what)} |")
    return lines


def write_report(path: Path, systems, samples, summary, args, argv: list[str], timings: dict) -> None:
    n = len(samples)
    keys = [k for k, _ in SYSTEMS]
    command = "python scripts/make_results.py " + " ".join(shlex.quote(a) for a in argv)
    out = [
        "# Results: ground truth vs baseline flow matching vs Self-Flow",
        "",
        ("Generated by `scripts/make_results.py`; do not edit by hand: every number below comes from the run "
        "that wrote this file."),
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Command: `{command}`",
        f"- Run time: {timings['total']:.0f} s (generation {timings['generate']:.0f} s, scoring {timings['score']:.0f} s)",
        (f"- Held-out set: {n} clips, `make_sample(i, split=\"heldout\", seed={args.corpus_seed})` for i = 0..{n - 1} "
        f"(identities and sentences that no training clip has), natural length "
        f"({min(len(s.frames) for s in samples) / FPS:.2f}–{max(len(s.frames) for s in samples) / FPS:.2f} s, "
        f"{len({s.identity for s in samples})} identities)."),
        (f"- Generation: same transcript and number of frames as the ground truth, the identity's reference frame "
        f"as `reference_image`, seed {args.seed} + i for clip i (the same for both models)."),
        "",
        "## Training",
        "",
        *training_lines(systems),
        "",
        ("Wall-clock is the training log's `seconds` at the checkpoint's step (time since the training session "
        "began, summed over resumed sessions; it excludes building the latent cache). Runs that share the machine "
        "slow each other down."),
        "",
        "![loss curves](results/loss_curves.png)",
        "",
        (
            "Both curves are `loss_gen`, the flow-matching (velocity) loss. Self-Flow's is measured on its "
            "dual-timestep inputs (a masked share of tokens at a second noise level), so the two curves are close "
            "but not identical measures; the clip metrics below are the like-for-like comparison. Thin lines: "
            "logged rows; thick: centred running mean over up to 10 rows; dotted: the checkpoints evaluated here."
        ),
        "",
        f"## Metrics ({n} held-out clips; mean ± 95% CI half-width, Student t)",
        "",
        "| metric | " + " | ".join(LABELS[k] for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for metric, label, digits in TABLE_METRICS:
        out.append(f"| {label} | " + " | ".join(cell(summary, metric, k, systems[k], digits, n) for k in keys) + " |")
    out.append("| training steps | – | " + " | ".join(
        "not available" if not systems[k].available else ("n/a" if systems[k].steps is None else str(systems[k].steps))
        for k in ("baseline", "selfflow")) + " |")  # fmt: skip
    out.append("| wall-clock training time | – | " + " | ".join(
        "not available" if not systems[k].available else fmt_duration(systems[k].train_seconds)
        for k in ("baseline", "selfflow")) + " |")  # fmt: skip
    out += [
        "",
        "How to read it:",
        ("- AV offset and sync confidence: `eval.run.score_clip` with the `learned` backend (an embedding trained on "
        "the drawn 64×64 faces, shipped in eval/weights) and the `landmarks` backend (face-mesh lip opening vs "
        "1-3 kHz speech loudness); each on its own scale. Offsets are in 40 ms frames."),
        ("- Confidence ratio vs ground truth: mean confidence of the system / mean confidence of ground truth over "
        "the same transcripts, with a paired percentile-bootstrap 95% CI (clips resampled)."),
        ("- Mismatched audio: each clip's video muxed with the audio of clip (i + 1) mod N of the same system "
        "(repeated if shorter, cut if longer), learned backend."),
        ("- Mouth motion: mean |m[t+1] − m[t]| of `eval.landmarks.mouth_signal` (face-mesh lip opening over "
        "the eye-corner distance, high-passed) of the decoded MP4; 0 for a frozen face. Its ratio vs ground truth "
        "is a ratio of means with a bootstrap CI."),
        ("- Temporal flickering (VBench; 1 = no change between frames), warping error (Farneback flow, lower is "
        "steadier) and audio flicker (dB of unusual spectral jumps per 40 ms) as defined in `eval/flicker.py`."),
        ("- Ground truth is written to MP4 and decoded like the generated clips, so all pass the same H.264/AAC "
        "round trip."),
        "",
        "![metrics](results/metrics.png)",
        "",
        "## Acceptance checks (issue 4)",
        "",
        *acceptance(systems, summary),
        "",
        ("The fourth acceptance item (`avgen generate --text ...` on a fresh install) is not evaluated by this "
        "script; the frames below show what the checkpoints produce."),
        "",
        "## Frames",
        "",
        (f"Ground truth, baseline and Self-Flow for the first {min(args.contact_clips, n)} held-out clips "
        "(frames evenly spaced over each clip), and their mouth signals against the ground-truth speech loudness:"),
        "",
        "![contact sheet](results/contact_sheet.png)",
        "",
        "![mouth signals](results/mouth_signals.png)",
        "",
        "<details><summary>Per-clip numbers (learned backend)</summary>",
        "",
        "| clip | identity | s | transcript | " + " | ".join(
            f"{SHORT[k]} offset / conf / mismatched / mouth" for k in keys) + " |",
        "|---|---|---|---|" + "---|" * len(keys),
    ]
    for i, sample in enumerate(samples):
        cells = []
        for k in keys:
            system = systems[k]
            if not system.available:
                cells.append("not available")
                continue
            clip = system.clips[i]
            offset = finite((clip.learned or {}).get("av_offset_frames"))
            cells.append(" / ".join([
                "n/a" if offset is None else f"{offset:+.0f}", fmt((clip.learned or {}).get("sync_confidence"), 2),
                fmt((clip.mismatch or {}).get("sync_confidence"), 2), fmt(clip.mouth_motion, 4)]))  # fmt: skip
        text = sample.text.replace("|", "/")
        out.append(f"| {i} | {sample.identity} | {len(sample.frames) / FPS:.2f} | {text} | " + " | ".join(cells) + " |")
    out += [
        "",
        "</details>",
        "",
        "## How to regenerate",
        "",
        f"`{command}`." + ("" if args.work else " Add `--work DIR` to keep the MP4s it scores.") + " "
        "It takes the checkpoints as they are when it starts; generation is the slow part (see the run time above).",
        "",
    ]
    path.write_text("\n".join(out))


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="checkpoint of the flow-matching baseline (safetensors)")
    p.add_argument("--selfflow", help="checkpoint of the Self-Flow model (safetensors)")
    p.add_argument("--logs", help="folder with the training logs model-<objective>.log.jsonl")
    p.add_argument("--clips", type=int, default=32, help="number of held-out clips (at least 2)")
    p.add_argument("--out", default="docs", help="writes OUT/results.md and OUT/results/*.png")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance (default: the checkpoint's)")
    p.add_argument("--shift", type=float, default=None, help="timestep shift (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="generation seed of clip i is SEED + i")
    p.add_argument("--corpus-seed", type=int, default=0, help="seed of the held-out corpus")
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
        say(f"held-out set: {args.clips} clips")
        samples = [make_sample(i, split="heldout", seed=args.corpus_seed) for i in range(args.clips)]
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
        plot_bars(systems, summary, figures / "metrics.png")
        plot_contact_sheet(systems, samples, args.contact_clips, figures / "contact_sheet.png")
        plot_mouth_signals(systems, samples, args.contact_clips, figures / "mouth_signals.png")
        timings = {"generate": t1 - t0, "score": t2 - t1, "total": time.monotonic() - began}
        write_report(out / "results.md", systems, samples, summary, args, argv, timings)
        if args.work:
            rows = {key: [{"index": c.index, "learned": c.learned, "landmarks": c.landmarks, "mismatch": c.mismatch,
                           "mouth_motion": c.mouth_motion, "generation_seconds": c.generation_seconds}
                          for c in system.clips] for key, system in systems.items()}  # fmt: skip
            (work / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
        say(f"wrote {out / 'results.md'} and {len(list(figures.glob('*.png')))} PNGs in {figures}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
