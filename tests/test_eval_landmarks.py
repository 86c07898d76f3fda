"""The landmarks lip-sync backend (eval.landmarks) on drawn talking heads (eval.drawn_face)."""

import time
from functools import lru_cache

import numpy as np
import pytest

from eval.drawn_face import drawn_talking_head, mouth_openings
from eval.landmarks import FALLBACK_FACE, mouth_signal, score_landmarks
from eval.speech import SAMPLES_PER_FRAME

SECONDS = 8
SHIFTS = [2, -2, 5, -5, 10, -10]


@lru_cache(maxsize=None)
def clip(seed=0, size=64, delay=0):
    return drawn_talking_head(SECONDS, seed=seed, size=size, audio_delay_frames=delay)


@lru_cache(maxsize=None)
def offset(size, delay, detect_face=True):
    frames, _ = clip(0, size, 0)
    _, audio = clip(0, size, delay)
    result, _ = score_landmarks(frames, audio, detect_face=detect_face)
    return result.av_offset_frames


@pytest.mark.parametrize("size", [64, 256])
def test_synced_drawn_face_scores_offset_zero(size):
    assert abs(offset(size, 0)) <= 1


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("k", SHIFTS)
def test_delaying_audio_by_k_frames_changes_offset_by_minus_k(size, k):
    assert abs(offset(size, k) - offset(size, 0) + k) <= 1


@pytest.mark.parametrize("k", SHIFTS)
def test_fixed_mouth_region_fallback_also_follows_audio_shifts(k):
    assert abs(offset(64, 0, detect_face=False)) <= 1
    assert abs(offset(64, k, detect_face=False) - offset(64, 0, detect_face=False) + k) <= 1


@pytest.mark.parametrize("size", [64, 256])
def test_synced_audio_scores_higher_confidence_than_another_clips_audio(size):
    frames, audio = clip(0, size)
    for other_seed in (1, 2):
        _, other_audio = clip(other_seed, size)
        synced, _ = score_landmarks(frames, audio)
        mismatched, _ = score_landmarks(frames, other_audio)
        assert synced.sync_confidence > mismatched.sync_confidence + 0.5


def test_result_follows_the_syncnet_protocol_shape():
    frames, audio = clip()
    result, _ = score_landmarks(frames, audio)
    assert result.mean_distances.shape == (31,)
    assert list(result.offsets[[0, 15, 30]]) == [15, 0, -15]
    assert result.sync_distance == pytest.approx(result.mean_distances.min())
    assert result.sync_confidence == pytest.approx(np.median(result.mean_distances) - result.mean_distances.min())
    assert result.frame_confidence.shape == (len(frames) - 4,)


def test_face_field_says_a_face_was_found_on_the_drawn_face():
    frames, audio = clip()
    _, face = score_landmarks(frames, audio)
    assert face.startswith("haar: face in")


def test_face_field_records_the_fixed_region_fallback_when_no_face_is_found():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)  # noise: no face
    result, face = score_landmarks(frames, clip()[1][: 50 * SAMPLES_PER_FRAME])
    assert face == FALLBACK_FACE
    assert np.isfinite(result.sync_confidence)
    _, forced = score_landmarks(*clip(), detect_face=False)
    assert forced == FALLBACK_FACE


@pytest.mark.parametrize("n", [0, 1, 4])
def test_fewer_than_five_frames_is_a_value_error(n):
    frames, audio = clip()
    with pytest.raises(ValueError, match="at least 5 frames"):
        score_landmarks(frames[:n], audio)
    with pytest.raises(ValueError, match="at least 5 frames"):
        mouth_signal(frames[:n])


def test_five_frames_are_enough():
    frames, audio = clip()
    result, _ = score_landmarks(frames[:5], audio[: 5 * SAMPLES_PER_FRAME])
    assert result.frame_confidence.shape == (1,)


def test_silent_clip_returns_a_result_with_low_confidence():
    frames, audio = clip()
    synced, _ = score_landmarks(frames, audio)
    silent, _ = score_landmarks(frames, np.zeros_like(audio))
    assert np.isfinite(silent.sync_distance) and np.isfinite(silent.sync_confidence)
    assert abs(silent.sync_confidence) < 0.1 < synced.sync_confidence


def test_mouth_signal_follows_the_drawn_mouth_opening():
    frames, audio = clip()
    signal, face = mouth_signal(frames)
    assert signal.shape == (len(frames),) and face.startswith("haar")
    assert np.corrcoef(signal, mouth_openings(audio, len(frames)))[0, 1] > 0.8


def test_drawn_face_is_deterministic_and_delay_shifts_the_audio_later():
    frames, audio = drawn_talking_head(2, seed=3)
    frames2, audio2 = drawn_talking_head(2, seed=3)
    assert frames.shape == (50, 64, 64, 3) and frames.dtype == np.uint8
    assert audio.shape == (50 * SAMPLES_PER_FRAME,) and audio.dtype == np.float32
    assert np.array_equal(frames, frames2) and np.array_equal(audio, audio2)
    k = 3 * SAMPLES_PER_FRAME
    late_frames, late = drawn_talking_head(2, seed=3, audio_delay_frames=3)
    early_frames, early = drawn_talking_head(2, seed=3, audio_delay_frames=-3)
    assert np.array_equal(late_frames, frames) and np.array_equal(early_frames, frames)
    assert np.all(late[:k] == 0) and np.array_equal(late[k:], audio[:-k])
    assert np.array_equal(early[:-k], audio[k:]) and np.abs(early[-k:]).max() > 0  # speech goes on


def test_drawn_audio_envelope_is_speech_like_not_periodic():
    _, audio = clip()
    opening = mouth_openings(audio, len(audio) // SAMPLES_PER_FRAME)
    spoken = opening > 0.1
    assert 0.4 < spoken.mean() < 0.95  # bursts and pauses
    x = opening - opening.mean()
    auto = np.correlate(x, x, "full")[len(x) - 1 :] / (x @ x)
    assert auto[2:16].max() < 0.5  # no strong repeat within the +-15-frame search range


def test_scoring_is_faster_than_ten_times_real_time_on_64px():
    frames, audio = clip()
    score_landmarks(frames, audio)
    start = time.perf_counter()
    score_landmarks(frames, audio)
    assert time.perf_counter() - start < SECONDS / 10
