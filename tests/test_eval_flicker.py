"""Flicker scores mean what they say: VBench temporal flickering, warping error, audio seams."""

import math

import cv2
import numpy as np
import pytest

from eval.flicker import (
    AudioFlicker,
    audio_flicker,
    farneback_flow,
    occlusion_mask,
    temporal_flickering,
    temporal_flickering_curve,
    warping_error,
    warping_error_curve,
    warping_error_with_curve,
)

SR = 16_000


def texture(h, w, sigma=2.5, seed=0, lo=30, hi=200):
    """Smooth random RGB texture, uint8 in [lo, hi] (room for brightness changes without clipping)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), sigma)
    img = (img - img.min()) / (img.max() - img.min())
    return (lo + img * (hi - lo)).round().astype(np.uint8)


def translating(t=25, h=64, w=64, step=2, seed=0):
    """A textured pattern sliding left by `step` px per frame (crops of a larger texture)."""
    big = texture(h, w + step * t, seed=seed)
    return np.stack([big[:, step * i : step * i + w] for i in range(t)])


# ---------------------------------------------------------------------------------------------
# VBench temporal flickering


def test_static_video_scores_exactly_one():
    frames = np.repeat(texture(37, 53)[None], 10, axis=0)
    assert temporal_flickering(frames) == 1.0
    assert np.array_equal(temporal_flickering_curve(frames, fps=4), np.ones(3))


def test_brightness_flicker_lowers_score_monotonically_with_amplitude():
    base = np.repeat(texture(32, 48)[None], 12, axis=0)  # values 30..200: +a never clips
    scores = []
    for a in [0, 1, 3, 10, 25, 50]:
        frames = base.copy()
        frames[1::2] += np.uint8(a)  # every other frame brighter by a
        scores.append(temporal_flickering(frames))
        # every pair differs by exactly a in every pixel and channel
        assert scores[-1] == pytest.approx((255 - a) / 255, abs=1e-12)
    assert all(x > y for x, y in zip(scores, scores[1:]))


def test_temporal_flickering_matches_hand_computed_example():
    f0 = [[[0, 0, 0], [10, 20, 30]], [[250, 250, 250], [100, 100, 100]]]
    f1 = [[[0, 0, 0], [10, 20, 30]], [[10, 250, 250], [100, 100, 100]]]
    f2 = [[[3, 3, 3], [10, 20, 30]], [[10, 250, 250], [100, 100, 112]]]
    frames = np.array([f0, f1, f2], dtype=np.uint8)
    # pair (f0, f1): only pixel (1,0) channel 0 changes, |250 - 10| = 240 (uint8 wraparound
    #   would give 16); 12 values per frame -> MAE = 240 / 12 = 20
    # pair (f1, f2): pixel (0,0) +3 in 3 channels = 9, pixel (1,1) channel 2 +12 -> 21 / 12 = 1.75
    # mean over pairs = (20 + 1.75) / 2 = 10.875 -> (255 - 10.875) / 255 = 244.125 / 255
    assert temporal_flickering(frames) == pytest.approx(244.125 / 255, abs=1e-12)
    # one second holding both pairs at fps=3; at fps=2 frame 1 opens second 0, frame 2 second 1
    assert temporal_flickering_curve(frames, fps=3) == pytest.approx([244.125 / 255])
    assert temporal_flickering_curve(frames, fps=2) == pytest.approx([235 / 255, 253.25 / 255])


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((5, 8, 8, 3), np.float32),  # not uint8
        np.zeros((5, 8, 8), np.uint8),  # grayscale
        np.zeros((5, 8, 8, 4), np.uint8),  # RGBA
        np.zeros((1, 8, 8, 3), np.uint8),  # a single frame
        np.zeros((0, 8, 8, 3), np.uint8),
        [[[[0, 0, 0]]], [[[0, 0, 0]]]],  # not an array
    ],
    ids=["float", "gray", "rgba", "one-frame", "empty", "list"],
)
def test_video_metrics_reject_bad_frames_with_value_error(frames):
    for fn in (temporal_flickering, temporal_flickering_curve, warping_error, warping_error_curve):
        with pytest.raises(ValueError):
            fn(frames)


@pytest.mark.parametrize("shape", [(3, 1, 1, 3), (3, 2, 2, 3), (4, 7, 5, 3), (3, 33, 65, 3), (3, 17, 301, 3)])
def test_video_metrics_handle_odd_and_tiny_sizes(shape):
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for value in (temporal_flickering(frames), warping_error(frames), warping_error(frames, max_side=16)):
        assert math.isfinite(value) and value >= 0
    assert np.isfinite(warping_error_curve(frames, fps=2)).all()


# ---------------------------------------------------------------------------------------------
# Warping error


def test_warping_error_of_static_video_is_zero():
    frames = np.repeat(texture(48, 64)[None], 6, axis=0)
    assert warping_error(frames) < 1e-6


def test_warping_error_small_for_smooth_motion_and_larger_with_flicker():
    moving = translating(t=20)
    clean = warping_error(moving)
    rng = np.random.default_rng(1)
    flicker = (np.arange(len(moving)) % 2 * 15)[:, None, None, None]  # alternate frames +15
    noisy = np.clip(moving + rng.normal(0, 6, moving.shape) + flicker, 0, 255).astype(np.uint8)
    flickering = warping_error(noisy)
    assert clean < 5e-4  # well-tracked motion warps almost perfectly ([0, 1] pixel scale)
    assert flickering > 10 * clean
    assert flickering > 2e-3
    # the downscaled flow path (long side 32 < 64) tracks the motion too
    assert warping_error(moving, max_side=32) < 5e-4


def test_occlusion_mask_thresholds_follow_the_forward_backward_check():
    h, w = 6, 8
    forward = np.zeros((h, w, 2), np.float32)
    backward = np.zeros((h, w, 2), np.float32)
    forward[..., 0], backward[..., 0] = 2.0, -2.0  # consistent: B(x + F) = -F
    assert not occlusion_mask(forward, backward).any()
    backward[..., 0] = 2.0  # inconsistent by 4 px
    assert occlusion_mask(forward, backward).all()
    # |F + B|^2 against 0.01 (|F|^2 + |B|^2) + 0.5 with F = 0: 0.49 passes, 0.72^2 = 0.518 fails
    forward[:] = 0
    backward[..., 0] = 0.7
    assert not occlusion_mask(forward, backward).any()
    backward[..., 0] = 0.72
    assert occlusion_mask(forward, backward).all()
    # motion boundary: a 1 px step in the forward flow marks the column before the step
    backward[:] = 0
    forward[:, 4:, 0] = 0.3
    backward[:, 4:, 0] = -0.3
    mask = occlusion_mask(forward, backward)
    assert mask[:, 3].all() and mask.sum() == h
    # on a grid downscaled 2x the same flow is 0.6 full-resolution px and steps 0.3 px per pixel
    assert occlusion_mask(forward, backward, pixel_scale=(2.0, 2.0))[:, 3].all()


SQUARE_Y, SQUARE_X0, SQUARE_SIDE, SQUARE_STEP = 34, 8, 28, 4


def moving_square(t=10, size=96):
    """A textured square sliding right by SQUARE_STEP px per frame over a static textured background."""
    bg = texture(size, size, seed=1)
    square = texture(SQUARE_SIDE, SQUARE_SIDE, sigma=1.5, seed=2, lo=0, hi=255)
    frames = []
    for i in range(t):
        f = bg.copy()
        x = SQUARE_X0 + SQUARE_STEP * i
        f[SQUARE_Y : SQUARE_Y + SQUARE_SIDE, x : x + SQUARE_SIDE] = square
        frames.append(f)
    return np.stack(frames)


def test_occlusion_mask_excludes_disoccluded_regions():
    frames = moving_square()
    masked = warping_error(frames)
    unmasked = warping_error(frames, use_occlusion_mask=False)
    # background covered / uncovered by the square cannot be warped; the mask leaves it out
    assert masked < 0.9 * unmasked
    # the masked pixels of a pair are all around the moving square: Farneback spreads the square's
    # motion ~10 px into the background (its 15 px window), and the mask marks that band (motion
    # boundary) and the background about to be covered (forward-backward check); never the square's
    # interior, whose flow is smooth, nor the static background far from it
    k = 4
    g = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames[k : k + 2]]
    occ = occlusion_mask(farneback_flow(g[0], g[1]), farneback_flow(g[1], g[0]))
    y, x = SQUARE_Y, SQUARE_X0 + SQUARE_STEP * k
    near = np.zeros_like(occ)
    near[y - 14 : y + SQUARE_SIDE + 14, x - 14 : x + SQUARE_SIDE + SQUARE_STEP + 14] = True
    assert occ.sum() > 100
    assert occ[near].sum() > 0.95 * occ.sum()
    assert not occ[y + 6 : y + SQUARE_SIDE - 6, x + 6 : x + SQUARE_SIDE - 6].any()
    assert not occ[:14].any() and not occ[-14:].any()


# ---------------------------------------------------------------------------------------------
# Per-second curves


@pytest.mark.parametrize("t,fps,n", [(100, 25, 4), (101, 25, 5), (26, 25, 2), (2, 25, 1), (30, 10, 3), (7, 2.5, 3)])
def test_curves_have_one_entry_per_whole_or_partial_second(t, fps, n):
    frames = np.repeat(texture(16, 16)[None], t, axis=0)
    assert n == math.ceil(t / fps)
    assert temporal_flickering_curve(frames, fps=fps).shape == (n,)
    assert warping_error_curve(frames, fps=fps).shape == (n,)


def test_curves_locate_a_flicker_burst_in_its_second():
    frames = translating(t=100, h=48, w=48, step=1)
    burst = frames.copy()
    burst[51:75:2] = np.clip(burst[51:75:2].astype(int) + 40, 0, 255).astype(np.uint8)  # in second 2
    tf_clean, tf_burst = temporal_flickering_curve(frames), temporal_flickering_curve(burst)
    assert tf_burst.shape == (4,)
    assert int(np.argmin(tf_burst)) == 2
    assert np.allclose(np.delete(tf_burst, 2), np.delete(tf_clean, 2))
    we = warping_error_curve(burst)
    assert int(np.argmax(we)) == 2
    assert we[2] > 5 * np.delete(we, 2).max()
    # the whole-clip scores agree with the per-pair means behind the curves
    assert temporal_flickering(burst) < temporal_flickering(frames)
    assert warping_error(burst) > warping_error(frames)
    # one pass gives both, identical to the separate calls
    score, curve = warping_error_with_curve(burst)
    assert score == warping_error(burst) and np.array_equal(curve, we)


# ---------------------------------------------------------------------------------------------
# Audio flicker


def tone(t):
    return 0.5 * np.sin(2 * np.pi * 220 * t)


def voice(t):
    """Speech-like: a 12-harmonic complex with a gliding pitch and a slow loudness contour."""
    # pitch 120 + 30 sin(2 pi 0.3 t) Hz, integrated to a phase
    phase = 2 * np.pi * (120 * t - 30 / (2 * np.pi * 0.3) * np.cos(2 * np.pi * 0.3 * t))
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 13))
    return 0.2 * (0.7 + 0.3 * np.sin(2 * np.pi * 0.5 * t)) * harmonics


def spliced(gen, seconds=5, sr=SR, seed=0):
    """Each second restarts the signal at a random point (phase jump) with alternating level."""
    rng = np.random.default_rng(seed)
    t = np.arange(sr) / sr
    return np.concatenate([gen(t + rng.uniform(0.1, 3.0)) * (1.0 if i % 2 == 0 else 0.5) for i in range(seconds)])


@pytest.mark.parametrize("gen", [tone, voice], ids=["tone", "speech-like"])
def test_audio_splices_score_higher_and_worst_moments_point_at_them(gen):
    clean = audio_flicker(gen(np.arange(5 * SR) / SR))
    seams = audio_flicker(spliced(gen))
    assert isinstance(seams, AudioFlicker)
    assert clean.score < 0.05
    assert seams.score > 0.5 and seams.score > 10 * clean.score
    assert seams.curve.shape == (5,) and clean.curve.shape == (5,)
    times = [t for t, _ in seams.worst]
    jumps = [j for _, j in seams.worst]
    assert jumps == sorted(jumps, reverse=True) and all(j >= 0.1 for j in jumps)
    splices = [1.0, 2.0, 3.0, 4.0]
    for s in splices:  # every splice is among the worst moments, within one 40 ms hop
        assert any(abs(t - s) <= 0.04 + 1e-9 for t in times), (s, times)
    for t in times[:4]:  # and the four worst moments are splices
        assert min(abs(t - s) for s in splices) <= 0.04 + 1e-9, times


def test_audio_flicker_resamples_other_rates():
    sr = 22_050
    seams = audio_flicker(spliced(tone, seconds=3, sr=sr), sample_rate=sr)
    assert seams.score > 0.5 and seams.curve.shape == (3,)
    assert min(abs(t - 1.0) for t, _ in seams.worst) <= 0.04 + 1e-6
    assert audio_flicker(tone(np.arange(3 * sr) / sr), sample_rate=sr).score < 0.05


def test_audio_flicker_of_silence_and_very_short_audio_is_zero():
    silent = audio_flicker(np.zeros(3 * SR, np.float32))
    assert silent.score == 0.0 and silent.worst == [] and np.array_equal(silent.curve, np.zeros(3))
    for n, seconds in [(0, 0), (1, 1), (100, 1), (1791, 1)]:
        short = audio_flicker(np.random.default_rng(0).normal(0, 0.1, n))
        assert short.score == 0.0 and short.worst == [] and short.curve.shape == (seconds,)
    assert audio_flicker(np.zeros(SR // 2, np.int16)).score == 0.0


@pytest.mark.parametrize(
    "audio",
    [np.zeros((2, SR)), np.array([0.0, np.nan] * SR), np.zeros(SR, dtype=bool)],
    ids=["stereo", "nan", "bool"],
)
def test_audio_flicker_rejects_bad_audio_with_value_error(audio):
    with pytest.raises(ValueError):
        audio_flicker(audio)


def test_audio_flicker_accepts_int16_and_whole_float_rates():
    wave = spliced(tone, seconds=2)
    as_int = audio_flicker((wave * 32767).astype(np.int16), sample_rate=16000.0)
    assert as_int.score == pytest.approx(audio_flicker(wave).score, rel=1e-3)
    for bad in (0, -16000, 16000.5, float("nan"), True):
        with pytest.raises(ValueError):
            audio_flicker(wave, sample_rate=bad)
