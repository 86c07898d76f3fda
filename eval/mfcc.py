"""MFCCs exactly as python_speech_features.mfcc computes them with its defaults (the features
syncnet_python feeds SyncNet), in numpy only.

25 ms frames every 10 ms (lengths rounded half-up to samples; the last frame zero-padded, at least
one frame), pre-emphasis 0.97, no window, power spectrum |rfft(frame, 512)|^2 / 512, 26 triangular
mel filters on floor()-ed FFT bins, zeros replaced by machine eps before the log, orthonormal
DCT-II, first 13 kept, sinusoidal lifter 22, and c0 replaced by the log of the frame energy.
"""

from __future__ import annotations

import decimal
import functools
import math

import numpy as np

EPS = np.finfo(float).eps


def _round_half_up(x: float) -> int:
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def _frames(signal: np.ndarray, frame_len: int, frame_step: int) -> np.ndarray:
    n = len(signal)
    count = 1 if n <= frame_len else 1 + math.ceil((n - frame_len) / frame_step)
    padded = np.concatenate([signal, np.zeros((count - 1) * frame_step + frame_len - n)])
    index = np.arange(frame_len)[None, :] + frame_step * np.arange(count)[:, None]
    return padded[index]


@functools.lru_cache(maxsize=8)
def _mel_filterbank(nfilt: int, nfft: int, samplerate: int, lowfreq: float, highfreq: float) -> np.ndarray:
    def hz2mel(hz):
        return 2595 * np.log10(1 + hz / 700.0)

    mels = np.linspace(hz2mel(lowfreq), hz2mel(highfreq), nfilt + 2)
    bins = np.floor((nfft + 1) * (700 * (10 ** (mels / 2595.0) - 1)) / samplerate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb


@functools.lru_cache(maxsize=8)
def _dct_ortho(n_in: int, n_out: int) -> np.ndarray:
    """(n_in, n_out) matrix of the orthonormal DCT-II (scipy's dct(type=2, norm='ortho'))."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    scale = np.where(k == 0, math.sqrt(1.0 / n_in), math.sqrt(2.0 / n_in))
    return scale * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


def mfcc(
    signal: np.ndarray,
    samplerate: int = 16000,
    winlen: float = 0.025,
    winstep: float = 0.01,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    lowfreq: float = 0,
    highfreq: float | None = None,
    preemph: float = 0.97,
    ceplifter: int = 22,
) -> np.ndarray:
    """(samples,) -> (frames, numcep) float64, equal to python_speech_features.mfcc(signal, samplerate).

    Scale matters for c0 only: syncnet_python passes int16 sample values (see syncnet.score_syncnet).
    """
    signal = np.asarray(signal, dtype=np.float64).reshape(-1)
    if len(signal) == 0:
        raise ValueError("mfcc: empty signal")
    highfreq = highfreq or samplerate / 2
    emphasised = np.append(signal[0], signal[1:] - preemph * signal[:-1])
    frames = _frames(emphasised, _round_half_up(winlen * samplerate), _round_half_up(winstep * samplerate))
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, EPS, energy)
    feat = power @ _mel_filterbank(nfilt, nfft, samplerate, lowfreq, highfreq).T
    feat = np.where(feat == 0, EPS, feat)
    cep = np.log(feat) @ _dct_ortho(nfilt, numcep)
    if ceplifter > 0:
        cep = cep * (1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
    cep[:, 0] = np.log(energy)
    return cep
