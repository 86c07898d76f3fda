"""The landmarks lip-sync backend (eval.landmarks): drawn talking heads (eval.drawn_face), held-out
clips of the synthetic corpus (in sync by construction), and real people's clips with their own
speech (../shared/data/real-clips, evaluation only: skipped where absent). Speed: benchmarks/eval_speed.py."""

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from avgen.data import make_sample
from eval.drawn_face import drawn_talking_head, mouth_openings
from eval.landmarks import mouth_signal, score_landmarks, score_mouth_signal, signal_features
from eval.protocol import overlap_mask
from eval.speech import SAMPLES_PER_FRAME

REAL_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-clips"

SECONDS = 8
SHIFTS = [2, -2, 5, -5, 10, -10]


@cache
def clip(seed=0, size=64, delay=0):
    return drawn_talking_head(SECONDS, seed=seed, size=size, audio_delay_frames=delay)


@cache
def clip_signal(seed=0, size=64, detect_face=True):
    """The clip's mouth signal, computed once (score_landmarks = mouth_signal + score_mouth_signal)."""
    return mouth_signal(clip(seed, size)[0], detect_face)[0]


@cache
def offset(size, delay, detect_face=True):
    _, audio = clip(0, size, delay)
    return score_mouth_signal(clip_signal(0, size, detect_face), audio).av_offset_frames


@pytest.mark.parametrize("size", [64, 256])
def test_synced_drawn_face_scores_offset_zero(size):
    assert abs(offset(size, 0)) <= 1


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("k", SHIFTS)
def test_delaying_audio_by_k_frames_changes_offset_by_minus_k(size, k):
    assert abs(offset(size, k) - offset(size, 0) + k) <= 1


@pytest.mark.parametrize("k", SHIFTS)
def test_mesh_on_the_whole_frame_without_the_detector_also_follows_audio_shifts(k):
    assert abs(offset(64, 0, detect_face=False)) <= 1
    assert abs(offset(64, k, detect_face=False) - offset(64, 0, detect_face=False) + k) <= 1


@pytest.mark.parametrize("size", [64, 256])
def test_synced_audio_scores_higher_confidence_than_another_clips_audio(size):
    _, audio = clip(0, size)
    synced = score_mouth_signal(clip_signal(0, size), audio)
    for other_seed in (1, 2):
        _, other_audio = clip(other_seed, size)
        mismatched = score_mouth_signal(clip_signal(0, size), other_audio)
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
    assert face == "blazeface: face in 100% of sampled frames; face mesh sure of a face in 100% of frames"


def test_face_field_says_when_no_face_is_found_and_the_score_is_still_finite():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)  # noise: no face
    result, face = score_landmarks(frames, clip()[1][: 50 * SAMPLES_PER_FRAME])
    assert face.startswith("no face detected: mesh on the whole frame; face mesh sure of a face in 0%")
    assert np.isfinite(result.sync_confidence)
    _, forced = score_landmarks(*clip(), detect_face=False)
    assert forced.startswith("detector skipped: mesh on the whole frame")


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
    assert signal.shape == (len(frames),) and face.startswith("blazeface")
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


# drawn ground truth: held-out corpus clips (identities and sentences never trained on), their mouths
# drawn from the speech in the same frame, so in sync by construction; natural sentence lengths


@cache
def heldout_offsets(n=20, min_frames=50):
    offsets, index = [], 0
    while len(offsets) < n:
        sample = make_sample(index, "heldout")
        index += 1
        if len(sample.frames) >= min_frames:  # >= 2 s
            offsets.append(score_landmarks(sample.frames, sample.audio)[0].av_offset_frames)
    return np.array(offsets)


def test_heldout_corpus_clips_score_in_sync_within_one_frame():
    offsets = heldout_offsets()
    assert np.mean(np.abs(offsets) <= 1) >= 0.95, offsets.tolist()


