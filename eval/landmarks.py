"""The `landmarks` lip-sync backend: no weight file to fetch, works out of the box on real faces (the default).

Pipeline (25 fps RGB frames, 16 kHz mono audio):

1. Face and lips (avgen.face_landmarks): MediaPipe's BlazeFace short-range detector on every 5th
   frame (and the last), its box and eye angle tracked between, and MediaPipe's 468-point face mesh
   on every frame's upright crop of 1.5x the box (both models ship with avgen, Apache-2.0; run with
   ai-edge-litert). Where BlazeFace finds nothing, the mesh runs on the whole frame (talking-head
   clips are face-centred crops). The `face` string says which, e.g. "blazeface: face in 100% of
   sampled frames; face mesh sure of a face in 100% of frames"; it is never an error.
2. Mouth signal (`mouth_signal`): the lip opening, inner-lip gap (landmarks 13, 14) over the outer
   eye-corner distance, smoothed 1-2-1 over 3 frames (landmark jitter), high-passed (a centred
   0.76 s moving average subtracted: slow drift, head turns and pose change the ratio far more
   slowly than syllables do). The opening itself, not its motion: pairing motion with the loudness
   derivative (as extra window dimensions) did not improve the offsets on drawn or real clips.
3. Audio signal (`audio_signal`): the speech loudness in the 1-3 kHz band (the second-formant region,
   whose envelope follows the lip opening best; broadband loudness is dominated by the voice's
   low harmonics and follows the lips worse on real speech) on the same 40 ms grid: a Hann-windowed
   FFT of each frame's 640 samples, dB, floored 40 dB below the clip's loud (95th percentile)
   frames, high-passed the same way.
4. Comparison: both signals are z-scored, cut into 5-frame windows (features of shape (T-4, 5)) and
   compared with eval.protocol.sync_offset over offsets -15..+15 frames as SyncNet's embeddings are:
   offset = 15 - argmin of the mean distance (delaying the audio by k frames changes the offset by
   -k), distance = that minimum (LSE-D-like), confidence = median - minimum (LSE-C-like). One
   difference (since 2026-12-01): each offset's mean is over the frames where the shifted audio
   exists (`pad_audio=False`), not over zero windows padded in, which lie nearer a resting mouth than
   mismatched speech does and pulled weakly synced clips to offsets of 10-15 frames
   (`scripts/landmarks_protocol.py`; eval/README.md). The numbers are on this backend's own scale
   (distances between z-scored 5-frame windows), not comparable with published SyncNet values.

A clip with no speech (or a motionless mouth) gives a constant signal, whose z-score is all zeros:
every offset is then equally far and the confidence is ~0.

`mouth_patches` is not part of this backend: it is the learned scorer's input (eval.learned), the
grayscale mouth region under a Haar face box (avgen.face_landmarks.keyframe_face_boxes) or a fixed
lower-centre region, kept exactly as the shipped learned weights were trained on.
"""

from __future__ import annotations

import cv2
import numpy as np

from avgen.face_landmarks import DETECT_EVERY, face_mesh, keyframe_face_boxes, lip_opening
from eval.protocol import VSHIFT, SyncResult, sync_offset
from eval.speech import SAMPLE_RATE, SAMPLES_PER_FRAME

MIN_FRAMES = 5  # one 5-frame window
WINDOW = 5
MIN_FACE_FRACTION = 0.25  # a face found in fewer sampled frames than this is not trusted
ROI_SIZE = (32, 16)  # (width, height) the mouth region is resized to
HIGHPASS_FRAMES = 19  # subtract a centred 0.76 s moving average from both signals
FLOOR_DB = 40.0  # loudness floor below the clip's loud (95th percentile) frames
BAND_HZ = (1000.0, 3000.0)  # the loudness band the lip opening is compared with

# mouth region inside a face box (fractions of the box) and the fixed fallback (fractions of the frame)
FACE_MOUTH_ROWS = (2 / 3, 1.0)
FACE_MOUTH_COLS = (0.25, 0.75)
FALLBACK_ROWS = (0.55, 0.85)
FALLBACK_COLS = (0.30, 0.70)
FALLBACK_REF_ROWS = (0.20, 0.55)  # reference brightness: the face above the mouth
REF_SIZE = (16, 16)
FALLBACK_FACE = "none found: fixed mouth region (lower centre)"


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    if len(frames) < MIN_FRAMES:
        raise ValueError(f"lip-sync scoring needs at least {MIN_FRAMES} frames (one 5-frame window), got {len(frames)}")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    return frames


