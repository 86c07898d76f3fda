"""The SyncNet offset protocol and speech activity, shared by every sync backend."""

import numpy as np
import pytest

from eval.protocol import VSHIFT, overlap_mask, pairwise_distances, sync_offset
from eval.speech import SAMPLES_PER_FRAME, speech_fraction, speech_frames


def delayed(features: np.ndarray, k: int) -> np.ndarray:
    """The same feature track with its content k frames later (zeros shifted in)."""
    out = np.zeros_like(features)
    if k >= 0:
        out[k:] = features[: len(features) - k]
    else:
        out[:k] = features[-k:]
    return out


@pytest.mark.parametrize("pad_audio", [True, False])
@pytest.mark.parametrize("k", [-10, -5, -2, 0, 2, 5, 10])
def test_delaying_the_audio_by_k_frames_reports_offset_minus_k(k, pad_audio):
    rng = np.random.default_rng(0)
    video = rng.standard_normal((120, 16))
    result = sync_offset(video, delayed(video, k), pad_audio=pad_audio)
    assert result.av_offset_frames == -k


def test_without_padding_each_offset_is_the_mean_over_the_frames_whose_shifted_audio_exists():
    rng = np.random.default_rng(3)
    video, audio = rng.standard_normal((40, 5)), rng.standard_normal((40, 5))
    padded, unpadded = sync_offset(video, audio), sync_offset(video, audio, pad_audio=False)
    dists = pairwise_distances(video, audio)
    for j, shift in enumerate(range(-VSHIFT, VSHIFT + 1)):
        frames = [i for i in range(40) if 0 <= i + shift < 40]
        assert len(frames) == 40 - abs(shift) == overlap_mask(40)[:, j].sum()
        assert unpadded.mean_distances[j] == pytest.approx(dists[frames, j].mean())
        assert padded.mean_distances[j] == pytest.approx(dists[:, j].mean())
    assert unpadded.sync_confidence == pytest.approx(np.median(unpadded.mean_distances) - unpadded.sync_distance)


def test_without_padding_a_zero_feature_is_never_a_match():
    """Video that is quiet where the audio was shifted out: with padding, the zeros shifted in match it
    better than the true alignment does; without, only real audio is compared."""
    rng = np.random.default_rng(4)
    video = rng.standard_normal((60, 5))
    video[-VSHIFT:] = 0.0  # the mouth rests for the last 15 frames
    audio = video + 2.5 * rng.standard_normal(video.shape)  # weakly in sync
    audio[-VSHIFT:] = rng.standard_normal((VSHIFT, 5))  # while the speech goes on
    padded, unpadded = sync_offset(video, audio), sync_offset(video, audio, pad_audio=False)
    assert padded.av_offset_frames == -VSHIFT  # the rest matched with the zeros shifted in
    assert unpadded.av_offset_frames == 0


def test_without_padding_offsets_with_no_overlap_are_reported_but_never_chosen():
    rng = np.random.default_rng(5)
    video, audio = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))  # 3 windows: offsets -2..2 overlap
    video[0] = 0.0  # a resting window, nearest the zeros that offsets beyond +-2 would compare it with
    result = sync_offset(video, audio, pad_audio=False)
    assert np.isfinite(result.mean_distances).all() and abs(result.av_offset_frames) <= 2
    kept = np.abs(result.offsets) <= 2
    assert result.sync_distance == pytest.approx(result.mean_distances[kept].min())
    assert result.sync_confidence == pytest.approx(np.median(result.mean_distances[kept]) - result.sync_distance)


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
