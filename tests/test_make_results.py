"""scripts/make_results.py end to end on 2 held-out clips with a tiny untrained checkpoint (real
corpus, generator, scorers and plots), plus its training-log and statistics helpers."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script

from avgen.checkpoint import AVGenModel, save_checkpoint
from avgen.config import Config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_results.py"
# The tiny preset's layout, made smaller and with a 2-iteration Griffin-Lim so generation takes ~1 s a clip.
SMALL = Config(hidden=64, depth=2, heads=2, griffin_lim_iters=2)
PNGS = ("loss_curves.png", "metrics.png", "contact_sheet.png", "mouth_signals.png")


@pytest.fixture(scope="module")
def make_results():
    return load_script(SCRIPT)


def write_log(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def table_rows(text):
    section = text.split("## Metrics", 1)[1].split("\n\n", 2)[1]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| metric")]


def cell_values(row):
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))][1:]


NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?( ± \d+(\.\d+)?)?( \[-?\d+(\.\d+)?, -?\d+(\.\d+)?\])?( \(n=\d+\))?$")


def test_results_on_two_clips_with_an_untrained_checkpoint(make_results, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "model-flow.safetensors"
    save_checkpoint(AVGenModel(SMALL), checkpoint, metadata={"steps": "20", "objective": "flow"})
    torch.manual_seed(1)
    selfflow = tmp_path / "model-selfflow.safetensors"
    save_checkpoint(AVGenModel(SMALL), selfflow, metadata={"steps": "20", "objective": "selfflow"})
    logs = tmp_path / "logs"
    logs.mkdir()
    # the baseline's run was resumed at step 10: its second session logs seconds from 0 again
    write_log(logs / "model-flow.log.jsonl", [
        {"step": 5, "loss": 4.0, "loss_gen": 4.0, "seconds": 5.0},
        {"step": 10, "loss": 3.9, "loss_gen": 3.9, "seconds": 10.0},
        {"step": 15, "loss": 3.8, "loss_gen": 3.8, "seconds": 6.0},
        {"step": 20, "loss": 3.7, "loss_gen": 3.7, "seconds": 12.0},
    ])  # fmt: skip
    write_log(logs / "model-selfflow.log.jsonl", [
        {"step": s, "loss": 4 - s / 100, "loss_gen": 4 - s / 90, "loss_rep": -0.1, "seconds": 1.5 * s} for s in (5, 10, 15, 20)
    ])  # fmt: skip
    out = tmp_path / "docs"
    assert make_results.main([
        "--baseline", str(checkpoint), "--selfflow", str(selfflow), "--logs", str(logs),
        "--clips", "2", "--steps", "1", "--out", str(out), "--work", str(tmp_path / "work"),
    ]) == 0  # fmt: skip

    text = (out / "results.md").read_text()
    for png in PNGS:
        data = (out / "results" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, png
        assert f"results/{png}" in text
    assert "| metric | ground truth | baseline (flow matching) | Self-Flow |" in text
    rows = table_rows(text)
    assert len(rows) >= 15
    for row in rows:
        values = cell_values(row)
        assert len(values) == 3, row
        for value in values:
            assert value in ("n/a", "–") or NUMBER.match(value) or re.match(r"^\d+ s \(\d+\.\d+ h\)$", value), (
                row,
                value,
            )
            assert "nan" not in value.lower() and "inf" not in value.lower()
    # wall-clock sums the two sessions: 10 s + 12 s at step 20
    assert "22 s (0.01 h)" in text and "| training steps | – | 20 | 20 |" in text
    assert "Equal steps: both checkpoints are at step 20" in text
    for heading in ("**1. Lip-sync", "**2. Another clip's audio", "**3. Steadiness", "**4. Self-Flow vs baseline"):
        assert heading in text
    verdicts = re.findall(r"\*\*(PASS|FAIL|n/a)\*\*", text)
    assert len(verdicts) >= 2 + 3 + 2 + 1
    assert "python scripts/make_results.py --baseline" in text and "Machine:" in text
    # ground truth's confidence ratio against itself is exactly 1, and its clips are in sync
    gt_ratio = cell_values(next(r for r in rows if r.startswith("| confidence ratio vs ground truth, learned")))[0]
    assert gt_ratio.startswith("1.00")
    for metric in ("| sync confidence, learned", "| temporal flickering", "| mouth-region motion"):
        assert all(NUMBER.match(v) for v in cell_values(next(r for r in rows if r.startswith(metric)))), metric
    saved = json.loads((tmp_path / "work" / "rows.json").read_text())
    assert [len(saved[k]) for k in ("gt", "baseline", "selfflow")] == [2, 2, 2]
    for clip in saved["gt"]:
        assert clip["learned"]["error"] is None and abs(clip["learned"]["av_offset_frames"]) <= 1
        assert clip["mouth_motion"] > 0
    assert (tmp_path / "work" / "baseline" / "clip001-audio-of-clip000.mp4").is_file()


def test_a_missing_checkpoint_is_reported_not_fatal(make_results, tmp_path):
    out = tmp_path / "docs"
    assert make_results.main(["--baseline", str(tmp_path / "missing.safetensors"), "--logs", str(tmp_path),
                              "--clips", "2", "--out", str(out)]) == 0  # fmt: skip
    text = (out / "results.md").read_text()
    assert "not available" in text and "does not exist" in text
    for row in table_rows(text):
        values = cell_values(row)
        assert values[1:] == ["not available", "not available"] or values[0] == "–", row
    assert all((out / "results" / png).is_file() for png in PNGS)
    assert 'Held-out set: 2 clips, `make_sample(i, split="heldout", seed=0)`' in text
    assert "## Metrics (2 held-out clips;" in text


def test_training_split_clips_are_named_as_such(make_results, tmp_path):
    from avgen.data.corpus import identity_split, make_sample
    from avgen.media import read_mp4

    out = tmp_path / "docs"
    work = tmp_path / "work"
    assert make_results.main(["--split", "train", "--clips", "2", "--out", str(out), "--work", str(work)]) == 0
    text = (out / "results.md").read_text()
    for i in range(2):  # the ground truth written is the training clip, not the held-out one
        first = read_mp4(work / "gt" / f"clip{i:03d}.mp4").frames[0].astype(float)
        train, heldout = (make_sample(i, split=s).frames[0].astype(float) for s in ("train", "heldout"))
        assert abs(first - train).mean() < abs(first - heldout).mean()
    assert 'Training-split set: 2 clips, `make_sample(i, split="train", seed=0)`' in text
    assert "a check of fit, not of generalisation" in text and "## Metrics (2 training-split clips;" in text
    assert "held-out" not in text.split("## Training", 1)[0]
    assert all(identity_split(make_sample(i, split="train").identity) == "train" for i in range(2))


def test_training_log_wall_clock_and_ratio_statistics(make_results, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(
        '{"step": 10, "loss_gen": 1, "seconds": 50}\n{"step": 20, "loss_gen": 1, "seconds": 90}\n'
        '{"step": 30, "loss_gen": 1, "seconds": 30}\n{"step": 40, "loss_gen": 1, "seconds": 70}\n{"step": 5'
    )
    rows = make_results.read_training_log(log)
    assert [r["wall"] for r in rows] == [50, 90, 120, 160]
    assert make_results.wall_at(rows, 40) == (160, "")
    assert make_results.wall_at(rows, 35)[0] == 120
    ratio, lo, hi, n = make_results.ratio_of_means([2.0, 4.0, 3.0], [4.0, 8.0, 6.0])
    assert ratio == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5) and n == 3
    assert make_results.ratio_of_means([1.0, None], [None, 2.0])[0] is None
    spread = make_results.ratio_of_means([1.0, 2.0, 3.0, 5.0], [2.0, 2.0, 2.0, 2.0])
    assert spread[0] == pytest.approx(1.375) and spread[1] < 1.375 < spread[2]
    assert spread == make_results.ratio_of_means([1.0, 2.0, 3.0, 5.0], [2.0] * 4)  # seeded: the same interval each run
    p, lo, hi, n = make_results.wilson([1.0] * 3 + [0.0] * 7 + [None])
    assert (p, n) == (0.3, 10) and lo == pytest.approx(0.1078, abs=1e-4) and hi == pytest.approx(0.6032, abs=1e-4)
    assert make_results.fmt(float("nan")) == "n/a" and make_results.fmt(None) == "n/a"
    assert make_results.tiled(np.arange(3, dtype=np.float32), 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert math.isfinite(make_results.mean_ci([1.0, 2.0, None])[1])


def test_unequal_checkpoint_steps_are_said_plainly(make_results):
    rows = [{"step": s, "loss_gen": 3.0, "seconds": 2.0 * s} for s in range(10, 210, 10)]
    systems = {"gt": make_results.System("gt", "ground truth")}
    for key, steps in (("baseline", 200), ("selfflow", 100)):
        system = make_results.System(key, make_results.LABELS[key], checkpoint=f"{key}.safetensors", steps=steps)
        system.log_rows = [dict(r, wall=r["seconds"]) for r in rows]
        system.train_seconds = make_results.wall_at(system.log_rows, steps)[0]
        systems[key] = system
    text = "\n".join(make_results.acceptance(systems, make_results.summarise(systems)))
    assert "NOT at equal steps" in text and "baseline at 200, Self-Flow at 100" in text
    assert "wall-clock to step 100 (equal steps, from the logs): baseline 200 s" in text
    assert "Self-Flow/baseline = 1.00×" in text