def _regions(frames: np.ndarray, detect_face: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-frame mouth and reference regions (for `mouth_patches`), each (T, 4) integer (x0, y0, x1, y1),
    and the face description: the lower third of a Haar face box, or a fixed lower-centre region."""
    t, h, w = frames.shape[:3]
    keys = np.arange(0, t, DETECT_EVERY)
    key_boxes, fraction = keyframe_face_boxes(frames, keys) if detect_face else (None, 0.0)
    if key_boxes is not None and fraction >= MIN_FACE_FRACTION:
        boxes = np.stack([np.interp(np.arange(t), keys, key_boxes[:, c]) for c in range(4)], axis=1)
        x, y, bw, bh = boxes.T
        mouth = np.stack(
            [
                x + FACE_MOUTH_COLS[0] * bw,
                y + FACE_MOUTH_ROWS[0] * bh,
                x + FACE_MOUTH_COLS[1] * bw,
                y + FACE_MOUTH_ROWS[1] * bh,
            ],
            axis=1,
        )
        reference = np.stack([x, y, x + bw, y + FACE_MOUTH_ROWS[0] * bh], axis=1)
        face = f"haar: face in {round(100 * fraction)}% of sampled frames"
    else:
        mouth = np.tile(
            [FALLBACK_COLS[0] * w, FALLBACK_ROWS[0] * h, FALLBACK_COLS[1] * w, FALLBACK_ROWS[1] * h], (t, 1)
        )
        reference = np.tile(
            [FALLBACK_COLS[0] * w, FALLBACK_REF_ROWS[0] * h, FALLBACK_COLS[1] * w, FALLBACK_REF_ROWS[1] * h], (t, 1)
        )
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


def _smooth3(signal: np.ndarray) -> np.ndarray:
    """1-2-1 smoothing over 3 frames (edges repeated)."""
    padded = np.pad(np.asarray(signal, np.float64), 1, mode="edge")
    return np.convolve(padded, [0.25, 0.5, 0.25], mode="valid")


def mouth_signal(frames: np.ndarray, detect_face: bool = True) -> tuple[np.ndarray, str]:
    """Per-frame lip opening (face-mesh inner-lip gap over the eye-corner distance, smoothed and
    high-passed), float64 (T,), and the face description (see the module docstring).

    Larger = more open. `detect_face=False` skips the face detector: the mesh sees the whole frame.
    """
    points, _, face = face_mesh(_check_frames(frames), detect=detect_face)
    return _highpass(_smooth3(lip_opening(points))), face


def band_loudness_db(audio: np.ndarray, frames: int, band: tuple[float, float] = BAND_HZ) -> np.ndarray:
    """Level in dB of each 40 ms frame's energy in `band` (Hz): Hann-windowed FFT of the frame's
    samples (audio zero-padded/cut to `frames`), float64 (frames,)."""
    padded = np.zeros(frames * SAMPLES_PER_FRAME)
    padded[: min(len(audio), len(padded))] = audio[: len(padded)]
    spectrum = np.abs(np.fft.rfft(padded.reshape(frames, SAMPLES_PER_FRAME) * np.hanning(SAMPLES_PER_FRAME))) ** 2
    hz = np.fft.rfftfreq(SAMPLES_PER_FRAME, 1 / SAMPLE_RATE)
    return 10 * np.log10(spectrum[:, (hz >= band[0]) & (hz < band[1])].sum(axis=1) + 1e-10)


def audio_signal(audio: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame speech loudness in the 1-3 kHz band (dB, floored 40 dB below the loud frames,
    high-passed), float64 (frames,)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono 16 kHz samples (N,), got shape {audio.shape}")
    level = band_loudness_db(audio.astype(np.float64), frames)
    floor = np.percentile(level, 95) - FLOOR_DB
    return _highpass(np.maximum(level, floor))


def windows(signal: np.ndarray, size: int = WINDOW) -> np.ndarray:
    """(T,) -> (T - size + 1, size): consecutive `size`-frame windows."""
    signal = np.asarray(signal, np.float64)
    return np.lib.stride_tricks.sliding_window_view(signal, size).copy()


def features(signal: np.ndarray) -> np.ndarray:
    """(T,) per-frame signal -> (T - 4, 5): z-scored, in 5-frame windows (what the protocol compares)."""
    return windows(_zscore(signal))


def signal_features(video_signal: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features of a `mouth_signal` (T,) and of float32 16 kHz mono audio (any length: zero-padded
    or cut to the T frames), as score_mouth_signal compares them."""
    return features(video_signal), features(audio_signal(audio, len(video_signal)))


def score_mouth_signal(video_signal: np.ndarray, audio: np.ndarray) -> SyncResult:
    """The SyncNet protocol on a `mouth_signal` (T,) against float32 16 kHz mono audio (any length:
    zero-padded or cut to the T frames), each offset over the frames where the shifted audio exists."""
    return sync_offset(*signal_features(video_signal, audio), vshift=VSHIFT, pad_audio=False)


def score_landmarks(frames: np.ndarray, audio: np.ndarray, detect_face: bool = True) -> tuple[SyncResult, str]:
    """Lip-sync of RGB frames (T, H, W, 3) uint8 at 25 fps against float32 16 kHz mono audio.

    Returns (SyncResult on the SyncNet protocol with offsets -15..+15, face description).
    Raises ValueError for fewer than 5 frames or frames that are not (T, H, W, 3).
    """
    video_sig, face = mouth_signal(frames, detect_face)
    return score_mouth_signal(video_sig, audio), face
