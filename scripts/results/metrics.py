"""The metrics table: one value per clip and metric, summarised per system with its interval."""

from __future__ import annotations

from results.common import System, finite, fmt, fmt_ci
from results.stats import mean_ci, ratio_of_means, wilson


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
                base = {
                    "ratio_learned": "conf_learned",
                    "ratio_landmarks": "conf_landmarks",
                    "ratio_mouth": "mouth_motion",
                }[metric]
                summary[metric][key] = (
                    ratio_of_means(per_clip(system, base), per_clip(gt, base))
                    if gt.available
                    else (None, None, None, 0)
                )
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
