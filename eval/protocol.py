"""The SyncNet offset protocol (Chung & Zisserman 2016; syncnet_python's calc_pdist), shared by
every sync backend: per-frame video and audio features in, offset / distance / confidence out.

For each video frame i and offset index j in 0..2*vshift, the distance between video feature i and
audio feature i + j - vshift (audio zero-padded at both ends); mean over frames per offset;
offset = vshift - argmin, so delaying the audio by k frames changes the offset by -k;
LSE-D = the minimum mean distance; LSE-C = median - minimum.

`pad_audio=False` (the landmarks backend) averages each offset over the frames whose shifted audio
exists instead of comparing the video with the zeros padded in: see sync_offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VSHIFT = 15  # offsets -15..+15 frames


@dataclass
class SyncResult:
    av_offset_frames: int
    sync_distance: float  # LSE-D: mean distance at the best offset (lower = closer)
    sync_confidence: float  # LSE-C: median - minimum of the mean distances (higher = surer)
    offsets: np.ndarray  # (2*vshift+1,) the reported offset of each entry of `mean_distances`
    mean_distances: np.ndarray  # (2*vshift+1,) mean distance per offset index j
    frame_confidence: np.ndarray  # (N,) median of mean distances - frame's distance at the best offset


def pairwise_distances(video: np.ndarray, audio: np.ndarray, vshift: int = VSHIFT) -> np.ndarray:
    """(N, D), (N, D) -> (N, 2*vshift+1): dists[i, j] = ||video[i] - audio[i + j - vshift]|| (zero-padded)."""
    n = len(video)
    padded = np.concatenate([np.zeros((vshift, audio.shape[1])), audio, np.zeros((vshift, audio.shape[1]))])
    windows = np.stack([padded[j : j + n] for j in range(2 * vshift + 1)], axis=1)  # (N, 2v+1, D)
    # torch.nn.functional.pairwise_distance adds eps=1e-6 to the difference, as the reference does
    return np.sqrt((((video[:, None, :] - windows) + 1e-6) ** 2).sum(-1))


def overlap_mask(n: int, vshift: int = VSHIFT) -> np.ndarray:
    """(n, 2*vshift+1) bool: whether audio feature i + j - vshift exists (is not padding)."""
    shifted = np.arange(n)[:, None] + np.arange(2 * vshift + 1)[None, :] - vshift
    return (shifted >= 0) & (shifted < n)


def sync_offset(video: np.ndarray, audio: np.ndarray, vshift: int = VSHIFT, pad_audio: bool = True) -> SyncResult:
    """The protocol on (N, D) video and audio features. `pad_audio=True` is the reference: every offset
    is the mean over all N frames, the shifted-out ones compared with zero features. `pad_audio=False`
    takes each offset's mean over the frames where the shifted audio exists only; an offset with none
    (N <= |offset|) keeps its padded mean in `mean_distances` but is neither chosen nor in the median.
    For scalar z-scored signals (the landmarks backend) a zero window is nearer a resting mouth than
    mismatched speech is, which pulled weak clips to the edges (measured in eval/README.md)."""
    video, audio = np.asarray(video, np.float64), np.asarray(audio, np.float64)
    if video.shape != audio.shape or video.ndim != 2 or len(video) == 0:
        raise ValueError(f"video {video.shape} and audio {audio.shape} features must both be (N, D), N >= 1")
    dists = pairwise_distances(video, audio, vshift)
    mean = dists.mean(axis=0)
    if not pad_audio:
        valid = overlap_mask(len(video), vshift)
        counts = valid.sum(axis=0)
        mean = np.where(counts > 0, (dists * valid).sum(axis=0) / np.maximum(counts, 1), mean)
        chosen = counts > 0  # offset 0 always is
    else:
        chosen = np.ones(len(mean), bool)
    best = int(np.flatnonzero(chosen)[np.argmin(mean[chosen])])
    median = float(np.median(mean[chosen]))
    return SyncResult(
        av_offset_frames=vshift - best,
        sync_distance=float(mean[best]),
        sync_confidence=median - float(mean[best]),
        offsets=vshift - np.arange(2 * vshift + 1),
        mean_distances=mean,
        frame_confidence=median - dists[:, best],
    )
