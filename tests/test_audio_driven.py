"""scripts/audio_driven.py on tiny cases: the mismatched-audio control really carries the other clip's
audio, audio-driven generation keeps the given speech, and the checks read the right numbers (the
whole command runs for minutes: docs/results/audio_driven_shipped.json is its output)."""

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from avgen.data import make_sample
from avgen.media import read_mp4
from avgen.pipeline import Generator
from avgen.timeline import SAMPLES_PER_FRAME

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "audio_driven.py"


@pytest.fixture(scope="module")
def audio_driven():
    return load_script(SCRIPT)


def test_other_audio_control_carries_the_next_clips_audio(audio_driven, tmp_path):
    """Two drawn ground-truth clips: their own audio scores far above the other's with the learned
    scorer, and the control MP4 holds the other clip's speech, not its own."""
    samples = [make_sample(i, split="heldout", seed=1, seconds=2.0) for i in range(2)]
    clips = [audio_driven.Clip("ground_truth", f"gt{i}", s.frames, s.audio, s.text) for i, s in enumerate(samples)]
    rows = audio_driven.score_group(clips, tmp_path, audio_driven.Scorers.load())

    assert [r["other_audio_of"] for r in rows] == ["gt1", "gt0"]
    for row, own, other in zip(rows, samples, samples[::-1]):
        assert row["error"] is None
        heard = read_mp4(tmp_path / f"{row['name']}-audio-of-{row['other_audio_of']}.mp4").audio[: len(own.audio)]
        assert np.corrcoef(heard, other.audio[: len(heard)])[0, 1] > 0.9
        assert abs(np.corrcoef(heard, own.audio[: len(heard)])[0, 1]) < 0.3
        assert row["own_other_learned"] == pytest.approx(row["learned_confidence"] / row["other_learned_confidence"])
        assert row["own_other_learned"] > 2.0  # the ground truth's own speech fits its mouth, another's does not
        assert row["mouth_envelope_r"] > 0.2  # the drawn mouth opens with its speech's loudness


def test_audio_driven_generation_keeps_the_given_speech(audio_driven, small_checkpoint):
    generator = Generator.load(small_checkpoint)
    speech = make_sample(0, split="heldout", seed=1, seconds=0.6).audio[: 14 * SAMPLES_PER_FRAME + 100]
    clip = audio_driven.generate(generator, "real", "speech", seed=0, audio=speech)
    assert len(clip.frames) == 14  # the pipeline rounds the speech to whole frames
    assert np.array_equal(clip.audio, speech[: 14 * SAMPLES_PER_FRAME])
    assert clip.metadata["avgen_audio"] == "given"
    short = speech[: 14 * SAMPLES_PER_FRAME - 200]  # rounds up to 14 frames: padded with silence
    padded = audio_driven.generate(generator, "real", "short", seed=0, audio=short)
    for given, made in ((speech, clip), (short, padded)):  # the script's reading of speech is the pipeline's
        assert np.array_equal(audio_driven.as_generated(given), made.audio)
    assert len(padded.frames) == 14 and not padded.audio[len(short) :].any()
    text = audio_driven.generate(generator, "text_driven", "text", seed=0, text="hello there", seconds=0.4)
    assert len(text.frames) == 10 and text.metadata["avgen_audio"] == "generated"


def row(group, learned, other_learned, landmarks=1.0, other_landmarks=0.2, offset=0, r=0.4):
    return {"group": group, "learned_offset": offset, "learned_confidence": learned,
            "other_learned_confidence": other_learned, "own_other_learned": learned / other_learned,
            "landmarks_offset": offset, "landmarks_confidence": landmarks, "other_landmarks_confidence": other_landmarks,
            "own_other_landmarks": landmarks / other_landmarks, "mouth_envelope_r": r}  # fmt: skip


def test_checks_compare_group_means_with_the_targets(audio_driven):
    rows = [row("real", 0.3, 0.05, offset=-2), row("real", 0.5, 0.25, offset=0, r=0.1),
            row("text_driven", 0.32, 0.1), row("text_driven", 0.32, 0.1), row("ground_truth", 0.9, 0.1, r=0.4)]  # fmt: skip
    summary = audio_driven.summarise(rows)
    assert summary["real"]["own_other_learned_of_means"] == pytest.approx(0.4 / 0.15)  # not the mean of 6 and 2
    assert summary["real"]["abs_learned_offset"]["mean"] == 1.0
    verdicts = [(c["group"], c["value"], c["pass"]) for c in audio_driven.checks(summary)]
    # |offset| learned, landmarks; own/other learned, landmarks; confidence / text-driven's; r / ground truth's
    expected = [(1.0, True), (1.0, True), (0.4 / 0.15, False), (5.0, True), (0.4 / 0.32, True), (0.25 / 0.4, True)]
    assert [(g, pytest.approx(v), p) for (g, v, p) in verdicts] == [("real", v, p) for v, p in expected]
    text = audio_driven.markdown({"checkpoint": "x.safetensors", "checkpoint_hash": "0" * 64, "sampler": {},
                                  "seed": 0, "max_seconds": 6.0, "summary": summary,
                                  "checks": audio_driven.checks(summary), "rows": [], "notes": []})  # fmt: skip
    assert "- FAIL: real speech, no text: own / other-audio confidence (learned) >= 3x (measured 2.67)" in text
