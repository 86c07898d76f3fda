"""scripts/compare_results.py: a variant holds a metric when it is inside the reference's 95%
interval or better; worse is flagged, per metric, from make_results' per-clip rows."""

import json
from pathlib import Path

import numpy as np
from conftest import load_script

compare_results = load_script(Path(__file__).resolve().parents[1] / "scripts" / "compare_results.py")


def write_run(folder: Path, confidence: float, warping: float, mouth: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)

    def row(i, conf, warp, motion):
        scores = {"av_offset_frames": 0, "sync_confidence": conf + rng.normal(0, 0.01), "temporal_flickering": 0.99,
                  "warping_error": warp + rng.normal(0, 1e-5), "audio_flicker": 0.8, "speech_fraction": 0.8}  # fmt: skip
        return {"index": i, "learned": scores, "landmarks": dict(scores, sync_confidence=1.0),
                "mismatch": {"sync_confidence": 0.1}, "mouth_motion": motion + rng.normal(0, 1e-4),
                "generation_seconds": 1.0}  # fmt: skip

    rows = {"gt": [row(i, 0.85, 0.0002, 0.024) for i in range(12)],
            "selfflow": [row(i, confidence, warping, mouth) for i in range(12)]}  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "rows.json").write_text(json.dumps(rows))
    return folder


def test_within_the_interval_or_better_holds_and_worse_is_flagged(tmp_path):
    reference = compare_results.read_run(write_run(tmp_path / "ref", 0.53, 0.0005, 0.026, 0))
    same = compare_results.read_run(write_run(tmp_path / "same", 0.53, 0.0005, 0.026, 1))
    better = compare_results.read_run(write_run(tmp_path / "better", 0.60, 0.0003, 0.024, 2))
    worse = compare_results.read_run(write_run(tmp_path / "worse", 0.40, 0.0009, 0.040, 3))
    lines, verdicts = compare_results.compare(
        [("ref", reference), ("same", same), ("better", better), ("worse", worse)]
    )
    for metric in ("conf_learned", "warping_error", "mouth_motion"):
        assert verdicts["same"][metric] and verdicts["better"][metric], metric
        assert verdicts["worse"][metric] is False, metric
    assert verdicts["worse"]["temporal_flickering"]  # equal everywhere: inside the interval
    assert any("sync confidence, learned" in line and "✗" in line for line in lines)
    assert lines[0].startswith("| metric | ground truth | ref | same | better | worse |")
