"""Voices beyond the corpus's own: a wide random voice and the room/channel a recording went through.

The corpus draws one voice per identity from a fairly narrow range (avgen.data.speech.voice_for).
Recorded speech given to `avgen generate --audio` comes from any voice, microphone and room, so the
vocoder and the transformer are also trained on:

- `random_voice`: pitch 70-300 Hz, vocal tract 0.85-1.3x, spectral tilt, breathiness, jitter, accents;
- `augment_speech`: gain, added noise at 15-45 dB SNR, a band limit at 3.4-7 kHz and a short reverb;
- `synthetic_speech`: a whole utterance of a corpus sentence in a random voice at 0.75-1.35x rate.

All take an explicit numpy Generator (or seed), so the same arguments always give the same samples.
"""

from __future__ import annotations

import numpy as np

from avgen.data.corpus import SENTENCE_POOL, _draw, natural_seconds, sentence_split, sentence_text
from avgen.data.speech import Voice, synthesize
from avgen.phones import phone_timeline
from avgen.timeline import SAMPLE_RATE, SAMPLES_PER_FRAME


def random_voice(rng: np.random.Generator) -> Voice:
    """A voice from a wider range than the corpus's identities (avgen.data.speech.voice_for): pitch
    70-300 Hz, vocal tract 0.85-1.3x, spectral tilt, breathiness, jitter and pitch accents."""
    return Voice(
        f0=float(np.exp(rng.uniform(np.log(70), np.log(300)))),
        formant_scale=float(rng.uniform(0.85, 1.3)),
        tilt=float(rng.uniform(0.7, 1.6)),
        breathiness=float(10 ** (rng.uniform(-40, -14) / 20)),
        jitter=float(rng.uniform(0.003, 0.02)),
        accent=float(rng.uniform(0.04, 0.2)),
    )


def augment_speech(
    wave: np.ndarray, rng: np.random.Generator, gain_db: tuple[float, float] = (-18.0, 6.0)
) -> np.ndarray:
    """The waveform as another room and channel would give it: a short exponentially decaying reverb
    (a quarter of the time), a low-pass at 3.4-7 kHz (a third), noise at 15-45 dB SNR (half; white or
    low-tilted), then a gain drawn from `gain_db` (peak kept under 0.98). Same length, float32."""
    x = wave.astype(np.float64)
    if rng.random() < 0.25:  # reverb: noise impulse response with RT60 0.1-0.5 s, mixed 10-40 % wet
        rt60 = rng.uniform(0.1, 0.5)
        t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
        ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
        ir /= np.sqrt((ir**2).sum())
        wet = np.fft.irfft(np.fft.rfft(x, len(x) + len(ir)) * np.fft.rfft(ir, len(x) + len(ir)))[: len(x)]
        mix = rng.uniform(0.1, 0.4)
        x = (1 - mix) * x + mix * wet
    if rng.random() < 0.33:  # band limit
        spec = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
        spec /= np.sqrt(1 + (freqs / rng.uniform(3400, 7000)) ** 8)
        x = np.fft.irfft(spec, len(x))
    if rng.random() < 0.5:  # noise
        noise = rng.standard_normal(len(x))
        if rng.random() < 0.5:
            spec = np.fft.rfft(noise)
            spec /= np.sqrt(1 + np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE) / 300)
            noise = np.fft.irfft(spec, len(x))
        power = max(np.mean(x**2), 1e-10)
        noise *= np.sqrt(power / np.mean(noise**2) / 10 ** (rng.uniform(15, 45) / 10))
        x = x + noise
    x *= 10 ** (rng.uniform(*gain_db) / 20)
    peak = np.abs(x).max()
    if peak > 0.98:
        x *= 0.98 / peak
    return x.astype(np.float32)


def synthetic_speech(split: str, index: int, seed: int = 0) -> np.ndarray:
    """(640*T,) float32: utterance `index` of a data stream `seed`: a sentence of the corpus's `split`
    (train sentences for training, held-out ones for benchmarks), a `random_voice`, and a speaking rate
    0.75-1.35x natural. The same arguments always give the same waveform."""
    rng = np.random.default_rng([0x70C0DE, int(seed), ("train", "heldout").index(split), int(index)])
    text = sentence_text(_draw(rng, SENTENCE_POOL, sentence_split, split))
    seconds = max(0.2, natural_seconds(text) / rng.uniform(0.75, 1.35))
    n = max(1, round(seconds * SAMPLE_RATE / SAMPLES_PER_FRAME)) * SAMPLES_PER_FRAME
    phones = phone_timeline(text, n / SAMPLE_RATE)
    emphasis = np.array([float(rng.random() < 0.35) for _ in phones])
    return synthesize(phones, n, random_voice(rng), rng, question=text.endswith("?"), emphasis=emphasis)
