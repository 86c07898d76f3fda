"""Identity drift over a long clip, and jumps at chunk seams.

Frames are uint8 RGB ``(T, H, W, 3)`` at ``fps`` frames per second; distances are mean absolute
differences in 0..255 pixel units. Nothing here imports avgen's model code.

Drift (`drift`)
    The mean frame of the first second and the mean frame of the last second (averaging over a
    second blurs out the mouth and blinks, leaving who is there and where), compared in the face
    region and in the rest of the frame (the background). The face region is a fixed centre box,
    FACE_ROWS x FACE_COLS of the frame: talking-head clips, drawn or cropped, are face-centred (the
    drawn faces fill about this box at 64x64). A clip that keeps its identity and background drifts
    only by as much as its head moves; compare with the ground truth's drift.

Seams (`seam_ratio`)
    The frame-to-frame change (mean absolute difference of consecutive frames) at the given seams
    (the first frame of each chunk after the first, i.e. the change from frame s-1 to frame s),
    divided by the median change over all other consecutive pairs. About 1: the seams are as smooth
    as the rest of the clip; well above 1: a visible jump.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FACE_ROWS = (0.1, 0.85)  # fractions of the frame height: forehead to chin
FACE_COLS = (0.2, 0.8)  # fractions of the frame width: cheek to cheek


@dataclass(frozen=True)
class Drift:
    face: float  # mean |first-second mean frame - last-second mean frame| inside the face box
    background: float  # the same outside the face box
    seconds: int  # frames averaged at each end: one second's worth (fewer when the clip is short)


def _check_frames(frames: np.ndarray, minimum: int) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(
            f"frames must be a uint8 array of shape (T, H, W, 3), got {shape} {getattr(frames, 'dtype', '')}"
        )
    if len(frames) < minimum:
        raise ValueError(f"need at least {minimum} frames, got {len(frames)}")
    return frames


def face_mask(height: int, width: int) -> np.ndarray:
    """(H, W) bool: the face box, FACE_ROWS x FACE_COLS of the frame."""
    mask = np.zeros((height, width), dtype=bool)
    r0, r1 = (round(f * height) for f in FACE_ROWS)
    c0, c1 = (round(f * width) for f in FACE_COLS)
    mask[r0:r1, c0:c1] = True
    return mask


def drift(frames: np.ndarray, fps: float = 25) -> Drift:
    """How far the first second's mean frame is from the last second's, in the face box and outside it.

    Clips shorter than two seconds compare their first and last half (no frame in both ends)."""
    frames = _check_frames(frames, 2)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = min(round(fps), len(frames) // 2)
    first = frames[:n].astype(np.float64).mean(axis=0)
    last = frames[-n:].astype(np.float64).mean(axis=0)
    difference = np.abs(first - last).mean(axis=2)  # (H, W), over channels
    mask = face_mask(*difference.shape)
    return Drift(float(difference[mask].mean()), float(difference[~mask].mean()), n)


def frame_changes(frames: np.ndarray) -> np.ndarray:
    """(T-1,) mean absolute difference between each frame and the next."""
    frames = _check_frames(frames, 2)
    changes = np.empty(len(frames) - 1)
    for i in range(len(frames) - 1):  # pair by pair: no (T, H, W, 3) int16 copy of a long clip
        changes[i] = np.abs(frames[i + 1].astype(np.int16) - frames[i]).mean()
    return changes


def seam_ratio(frames: np.ndarray, seams: Sequence[int]) -> float:
    """Mean frame-to-frame change into each seam frame over the median change elsewhere (see the module doc).

    NaN without seams; inf when the clip is static apart from its seams."""
    changes = frame_changes(frames)
    seams = sorted(set(int(s) for s in seams))
    if any(not 1 <= s < len(frames) for s in seams):
        raise ValueError(f"seams must be frame indices in 1..{len(frames) - 1}, got {seams}")
    if not seams:
        return math.nan
    at_seam = np.zeros(len(changes), dtype=bool)
    at_seam[np.array(seams) - 1] = True
    if at_seam.all():
        raise ValueError("every frame pair is a seam: nothing to compare the seams with")
    elsewhere = float(np.median(changes[~at_seam]))
    jump = float(changes[at_seam].mean())
    if elsewhere == 0:
        return math.inf if jump > 0 else 1.0
    return jump / elsewhere
