"""What every part of the results script shares: the systems, the per-clip record, number formatting."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

SYSTEMS = (("gt", "ground truth"), ("baseline", "baseline (flow matching)"), ("selfflow", "Self-Flow"))
LABELS = dict(SYSTEMS)
SHORT = {"gt": "GT", "baseline": "baseline", "selfflow": "Self-Flow"}
LOG_OBJECTIVE = {"baseline": "flow", "selfflow": "selfflow"}
COLORS = {"gt": "#4d4d4d", "baseline": "#1f77b4", "selfflow": "#d62728"}
# What the clips of each corpus split are called in the report and the figures.
SPLIT_NAMES = {"heldout": "held-out", "train": "training-split"}

_START = time.monotonic()


def say(message: str) -> None:
    print(f"[make_results {time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


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


def fmt_duration(seconds) -> str:
    seconds = finite(seconds)
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s ({seconds / 3600:.2f} h)"
