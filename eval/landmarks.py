"""The `landmarks` lip-sync backend: no weight file, works out of the box on real faces (the default).

Pipeline (25 fps RGB frames, 16 kHz mono audio):

1. Face: OpenCV's Haar frontal-face cascade (ships in the opencv-python-headless wheel) runs on a
   grayscale, histogram-equalised copy of every 5th frame downscaled to at most 160 px on the long
   side; the largest face of each such frame is kept. The per-keyframe boxes are cleaned (a missed
   keyframe takes its nearest detection in time; a 3-tap median over keyframes removes one-off
   false detections and jumps) and linearly interpolated to every frame, so the box is tracked
   smoothly between detections.
2. Mouth region: the lower third of the face box (rows 2/3..1 of its height; a Haar box runs from
   the brows to the chin, so this holds the lips and the jaw line) and its central half
   horizontally (columns 1/4..3/4 of its width). If the cascade finds a face in fewer than 25 % of
   the sampled frames (none at all, or only scattered false hits), a fixed region is used instead:
   rows 55-85 % and columns 30-70 % of the frame (the lower centre, where the mouth sits in a
   face-centred talking-head crop). Either way the returned `face` string says which, e.g.
   "haar: face in 96% of sampled frames" or "none found: fixed mouth region (lower centre)"; it is
   never an error.
3. Mouth signal (see `mouth_signal`): the darkness of the mouth region relative to the face above it,
   high-passed. The inside of an open mouth is the darkest thing on a lit face, so the region's
   mean brightness falls as the mouth opens. Per frame: the mouth region resized to 32x16 gray
   pixels, its mean m; the mean r of a reference region (the face box's upper two thirds, or rows
   20-55 % x columns 30-70 % with the fixed region); darkness = log(r + 1) - log(m + 1). The ratio
   cancels global brightness changes (exposure, lighting, the frame-to-frame brightness flicker of
   generated video); a centred 1 s moving average is then subtracted, removing slow drift and
   slow head movement, which change the region far more slowly than syllables do. The signal
   tracks the opening itself, so it lines up with the loudness of the same frame. The
   alternative, the region's temporal-difference energy (motion), peaks where the opening
   *changes*, pairs with the loudness derivative, and gave about half the confidence margin on
   the drawn-face clips, with or without head motion, noise and flicker.
4. Audio signal: the speech loudness envelope on the same 40 ms grid (eval.speech.frame_loudness_db,
   floored 40 dB below the clip's loud frames so silences don't dominate), high-passed the same way.
5. Comparison: both signals are z-scored, cut into 5-frame windows (features of shape (T-4, 5)) and
   compared with eval.protocol.sync_offset over offsets -15..+15 frames, exactly as SyncNet's
   embeddings are: offset = 15 - argmin of the mean distance (delaying the audio by k frames changes
   the offset by -k), distance = that minimum (LSE-D-like), confidence = median - minimum
   (LSE-C-like). The numbers are on this backend's own scale (distances between z-scored 5-frame
   windows), not comparable with published SyncNet values.

A clip with no speech (or a motionless mouth) gives a constant signal, whose z-score is all zeros:
every offset is then equally far and the confidence is ~0.
"""

from __future__ import annotations

import cv2
import numpy as np

from eval.protocol import VSHIFT, SyncResult, sync_offset
from eval.speech import frame_loudness_db

MIN_FRAMES = 5  # one 5-frame window
WINDOW = 5
DETECT_EVERY = 5  # run the detector on every 5th frame, track between
DETECT_MAX_SIDE = 160  # downscale so the long side is at most this before detection
MIN_FACE_FRACTION = 0.25  # a face found in fewer sampled frames than this is not trusted
ROI_SIZE = (32, 16)  # (width, height) the mouth region is resized to
HIGHPASS_FRAMES = 25  # subtract a centred 1 s moving average from both signals
FLOOR_DB = 40.0  # loudness floor below the clip's loud (95th percentile) frames

