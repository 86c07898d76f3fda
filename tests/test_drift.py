"""eval.drift: identity drift between the first and last second, jumps at chunk seams."""

import math

import cv2
import numpy as np
import pytest

from eval.drift import drift, face_mask, frame_changes, seam_ratio

FPS = 25


def face_clip(seconds: float, skin=lambda t: (180, 120, 80), background=lambda t: (60, 40, 70), talk=True):
    """A drawn face: skin and background colours as functions of time in 0..1, a mouth that opens and closes."""
    frames = []
    n = round(seconds * FPS)
    for i in range(n):
        t = i / max(n - 1, 1)
        img = np.empty((64, 64, 3), np.uint8)
        img[:] = background(t)
        cv2.ellipse(img, (32, 30), (18, 24), 0, 0, 360, skin(t), -1)
        cv2.circle(img, (25, 24), 3, (255, 255, 255), -1)
        cv2.circle(img, (39, 24), 3, (255, 255, 255), -1)
        opening = 1 + round(4 * (0.5 + 0.5 * math.sin(i * 0.9))) if talk else 1
        cv2.ellipse(img, (32, 42), (7, opening), 0, 0, 360, (40, 10, 20), -1)
        frames.append(img)
    return np.stack(frames)


def test_a_static_talking_face_does_not_drift_and_one_that_changes_colour_does():
    steady = drift(face_clip(6))
    fading = drift(face_clip(6, skin=lambda t: (180 - 100 * t, 120, 80 + 100 * t)))
    assert steady.face < 1.0 and steady.background == 0.0  # only the mouth moves; its mean over a second barely
    assert fading.face > 20 * max(steady.face, 0.1)
    assert fading.face > 10 * fading.background  # the background held; the face box also holds a little of it


def test_a_background_that_changes_drifts_outside_the_face_more_than_inside():
    result = drift(face_clip(4, background=lambda t: (60 + 120 * t, 40, 70)))
    assert result.background > 20 and result.face < result.background / 2


def test_drift_averages_a_second_at_each_end_and_halves_short_clips():
    assert drift(face_clip(6)).seconds == FPS
    assert drift(face_clip(1)).seconds == 12
    clip = face_clip(3, talk=False)
    clip[FPS:-FPS] = 0  # only the middle second changes: the ends are the same
    assert drift(clip).face == 0.0


def test_the_face_box_is_the_centre_of_the_frame():
    mask = face_mask(64, 64)
    assert mask[32, 32] and not mask[0, 0] and not mask[63, 32] and not mask[32, 2]
    assert 0.4 < mask.mean() < 0.5


def test_a_jump_at_a_seam_shows_and_a_smooth_seam_does_not():
    clip = face_clip(4, skin=lambda t: (100 + 80 * t, 120, 80))  # changes a little every frame
    seams = [25, 50, 75]
    assert 0.5 < seam_ratio(clip, seams) < 2.0
    jumped = clip.copy()
    jumped[50:] = np.clip(jumped[50:].astype(int) + 20, 0, 255).astype(np.uint8)  # a step at the second seam
    assert seam_ratio(jumped, seams) > 5
    assert seam_ratio(jumped, [25, 75]) < 2.0  # the step is not at these
    assert frame_changes(jumped)[49] == pytest.approx(np.abs(jumped[50].astype(int) - jumped[49]).mean())


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        drift(np.zeros((30, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        drift(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="seams must be frame indices"):
        seam_ratio(face_clip(1), [0])
    assert math.isnan(seam_ratio(face_clip(1), []))
