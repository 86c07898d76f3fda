"""scripts/sync_ceiling.py's drawing: the corpus renderer speaking the timeline taken from the speech
(the whole command runs for minutes: docs/results/sync_ceiling.json is its output)."""

from pathlib import Path

import numpy as np
from conftest import load_script

from avgen.data import make_sample
from eval.landmarks import mouth_signal

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sync_ceiling.py"


def test_the_drawing_of_a_samples_own_speech_moves_its_mouth_like_the_ground_truth():
    sync_ceiling = load_script(SCRIPT)
    sample, other = make_sample(0, split="heldout", seed=1), make_sample(1, split="heldout", seed=1)
    own = sync_ceiling.drawn("espeak_text", "own", sample.audio, sample.text, sample.identity)
    assert own.frames.shape == sample.frames.shape and np.array_equal(own.audio[: len(sample.audio)], sample.audio)
    truth, _ = mouth_signal(sample.frames)
    drawn, _ = mouth_signal(own.frames)
    length = min(len(sample.audio), len(other.audio))
    misplaced = sync_ceiling.drawn("espeak_text", "other", other.audio[:length], other.text, sample.identity)
    n = min(len(truth), len(misplaced.frames))
    wrong, _ = mouth_signal(misplaced.frames[:n])
    r_own = np.corrcoef(truth, drawn)[0, 1]
    r_other = np.corrcoef(truth[:n], wrong)[0, 1]
    assert r_own > 0.6 and r_own > r_other + 0.3, (r_own, r_other)  # measured 0.93 and -0.14