# mouth region inside a face box (fractions of the box) and the fixed fallback (fractions of the frame)
FACE_MOUTH_ROWS = (2 / 3, 1.0)
FACE_MOUTH_COLS = (0.25, 0.75)
FALLBACK_ROWS = (0.55, 0.85)
FALLBACK_COLS = (0.30, 0.70)
FALLBACK_REF_ROWS = (0.20, 0.55)  # reference brightness: the face above the mouth
REF_SIZE = (16, 16)
FALLBACK_FACE = "none found: fixed mouth region (lower centre)"

_cascade: cv2.CascadeClassifier | None = None


def _face_cascade() -> cv2.CascadeClassifier:
    global _cascade
    if _cascade is None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(f"could not load OpenCV's Haar face cascade from {path}")
        _cascade = cascade
    return _cascade


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    if len(frames) < MIN_FRAMES:
        raise ValueError(f"lip-sync scoring needs at least {MIN_FRAMES} frames (one 5-frame window), got {len(frames)}")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    return frames


def _detect_face(frame: np.ndarray) -> np.ndarray | None:
    """Largest face in an RGB frame as (x, y, w, h) in the frame's pixels, or None."""
    h, w = frame.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = frame if scale == 1.0 else cv2.resize(
        frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY))
    min_side = max(20, int(0.12 * min(gray.shape)))
    faces = _face_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
    return np.array([x, y, fw, fh], np.float64) / scale


