"""A deterministic synthetic talking head, for testing lip-sync scorers and sanity-checking them.

`drawn_talking_head(seconds, seed)` returns 25 fps RGB frames of a simple drawn face (skin-coloured
ellipse, hair, eyes, brows, nose, a mouth) and 16 kHz speech-like audio. The mouth opens with the
audio's energy in the same 40 ms frame, so the clip is in sync by construction; pass
`audio_delay_frames=k` to make the audio k frames late (k < 0: early) and a correct scorer reports
offset -k (SyncNet sign convention, see eval.protocol).

The audio is voiced bursts: a harmonic tone (f0 100-220 Hz drifting slowly, 10 harmonics, a short
noise burst at some syllable onsets like a consonant) whose amplitude follows syllables of random
length (80-300 ms) separated by random gaps (20-80 ms) and pauses (150-600 ms), so the syllable rate
is about 3-5 Hz but the envelope is not periodic (a periodic envelope would make offsets ambiguous).

Geometry (fractions of the frame size S): face ellipse centred at (0.50 S, 0.48 S) with half-axes
0.30 S x 0.40 S; mouth centred at (0.50 S, 0.70 S), 0.20 S wide, opening up to 0.15 S. The mouth lies
inside the fixed fallback mouth region of eval.landmarks (rows 55-85 %, columns 30-70 %).
"""

from __future__ import annotations

import cv2
import numpy as np

from eval.speech import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel mouth openings, smooth at 64x64
_ONE = 1 << _SHIFT

SKIN = (226, 178, 146)
HAIR = (70, 46, 32)
LIPS = (176, 78, 84)
MOUTH_INSIDE = (52, 16, 22)
BACKGROUND = (92, 112, 138)