# real clips: real people, their own speech (in sync within a few frames by SOURCES.md's check)

REAL_SHIFTS = (-6, -3, 3, 6)


def real_clip_paths():
    return sorted(REAL_CLIPS.glob("*.mp4")) if REAL_CLIPS.is_dir() else []


needs_real_clips = pytest.mark.skipif(
    not real_clip_paths(), reason=f"real talking-head clips not found in {REAL_CLIPS} (evaluation data, not shipped)"
)


@cache
def real_clips():
    from avgen.media import read_mp4

    clips = {}
    for path in real_clip_paths():
        decoded = read_mp4(path, fps=25, require_audio=True)
        signal, face = mouth_signal(decoded.frames)
        clips[path.name] = (signal, decoded.audio, face)
    return clips


def delayed(audio, k):
    """The audio k frames late (k < 0: early), same length."""
    n = abs(k) * SAMPLES_PER_FRAME
    pad = np.zeros(n, np.float32)
    return np.concatenate([pad, audio[:-n]]) if k > 0 else np.concatenate([audio[n:], pad])


@needs_real_clips
def test_real_clips_face_is_found_in_every_frame():
    for name, (_, _, face) in real_clips().items():
        assert face == "blazeface: face in 100% of sampled frames; face mesh sure of a face in 100% of frames", name


@needs_real_clips
@pytest.mark.parametrize("k", REAL_SHIFTS)
def test_delaying_real_audio_by_k_frames_moves_the_offset_by_minus_k(k):
    # relative to the clip's own (unshifted) offset: the clips are in sync only within a few frames
    # (SOURCES.md's heuristic check has about +-3 frames of resolution), so the clip's true offset is
    # unknown; what the scorer must get right is how far the audio moved
    moved = {}
    for name, (signal, audio, _) in real_clips().items():
        base = score_mouth_signal(signal, audio).av_offset_frames
        moved[name] = score_mouth_signal(signal, delayed(audio, k)).av_offset_frames - base
    assert all(abs(m + k) <= 1 for m in moved.values()), moved


@needs_real_clips
def test_real_clips_own_audio_is_more_confident_than_any_other_clips_audio():
    clips = real_clips()
    for name, (signal, audio, _) in clips.items():
        own = score_mouth_signal(signal, audio).sync_confidence
        frames = len(signal)
        others = {}
        for other, (_, other_audio, _) in clips.items():
            if other != name:
                fitted = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)  # trimmed or zero-padded to the clip
                fitted[: min(len(other_audio), len(fitted))] = other_audio[: len(fitted)]
                others[other] = score_mouth_signal(signal, fitted).sync_confidence
        assert own > max(others.values()), (name, own, others)


def test_score_landmarks_is_mouth_signal_then_score_mouth_signal():
    frames, audio = clip(0, 64, 3)
    result, face = score_landmarks(frames, audio)
    signal, face2 = mouth_signal(frames)
    again = score_mouth_signal(signal, audio)
    assert face == face2 and result.av_offset_frames == again.av_offset_frames
    assert np.array_equal(result.mean_distances, again.mean_distances)


def test_offsets_are_averaged_over_real_audio_only_not_over_padding():
    """Each offset's mean distance is over the frames where the shifted audio exists (the zeros padded
    in past the audio's ends are never compared with the lips)."""
    frames, audio = clip(0, 64, 3)
    signal, _ = mouth_signal(frames)
    video, heard = signal_features(signal, audio)
    result = score_mouth_signal(signal, audio)
    n, shifts = len(video), result.offsets
    for j, offset in enumerate(shifts):
        frames_compared = [i for i in range(n) if overlap_mask(n)[i, j]]
        assert len(frames_compared) == n - abs(offset)
        expected = np.mean([np.linalg.norm(video[i] - heard[i - offset] + 1e-6) for i in frames_compared])
        assert result.mean_distances[j] == pytest.approx(expected)
