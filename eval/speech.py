"""Speech activity on the 40 ms frame grid: loudness envelope and the fraction of frames with speech.

Windows without speech carry no lip-sync information, so every sync score reports how much of
the clip had speech.
"""

from __future__ import annotations

import numpy as np

FPS = 25
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
SILENCE_DBFS = -45.0  # absolute floor: quieter than this is silence whatever the clip
RELATIVE_DB = 30.0  # and frames 30 dB below the clip's loud frames are pauses
NEARLY_SILENT = 0.1  # below this speech fraction a sync score means little


def frame_loudness_db(audio: np.ndarray, frames: int) -> np.ndarray:
    """RMS level in dBFS of each 40 ms frame of 16 kHz audio (zero-padded/cut to `frames`)."""
    audio = np.asarray(audio, dtype=np.float64)
    padded = np.zeros(frames * SAMPLES_PER_FRAME)
    padded[: min(len(audio), len(padded))] = audio[: len(padded)]
    rms = np.sqrt((padded.reshape(frames, SAMPLES_PER_FRAME) ** 2).mean(axis=1))
    return 20 * np.log10(rms + 1e-8)


def speech_frames(audio: np.ndarray, frames: int) -> np.ndarray:
    """Bool (frames,): frames loud enough to be speech."""
    level = frame_loudness_db(audio, frames)
    if frames == 0:
        return np.zeros(0, dtype=bool)
    loud = np.percentile(level, 95)
    return (level > SILENCE_DBFS) & (level > loud - RELATIVE_DB)


def speech_fraction(audio: np.ndarray, frames: int) -> float:
    active = speech_frames(audio, frames)
    return float(active.mean()) if len(active) else 0.0
