"""The SyncNet offset protocol and speech activity, shared by every sync backend."""

import numpy as np
import pytest

from eval.protocol import VSHIFT, sync_offset
from eval.speech import SAMPLES_PER_FRAME, speech_fraction, speech_frames


def delayed(features: np.ndarray, k: int) -> np.ndarray:
    """The same feature track with its content k frames later (zeros shifted in)."""
    out = np.zeros_like(features)
    if k >= 0:
        out[k:] = features[: len(features) - k]
    else:
        out[:k] = features[-k:]
    return out


@pytest.mark.parametrize("k", [-10, -5, -2, 0, 2, 5, 10])
def test_delaying_the_audio_by_k_frames_reports_offset_minus_k(k):
    rng = np.random.default_rng(0)
    video = rng.standard_normal((120, 16))
    result = sync_offset(video, delayed(video, k))
    assert result.av_offset_frames == -k


def test_distance_is_the_minimum_and_confidence_the_median_minus_minimum():
    rng = np.random.default_rng(1)
    video = rng.standard_normal((60, 8))
    result = sync_offset(video, video + 0.01 * rng.standard_normal(video.shape))
    assert len(result.mean_distances) == 2 * VSHIFT + 1
    assert result.sync_distance == pytest.approx(result.mean_distances.min())
    assert result.sync_confidence == pytest.approx(np.median(result.mean_distances) - result.mean_distances.min())
    assert result.offsets[np.argmin(result.mean_distances)] == result.av_offset_frames == 0
    assert result.frame_confidence.shape == (60,)


def test_matched_audio_is_more_confident_than_unrelated_audio():
    rng = np.random.default_rng(2)
    video = rng.standard_normal((80, 8))
    matched = sync_offset(video, video + 0.3 * rng.standard_normal(video.shape))
    unrelated = sync_offset(video, rng.standard_normal(video.shape))
    assert matched.sync_confidence > 3 * unrelated.sync_confidence


def test_mismatched_feature_shapes_are_rejected():
    with pytest.raises(ValueError, match="must both be"):
        sync_offset(np.zeros((10, 4)), np.zeros((9, 4)))


def test_speech_fraction_counts_loud_frames_and_silence_is_zero():
    frames = 50
    audio = np.zeros(frames * SAMPLES_PER_FRAME, dtype=np.float32)
    t = np.arange(20 * SAMPLES_PER_FRAME) / 16000
    audio[: len(t)] = 0.3 * np.sin(2 * np.pi * 200 * t)  # speech-loud in the first 20 frames
    assert speech_frames(audio, frames)[:20].all() and not speech_frames(audio, frames)[20:].any()
    assert speech_fraction(audio, frames) == pytest.approx(0.4)
    assert speech_fraction(np.zeros(frames * SAMPLES_PER_FRAME), frames) == 0.0
