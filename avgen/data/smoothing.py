"""Gaussian smoothing of control tracks (mouth shapes, formants, pitch), shared by faces and speech."""

from __future__ import annotations

import math

import numpy as np


def gaussian_kernel(sigma_steps: float) -> np.ndarray:
    r = max(1, int(math.ceil(3 * sigma_steps)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_steps) ** 2)
    return k / k.sum()


def smooth(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve along axis 0 with edge padding (so clip edges are not pulled toward zero)."""
    r = len(kernel) // 2
    padded = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    if x.ndim == 1:
        return np.convolve(padded, kernel, mode="valid")
    return np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(x.shape[1])], axis=1)
