"""Training logs: wall-clock summed over resumed sessions, and the loss around a step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from results.common import System, finite

LOSS_WINDOW = 100  # steps: the loss at a step is the mean loss_gen over the logged rows in (step - 100, step]


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


def common_step(b: System, s: System) -> int | None:
    if not b.log_rows or not s.log_rows:
        return None
    return int(min(b.log_rows[-1]["step"], s.log_rows[-1]["step"]))