def _median3(values: np.ndarray) -> np.ndarray:
    if len(values) < 3:
        return values
    padded = np.concatenate([values[:1], values, values[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def keyframe_face_boxes(frames: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Face boxes (x, y, w, h) at the frames `keys`, cleaned: a keyframe without a detection takes
    its nearest detection in time, then a 3-tap median over keyframes removes one-off false hits.
    Returns the (K, 4) boxes (None when no keyframe has a face) and the fraction of keyframes with one."""
    found = [_detect_face(frames[i]) for i in keys]
    hits = np.array([f is not None for f in found])
    if not hits.any():
        return None, 0.0
    hit_keys, hit_boxes = keys[hits], np.stack([f for f in found if f is not None])
    nearest = np.abs(keys[:, None] - hit_keys[None, :]).argmin(axis=1)
    return np.stack([_median3(hit_boxes[nearest, c]) for c in range(4)], axis=1), float(hits.mean())


def _regions(frames: np.ndarray, detect_face: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-frame mouth and reference regions, each (T, 4) integer (x0, y0, x1, y1), and the face description."""
    t, h, w = frames.shape[:3]
    keys = np.arange(0, t, DETECT_EVERY)
    key_boxes, fraction = keyframe_face_boxes(frames, keys) if detect_face else (None, 0.0)
    if key_boxes is not None and fraction >= MIN_FACE_FRACTION:
        boxes = np.stack([np.interp(np.arange(t), keys, key_boxes[:, c]) for c in range(4)], axis=1)
        x, y, bw, bh = boxes.T
        mouth = np.stack([
            x + FACE_MOUTH_COLS[0] * bw, y + FACE_MOUTH_ROWS[0] * bh,
            x + FACE_MOUTH_COLS[1] * bw, y + FACE_MOUTH_ROWS[1] * bh,
        ], axis=1)
        reference = np.stack([x, y, x + bw, y + FACE_MOUTH_ROWS[0] * bh], axis=1)
        face = f"haar: face in {round(100 * fraction)}% of sampled frames"
    else:
        mouth = np.tile([FALLBACK_COLS[0] * w, FALLBACK_ROWS[0] * h, FALLBACK_COLS[1] * w, FALLBACK_ROWS[1] * h], (t, 1))
        reference = np.tile([FALLBACK_COLS[0] * w, FALLBACK_REF_ROWS[0] * h, FALLBACK_COLS[1] * w, FALLBACK_REF_ROWS[1] * h], (t, 1))
        face = FALLBACK_FACE
        if key_boxes is not None:
            face = f"none found reliably (face in {round(100 * fraction)}% of sampled frames): fixed mouth region (lower centre)"
    return _clip_regions(mouth, w, h), _clip_regions(reference, w, h), face


def _clip_regions(regions: np.ndarray, w: int, h: int) -> np.ndarray:
    """Round to pixels, clip to the frame, and keep at least 2x2 pixels."""
    regions = np.round(np.asarray(regions, np.float64)).astype(np.int64)
    for lo, hi, size in ((0, 2, w), (1, 3, h)):
        regions[:, lo] = np.clip(regions[:, lo], 0, max(0, size - 2))
        regions[:, hi] = np.clip(regions[:, hi], regions[:, lo] + 2, size)
    return regions


def mouth_boxes(frames: np.ndarray, detect_face: bool = True) -> tuple[np.ndarray, str]:
    """Per-frame mouth region (T, 4) as integer (x0, y0, x1, y1) and a description of how it was found."""
    mouth, _, face = _regions(_check_frames(frames), detect_face)
    return mouth, face


def _gray_patch(frame: np.ndarray, region, size) -> np.ndarray:
    x0, y0, x1, y1 = region
    crop = cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)


def mouth_patches(frames: np.ndarray, detect_face: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Grayscale mouth regions resized to ROI_SIZE, float32 (T, 16, 32) in 0..255; the mean gray level
    of each frame's reference region (T,); and the face description."""
    frames = _check_frames(frames)
    mouth, reference, face = _regions(frames, detect_face)
    patches = np.stack([_gray_patch(frames[i], mouth[i], ROI_SIZE) for i in range(len(frames))])
    ref = np.array([_gray_patch(frames[i], reference[i], REF_SIZE).mean() for i in range(len(frames))])
    return patches, ref, face


def _highpass(signal: np.ndarray, frames: int = HIGHPASS_FRAMES) -> np.ndarray:
    """Subtract a centred moving average (edge-padded) of `frames` frames."""
    signal = np.asarray(signal, np.float64)
    if len(signal) < 2:
        return signal - signal.mean()
    half = min(frames // 2, len(signal) - 1)
    padded = np.pad(signal, half, mode="edge")
    kernel = np.ones(2 * half + 1) / (2 * half + 1)
    return signal - np.convolve(padded, kernel, mode="valid")


def _zscore(signal: np.ndarray) -> np.ndarray:
    signal = np.asarray(signal, np.float64)
    std = signal.std()
    if not np.isfinite(std) or std < 1e-6 * max(1.0, np.abs(signal).max()):
        return np.zeros_like(signal)
    return (signal - signal.mean()) / std


def mouth_signal(frames: np.ndarray, detect_face: bool = True) -> tuple[np.ndarray, str]:
    """Per-frame mouth opening (mouth-region darkness relative to the face, high-passed), float64 (T,),
    and the face description (see the module docstring).

    Larger = more open. `detect_face=False` skips the detector and uses the fixed fallback region.
    """
    patches, ref, face = mouth_patches(frames, detect_face)
    mouth = patches.reshape(len(patches), -1).mean(axis=1)
    darkness = np.log(ref + 1.0) - np.log(mouth + 1.0)
    return _highpass(darkness), face


def audio_signal(audio: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame speech loudness (dB, floored 40 dB below the loud frames, high-passed), float64 (frames,)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono 16 kHz samples (N,), got shape {audio.shape}")
    level = frame_loudness_db(audio, frames)
    floor = np.percentile(level, 95) - FLOOR_DB
    return _highpass(np.maximum(level, floor))


def windows(signal: np.ndarray, size: int = WINDOW) -> np.ndarray:
    """(T,) -> (T - size + 1, size): consecutive `size`-frame windows."""
    signal = np.asarray(signal, np.float64)
    return np.lib.stride_tricks.sliding_window_view(signal, size).copy()


def score_landmarks(frames: np.ndarray, audio: np.ndarray, detect_face: bool = True) -> tuple[SyncResult, str]:
    """Lip-sync of RGB frames (T, H, W, 3) uint8 at 25 fps against float32 16 kHz mono audio.

    Returns (SyncResult on the SyncNet protocol with offsets -15..+15, face description).
    Raises ValueError for fewer than 5 frames or frames that are not (T, H, W, 3).
    """
    frames = _check_frames(frames)
    video_sig, face = mouth_signal(frames, detect_face)
    audio_sig = audio_signal(audio, len(frames))
    result = sync_offset(windows(_zscore(video_sig)), windows(_zscore(audio_sig)), vshift=VSHIFT)
    return result, face