def _speech(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Speech-like audio of `seconds`; generated syllable by syllable, so a longer request
    returns the same audio with more appended (prefix-stable for a given rng state)."""
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0_base = rng.uniform(100, 220)
    drift_rate, drift_phase = rng.uniform(0.2, 0.6), rng.uniform(0, 2 * np.pi)
    f0 = f0_base * (1 + 0.12 * np.sin(2 * np.pi * drift_rate * t + drift_phase))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    harmonics = np.arange(1, 11)
    weights = 1.0 / harmonics
    carrier = (weights[:, None] * np.sin(harmonics[:, None] * phase[None, :])).sum(0)
    carrier /= np.abs(carrier).max()

    envelope = np.zeros(n)
    audio = np.zeros(n)
    pos = int(rng.uniform(0.1, 0.3) * SAMPLE_RATE)  # start with a short silence
    while pos < n:
        length = int(rng.uniform(0.08, 0.30) * SAMPLE_RATE)
        amp = rng.uniform(0.35, 1.0)
        x = np.linspace(0, 1, length)
        peak = rng.uniform(0.25, 0.6)  # asymmetric rise/fall
        shape = np.where(x < peak, np.sin(np.pi / 2 * x / peak), np.cos(np.pi / 2 * (x - peak) / (1 - peak)))
        shape = amp * np.clip(shape, 0, 1) ** 1.5
        consonant = rng.random() < 0.4
        burst = rng.standard_normal(min(length, int(0.03 * SAMPLE_RATE)))
        end = min(n, pos + length)
        envelope[pos:end] = np.maximum(envelope[pos:end], shape[: end - pos])
        if consonant:
            b_end = min(n, pos + len(burst))
            audio[pos:b_end] += 0.08 * amp * burst[: b_end - pos] * np.hanning(len(burst))[: b_end - pos]
        gap = rng.uniform(0.15, 0.6) if rng.random() < 0.25 else rng.uniform(0.02, 0.08)
        pos += length + int(gap * SAMPLE_RATE)
    audio += envelope * carrier
    return (0.5 * audio / max(np.abs(audio).max(), 1e-9)).astype(np.float32)


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _ax(a: float, b: float) -> tuple[int, int]:
    return max(1, int(round(a * _ONE))), max(1, int(round(b * _ONE)))


def _ellipse(img, centre, axes, color, thickness=-1):
    cv2.ellipse(img, _pt(*centre), _ax(*axes), 0, 0, 360, color, thickness, cv2.LINE_AA, _SHIFT)


def _static_face(size: int) -> np.ndarray:
    s = float(size)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUND
    # shoulders, hair behind the head, face, ears
    _ellipse(img, (0.5 * s, 1.05 * s), (0.42 * s, 0.22 * s), (60, 70, 96))
    _ellipse(img, (0.5 * s, 0.40 * s), (0.33 * s, 0.36 * s), HAIR)
    _ellipse(img, (0.20 * s, 0.50 * s), (0.04 * s, 0.07 * s), SKIN)
    _ellipse(img, (0.80 * s, 0.50 * s), (0.04 * s, 0.07 * s), SKIN)
    _ellipse(img, (0.5 * s, 0.48 * s), (0.30 * s, 0.40 * s), SKIN)
    # fringe
    cv2.ellipse(img, _pt(0.5 * s, 0.20 * s), _ax(0.27 * s, 0.12 * s), 0, 180, 360, HAIR, -1, cv2.LINE_AA, _SHIFT)
    for side in (-1, 1):
        ex = 0.5 * s + side * 0.12 * s
        _ellipse(img, (ex, 0.30 * s), (0.07 * s, 0.015 * s), HAIR)  # brow
        _ellipse(img, (ex, 0.39 * s), (0.065 * s, 0.035 * s), (245, 245, 240))  # eye white
        _ellipse(img, (ex, 0.39 * s), (0.03 * s, 0.03 * s), (40, 30, 25))  # iris
        _ellipse(img, (ex, 0.39 * s), (0.06 * s, 0.03 * s), (150, 100, 80), max(1, size // 128))  # lid line
    # nose: shading and nostrils
    _ellipse(img, (0.5 * s, 0.53 * s), (0.035 * s, 0.06 * s), (206, 154, 124))
    _ellipse(img, (0.48 * s, 0.575 * s), (0.012 * s, 0.008 * s), (120, 70, 60))
    _ellipse(img, (0.52 * s, 0.575 * s), (0.012 * s, 0.008 * s), (120, 70, 60))
    # chin shading
    cv2.ellipse(
        img, _pt(0.5 * s, 0.80 * s), _ax(0.16 * s, 0.06 * s), 0, 0, 180, (212, 162, 130), -1, cv2.LINE_AA, _SHIFT
    )
    return img


def _draw_mouth(img: np.ndarray, opening: float) -> None:
    """opening in [0, 1]: 0 closed lips, 1 wide open."""
    s = float(img.shape[0])
    cx, cy = 0.5 * s, 0.70 * s
    half_w = 0.10 * s * (1 - 0.15 * opening)  # the mouth narrows a little as it opens
    half_h = 0.075 * s * opening
    _ellipse(img, (cx, cy), (half_w + 0.012 * s, half_h + 0.018 * s), LIPS)
    if half_h > 0.004 * s:
        _ellipse(img, (cx, cy), (half_w * 0.9, half_h), MOUTH_INSIDE)
        # upper teeth: a light band under the top lip when the mouth is open enough
        if half_h > 0.03 * s:
            cv2.ellipse(
                img,
                _pt(cx, cy - half_h * 0.55),
                _ax(half_w * 0.6, half_h * 0.3),
                0,
                0,
                180,
                (235, 230, 220),
                -1,
                cv2.LINE_AA,
                _SHIFT,
            )
    else:
        cv2.line(
            img, _pt(cx - half_w, cy), _pt(cx + half_w, cy), MOUTH_INSIDE, max(1, int(s) // 64), cv2.LINE_AA, _SHIFT
        )


def mouth_openings(audio: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame mouth opening in [0, 1] from the RMS energy of each 40 ms frame of `audio`."""
    padded = np.zeros(frames * SAMPLES_PER_FRAME)
    padded[: min(len(audio), len(padded))] = audio[: len(padded)]
    rms = np.sqrt((padded.reshape(frames, SAMPLES_PER_FRAME) ** 2).mean(axis=1))
    ref = np.percentile(rms, 98) if frames else 0.0
    if ref <= 1e-6:
        return np.zeros(frames)
    return np.clip(rms / ref, 0, 1) ** 0.75


def drawn_talking_head(
    seconds: float,
    seed: int = 0,
    size: int = 64,
    audio_delay_frames: int = 0,
    noise: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """A drawn face talking in sync with speech-like audio.

    Returns (frames uint8 (T, size, size, 3) RGB at 25 fps, audio float32 (T * 640,) at 16 kHz),
    T = round(seconds * 25). The mouth opening of frame t follows the audio energy of frame t of the
    undelayed audio; `audio_delay_frames=k` then makes the audio k frames late (silence padded at
    the start, the end cut) or, for k < 0, |k| frames early (the speech continues past the end).
    `noise` is the std of deterministic Gaussian pixel noise (camera-like), 0 for none.
    Same arguments, same output.
    """
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    frames_n = int(round(seconds * FPS))
    if frames_n < 1:
        raise ValueError(f"seconds must give at least one 40 ms frame, got {seconds}")
    rng = np.random.default_rng(seed)
    k = int(audio_delay_frames)
    n = frames_n * SAMPLES_PER_FRAME
    # speech for the clip plus what an early (k < 0) audio track needs past the end
    speech = _speech((frames_n + max(0, -k)) / FPS, rng)
    opening = mouth_openings(speech, frames_n)

    base = _static_face(size)
    noise_rng = np.random.default_rng([seed, 1])
    frames = np.empty((frames_n, size, size, 3), np.uint8)
    for i in range(frames_n):
        img = base.copy()
        _draw_mouth(img, float(opening[i]))
        if noise > 0:
            img = np.clip(img + noise_rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        frames[i] = img

    if k >= 0:
        audio = np.concatenate([np.zeros(k * SAMPLES_PER_FRAME, np.float32), speech])[:n]
    else:
        audio = speech[-k * SAMPLES_PER_FRAME :][:n]
    return frames, np.ascontiguousarray(audio, dtype=np.float32)
