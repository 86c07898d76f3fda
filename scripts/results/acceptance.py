"""The acceptance checks of issue 4, each a verdict from this run's numbers."""

from __future__ import annotations

from results.common import System, finite, fmt, fmt_ci, fmt_duration
from results.metrics import DIGITS
from results.training_log import common_step, loss_at, wall_at, window_text

MAX_MEAN_ABS_OFFSET = 1.0  # frames
MIN_CONFIDENCE_RATIO = 0.60
MAX_FLICKER_GAP = 0.01
MOUTH_MOTION_RANGE = (0.5, 2.0)  # "comparable": this fraction of ground truth's mean mouth motion


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
            overlap = finite(hb) is not None and finite(hs) is not None and abs(ms - mb) <= hb + hs
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
            winner = (
                "n/a" if lb is None or ls is None else ("Self-Flow" if ls < lb else "baseline" if lb < ls else "tie")
            )
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
