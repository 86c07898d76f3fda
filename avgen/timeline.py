"""The shared audio-video timeline: every modality is indexed by 40 ms frames.

Video runs at 25 fps; audio at 16 kHz is 640 samples per video frame; the audio codec emits one
latent per video frame (25 per second), so audio latent j and video frame j cover the same 40 ms.
"""

import numpy as np

FPS = 25
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MEL_HOP = 160  # 100 mel frames per second
MELS_PER_FRAME = SAMPLES_PER_FRAME // MEL_HOP  # 4
MP4_AUDIO_RATE = 48_000  # AAC frames are 1024 samples: 21 ms at 48 kHz (64 ms at 16 kHz)


def frames_for_seconds(seconds: float) -> int:
    return round(seconds * FPS)


def frames_for_samples(samples: int) -> int:
    """The whole frames that `samples` of 16 kHz audio make: the nearest count, at least one."""
    return max(1, round(samples / SAMPLES_PER_FRAME))


def fit_samples(audio, samples: int) -> np.ndarray:
    """float32 `audio` cut or zero-padded at its end to exactly `samples`."""
    out = np.zeros(samples, np.float32)
    given = np.asarray(audio, np.float32)[:samples]
    out[: len(given)] = given
    return out
