"""Flicker scores of any clip: VBench temporal flickering, Lai et al. warping error, audio seams.

Video metrics take uint8 RGB frames ``(T, H, W, 3)`` with ``T >= 2``; per-second curves have one
entry per whole or partial second (``ceil(T / fps)`` entries). The audio metric takes a mono
waveform. Nothing here imports avgen's model code.

Temporal flickering (VBench, Huang et al. 2024; ``vbench/temporal_flickering.py``)
    score = (255 - mean_t MAE(f_t, f_{t+1})) / 255, MAE over all pixels and channels.
    VBench computes one MAE per consecutive pair (``np.mean(cv2.absdiff(float32, float32))``) and
    then the mean over pairs. All pairs of a clip have the same size, so that is the mean over
    every pixel, channel and pair. Here |f_t - f_{t+1}| is taken exactly (cv2.absdiff on uint8
    yields 0..255 without wraparound) and summed exactly, so a static clip scores exactly 1.0
    (VBench's float32 mean may differ in the last bits). VBench decodes with OpenCV (BGR); the
    channel order does not change the mean. Higher is steadier: 1.0 = no change between frames.

Warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency";
``fast_blind_video_consistency``: compute_flow_occlusion.py, evaluate_WarpError.py, utils.py)
    For each pair (f_{t-1}, f_t), with F the flow f_{t-1} -> f_t and B the flow f_t -> f_{t-1}:
    warped(x) = f_t(x + F(x)) (frame t warped onto t-1; bilinear, border replicated, like
    FlowNet2's Resample2d), and x is occluded where
        |F(x) + B(x + F(x))|^2 > 0.01 (|F(x)|^2 + |B(x + F(x))|^2) + 0.5   (forward-backward check)
    or  |grad F_x(x)|^2 + |grad F_y(x)|^2 > 0.01 |F(x)|^2 + 0.002            (motion boundary),
    (Ruder et al. 2016, as in the reference's ``detect_occlusion``; forward differences).
    E_t = sum_{x, c} M(x) (warped - f_{t-1})^2 / (3 sum_x M(x)) with M = 1 - occlusion and pixel
    values in [0, 1]; E_t = 0 when every pixel is occluded (the reference's sum is then 0).
    warping_error = mean_t E_t. Lower is steadier.
    Differences from the paper's numbers: the reference uses FlowNet2 at full resolution; here the
    flow is OpenCV's classical Farneback (``FARNEBACK`` below) on grayscale frames downscaled so
    the long side is at most ``max_side`` (default 256) px, then resized back and rescaled to full
    resolution, where the warp and the error are computed. The occlusion mask is computed on the
    flow grid with the thresholds above in full-resolution pixels (flow vectors rescaled, gradients
    per full-resolution pixel) and upsampled (nearest); without downscaling it is the reference
    computation exactly. Classical flow is smoother and less accurate than FlowNet2: it spreads a
    moving object's motion ~10 px into its surroundings, so the mask marks a band around moving
    objects rather than the exact (dis)occluded strip, and more residual error remains. These
    values are comparable with each other but NOT with FlowNet2-based warping errors in papers.
    ``max_side`` trades accuracy for speed: the flow is most of the cost (two Farneback calls
    per pair).

Audio flicker (this project's definition)
    The audio (resampled to 16 kHz) is cut into 40 ms hops (640 samples) with 1024-sample Hann
    windows centred on the hop times i * 40 ms; only windows that lie wholly inside the audio are
    used (hops 1 .. (n - 512) // 640), so the clip's edges do not read as jumps. Per hop: a
    64-band log-mel spectrum m_i (torchaudio MelSpectrogram, dB, power normalised so a
    full-scale sine peaks near 0 dB) and the loudness L_i = 10 log10(total mel power) (dB); both
    floored at max(clip maximum - 80 dB, -100 dB) so silence and the empty bands of a tone are flat.
    Jump between hops i and i+1, placed at (i + 0.5) * 40 ms:
        j_i = mean_band |m_{i+1} - m_i| + |L_{i+1} - L_i|        (dB; a level step counts twice)
    Sound changes all the time, so a seam is a jump beyond the local typical range: with med_i and
    MAD_i the median and median absolute deviation of j over i-12 .. i+12 (about 1 s),
        e_i = max(0, j_i - (med_i + 3 * 1.4826 * MAD_i))         (dB)
    score = mean_i e_i (dB per 40 ms hop): about 0 for a continuous tone, a steady or slowly
    modulated sound, or stationary noise; clearly higher for clips with clicks, level steps or
    timbre changes (a tone spliced with phase/level jumps every second scores ~2.5 dB). Speech
    with pauses scores above 0 too (its onsets are abrupt), so compare clips of similar content.
    curve[s] = mean of e_i over the jumps placed in second s (0 where there are none);
    worst = the top_k largest e_i, at most one per +-80 ms, as (time in s, e_i in dB), largest
    first, only where e_i >= 0.1 dB.
    Silent audio scores 0.0 with no worst moments. Audio with fewer than two whole hops (shorter
    than 1792 samples, 112 ms, at 16 kHz) has no jumps: score 0.0, curve of zeros
    (ceil(duration) entries; empty for empty audio), worst [].
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "AudioFlicker",
    "audio_flicker",
    "farneback_flow",
    "occlusion_mask",
    "pair_warping_errors",
    "temporal_flickering",
    "temporal_flickering_curve",
    "warping_error",
    "warping_error_curve",
    "warping_error_with_curve",
]

# Farneback parameters: OpenCV's documented example values (pyr_scale 0.5, 3 levels, 15 px window,
# poly_n 5), with poly_sigma 1.1 as the OpenCV docs recommend for poly_n = 5, and 1 iteration per
# level: the flow is the cost of this metric, and 2-3 iterations took 1.5-2x the time for the same
# warping errors on translating textures (measured at 512x512 with flow at 256 px).
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=1, poly_n=5, poly_sigma=1.1, flags=0)

AUDIO_RATE = 16_000
HOP = 640  # 40 ms at 16 kHz: one video frame at 25 fps
N_FFT = 1024
N_MELS = 64
TOP_DB = 80.0  # floor relative to the clip's loudest band / hop
ABS_FLOOR_DB = -100.0  # absolute floor (a full-scale sine is ~0 dB)
MEDIAN_HALF = 12  # local median over 25 jumps (~1 s)
MAD_K = 3.0  # jumps beyond median + 3 robust standard deviations are seams
NMS_HOPS = 2  # worst moments at least 3 hops (~120 ms) apart
MIN_WORST_DB = 0.1  # excess jumps below this are numerical wiggles, not moments worth listing


# --------------------------------------------------------------------------------------------
# input checks and per-second bucketing


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    t, h, w, _ = frames.shape
    if t < 2:
        raise ValueError(f"need at least 2 frames to measure flicker, got {t}")
    if h < 1 or w < 1:
        raise ValueError(f"frames must not be empty, got {frames.shape}")
    return frames


def _check_fps(fps: float) -> float:
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return fps


def _per_second(pair_values: np.ndarray, n_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Bucket per-pair values by second: pair (t, t+1) belongs to the second of frame t+1.

    Returns (sum, count) per second, ``ceil(n_frames / fps)`` entries. A second without a pair
    (only the first one, when fps <= 1) borrows the nearest pair.
    """
    n_sec = math.ceil(n_frames / fps - 1e-9)
    second = np.minimum(np.floor((np.arange(1, n_frames) + 1e-9) / fps).astype(int), n_sec - 1)
    sums = np.bincount(second, weights=pair_values, minlength=n_sec)
    counts = np.bincount(second, minlength=n_sec).astype(float)
    for s in np.flatnonzero(counts == 0):
        nearest = int(np.argmin(np.abs(second - s)))
        sums[s], counts[s] = pair_values[nearest], 1.0
    return sums, counts


# --------------------------------------------------------------------------------------------
# VBench temporal flickering


def _pair_abs_sums(frames: np.ndarray) -> np.ndarray:
    """Exact sum of |f_t - f_{t+1}| over pixels and channels, per consecutive pair.

    cv2.absdiff on uint8 returns |a - b| exactly (0..255, no wraparound: 10 vs 250 gives 240), as
    VBench's cv2.absdiff on float32 copies does; cv2.sumElems adds in double, exact for integers.
    """
    out = np.empty(len(frames) - 1, dtype=np.float64)
    for i in range(len(frames) - 1):
        diff = cv2.absdiff(np.ascontiguousarray(frames[i]), np.ascontiguousarray(frames[i + 1]))
        out[i] = sum(cv2.sumElems(diff)[:3])
    return out


def temporal_flickering(frames: np.ndarray) -> float:
    """VBench temporal_flickering: (255 - mean_t mean|f_t - f_{t+1}|) / 255, in [0, 1], 1 = static."""
    frames = _check_frames(frames)
    sums = _pair_abs_sums(frames)
    per_pair = frames[0].size
    # mean over pairs of the per-pair mean == total / (pairs * pixels * channels): equal-size pairs
    mae = float(sums.sum()) / (len(sums) * per_pair)  # integer-valued sums: exact
    return (255.0 - mae) / 255.0


def temporal_flickering_curve(frames: np.ndarray, fps: float = 25) -> np.ndarray:
    """Per-second VBench temporal flickering (pairs bucketed by their later frame)."""
    frames = _check_frames(frames)
    fps = _check_fps(fps)
    mae = _pair_abs_sums(frames) / frames[0].size
    sums, counts = _per_second(mae, len(frames), fps)
    return (255.0 - sums / counts) / 255.0


# --------------------------------------------------------------------------------------------
# Warping error (Lai et al. 2018)


def _flow_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _gray_small(frames: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    h, w = size
    out = []
    for f in frames:
        g = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
        if g.shape != (h, w):
            g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
        out.append(g)
    return out


def farneback_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Farneback flow from grayscale uint8 ``src`` to ``dst``: src(x) ~ dst(x + flow(x)).

    Returns float32 (H, W, 2), (dx, dy) in pixels of the inputs' grid.
    """
    side = min(src.shape)
    params = dict(FARNEBACK)
    # fewer pyramid levels for tiny images (each level halves the size)
    params["levels"] = min(params["levels"], int(math.log2(side / 8))) if side >= 16 else 0
    return cv2.calcOpticalFlowFarneback(src, dst, None, **params)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return gx, gy


def _remap(img: np.ndarray, flow: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """img(x + flow(x)), bilinear, coordinates clamped to the border (like FlowNet2's Resample2d)."""
    map_x = grid[0] + flow[..., 0]
    map_y = grid[1] + flow[..., 1]
    return cv2.remap(img, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _upscale_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a flow field to (H, W) and rescale its vectors to that grid's pixels."""
    h, w = flow.shape[:2]
    oh, ow = size
    if (h, w) == (oh, ow):
        return flow
    out = cv2.resize(flow, (ow, oh), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= ow / w
    out[..., 1] *= oh / h
    return out


def occlusion_mask(
    forward: np.ndarray, backward: np.ndarray, pixel_scale: tuple[float, float] = (1.0, 1.0), _grid_xy=None
) -> np.ndarray:
    """Bool (H, W), True where pixel x of the first frame is occluded or on a motion boundary.

    ``forward`` = flow first -> second frame, ``backward`` = second -> first, both (H, W, 2) in
    pixels of their grid. Thresholds as in Lai et al.'s code (after Ruder et al. 2016), in pixels
    of the full-resolution frame: |F + B(x+F)|^2 > 0.01 (|F|^2 + |B(x+F)|^2) + 0.5, or
    |grad F|^2 > 0.01 |F|^2 + 0.002 (forward differences, per full-resolution pixel).
    ``pixel_scale`` = (sx, sy): full-resolution pixels per grid pixel, for flows computed on a
    downscaled grid; (1, 1) is exactly the reference computation.
    """
    forward = np.asarray(forward, np.float32)
    backward = np.asarray(backward, np.float32)
    if forward.shape != backward.shape or forward.ndim != 3 or forward.shape[2] != 2:
        raise ValueError(f"flows must both be (H, W, 2), got {forward.shape} and {backward.shape}")
    h, w = forward.shape[:2]
    sx, sy = (np.float32(v) for v in pixel_scale)
    grid = _grid_xy if _grid_xy is not None else _grid(h, w)
    bw = _remap(backward, forward, grid)  # B(x + F(x)), grid units
    fx, fy = forward[..., 0] * sx, forward[..., 1] * sy  # full-resolution pixels from here on
    bx, by = bw[..., 0] * sx, bw[..., 1] * sy
    f_mag = fx * fx + fy * fy
    fb = (fx + bx) ** 2 + (fy + by) ** 2
    inconsistent = fb > 0.01 * (f_mag + bx * bx + by * by) + 0.5
    # motion boundary: forward differences, zero in the last column / row (as the reference)
    grad = np.zeros((h, w), np.float32)
    du_x = (fx[:, :-1] - fx[:, 1:]) / sx
    du_y = (fy[:, :-1] - fy[:, 1:]) / sx
    grad[:, :-1] += du_x * du_x + du_y * du_y
    dv_x = (fx[:-1, :] - fx[1:, :]) / sy
    dv_y = (fy[:-1, :] - fy[1:, :]) / sy
    grad[:-1, :] += dv_x * dv_x + dv_y * dv_y
    boundary = grad > 0.01 * f_mag + 0.002
    return inconsistent | boundary


def pair_warping_errors(frames: np.ndarray, max_side: int = 256, use_occlusion_mask: bool = True) -> np.ndarray:
    """Warping error E_t of each consecutive pair (t-1, t), t = 1..T-1 (see the module docs)."""
    frames = _check_frames(frames)
    if int(max_side) < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    t, h, w, _ = frames.shape
    small = _flow_size(h, w, int(max_side))
    scale = (w / small[1], h / small[0])
    gray = _gray_small(frames, small)
    grid, grid_small = _grid(h, w), _grid(*small)
    errors = np.empty(t - 1, dtype=np.float64)
    prev = frames[0].astype(np.float32)  # 0..255; divided by 255^2 at the end
    for i in range(1, t):
        cur = frames[i].astype(np.float32)
        fwd = farneback_flow(gray[i - 1], gray[i])
        warped = _remap(cur, _upscale_flow(fwd, (h, w)), grid)
        diff = cv2.subtract(warped, prev)
        sq = cv2.multiply(diff, diff)
        if use_occlusion_mask:
            bwd = farneback_flow(gray[i], gray[i - 1])
            keep = (~occlusion_mask(fwd, bwd, scale, grid_small)).view(np.uint8)
            if small != (h, w):
                keep = cv2.resize(keep, (w, h), interpolation=cv2.INTER_NEAREST)
            # cv2.mean: per-channel mean over kept pixels; all occluded -> 0, as the reference
            per_channel = cv2.mean(sq, mask=keep)[:3] if cv2.countNonZero(keep) else (0.0, 0.0, 0.0)
        else:
            per_channel = cv2.mean(sq)[:3]
        errors[i - 1] = sum(per_channel) / 3 / 255.0**2
        prev = cur
    return errors


def warping_error(frames: np.ndarray, max_side: int = 256, use_occlusion_mask: bool = True) -> float:
    """Lai et al. 2018 warping error: mean over pairs of the occlusion-masked MSE, pixels in [0, 1].

    ``use_occlusion_mask=False`` averages over every pixel (for comparison / tests).
    """
    return float(pair_warping_errors(frames, max_side, use_occlusion_mask).mean())


def warping_error_curve(
    frames: np.ndarray, fps: float = 25, max_side: int = 256, use_occlusion_mask: bool = True
) -> np.ndarray:
    """Per-second warping error (pairs bucketed by their later frame)."""
    return warping_error_with_curve(frames, fps, max_side, use_occlusion_mask)[1]


def warping_error_with_curve(
    frames: np.ndarray, fps: float = 25, max_side: int = 256, use_occlusion_mask: bool = True
) -> tuple[float, np.ndarray]:
    """(warping_error, warping_error_curve) from one pass over the flow: use this when both are
    wanted, since the flow is nearly all of the cost."""
    fps = _check_fps(fps)
    errors = pair_warping_errors(frames, max_side, use_occlusion_mask)
    sums, counts = _per_second(errors, len(frames), fps)
    return float(errors.mean()), sums / counts


# --------------------------------------------------------------------------------------------
# Audio flicker


@dataclass
class AudioFlicker:
    score: float  # mean excess jump, dB per 40 ms hop; ~0 = no seams
    curve: np.ndarray = field(repr=False)  # per-second mean excess jump, ceil(duration) entries
    worst: list[tuple[float, float]]  # (time in s, excess jump in dB), largest first, >= 0.1 dB


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono, shape (samples,), got {audio.shape}")
    if np.issubdtype(audio.dtype, np.integer):
        if audio.dtype not in (np.int16, np.int32):
            raise ValueError(f"integer audio must be int16 or int32, got {audio.dtype}")
        audio = audio.astype(np.float64) / (np.iinfo(audio.dtype).max + 1.0)
    elif not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be a float or int16/int32 array, got {audio.dtype}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples")
    return audio.astype(np.float32)


def _check_rate(sample_rate) -> int:
    ok = isinstance(sample_rate, (int, float, np.integer, np.floating)) and not isinstance(sample_rate, bool)
    if not ok or not math.isfinite(sample_rate) or sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


@functools.lru_cache(maxsize=1)
def _mel_transform():
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=AUDIO_RATE,
        n_fft=N_FFT,
        win_length=N_FFT,
        hop_length=HOP,
        n_mels=N_MELS,
        f_min=0.0,
        f_max=AUDIO_RATE / 2,
        power=2.0,
        center=False,
    )


def _mel_db(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel (hops, bands), loudness (hops,)) in dB, floored, of 16 kHz audio.

    Row k is the window centred on sample (k + 1) * HOP, for every such window wholly inside
    the audio (len(audio) >= N_FFT // 2 + HOP required).
    """
    import torch

    mel = _mel_transform()
    start = HOP - N_FFT // 2  # first window centred on sample HOP
    with torch.no_grad():
        power = mel(torch.from_numpy(np.ascontiguousarray(audio[start:]))).double().numpy().T
    power = power / (N_FFT / 4) ** 2  # (Hann window sum / 2)^2: a full-scale sine peaks near 0 dB
    eps = 10 ** (ABS_FLOOR_DB / 10)
    band_db = 10 * np.log10(np.maximum(power, eps))
    loud_db = 10 * np.log10(np.maximum(power.sum(axis=1), eps))
    band_db = np.maximum(band_db, max(band_db.max() - TOP_DB, ABS_FLOOR_DB))
    loud_db = np.maximum(loud_db, max(loud_db.max() - TOP_DB, ABS_FLOOR_DB))
    return band_db, loud_db


def _excess(jumps: np.ndarray) -> np.ndarray:
    """max(0, j - (local median + MAD_K * 1.4826 * local MAD)) over +-MEDIAN_HALF jumps."""
    n = len(jumps)
    pad = np.full(MEDIAN_HALF, np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([pad, jumps, pad]), 2 * MEDIAN_HALF + 1)[:n]
    med = np.nanmedian(windows, axis=1)
    mad = np.nanmedian(np.abs(windows - med[:, None]), axis=1)
    return np.maximum(0.0, jumps - (med + MAD_K * 1.4826 * mad))


def audio_flicker(audio: np.ndarray, sample_rate: int = AUDIO_RATE, top_k: int = 5) -> AudioFlicker:
    """Seams of an audio track: jumps of log-mel and loudness between 40 ms hops (module docs)."""
    audio = _check_audio(audio)
    sample_rate = _check_rate(sample_rate)
    if int(top_k) < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    duration = len(audio) / sample_rate
    n_sec = math.ceil(duration - 1e-9)
    if sample_rate != AUDIO_RATE and len(audio) > 0:
        import torch
        import torchaudio

        audio = torchaudio.functional.resample(torch.from_numpy(audio), sample_rate, AUDIO_RATE).numpy()
    if len(audio) < N_FFT // 2 + 2 * HOP:  # fewer than two whole hops: no jump to measure
        return AudioFlicker(score=0.0, curve=np.zeros(n_sec), worst=[])
    band_db, loud_db = _mel_db(audio)
    jumps = np.abs(np.diff(band_db, axis=0)).mean(axis=1) + np.abs(np.diff(loud_db))
    excess = _excess(jumps)
    times = (np.arange(len(jumps)) + 1.5) * HOP / AUDIO_RATE  # row k is centred on (k + 1) hops

    second = np.minimum(times.astype(int), max(n_sec - 1, 0))
    sums = np.bincount(second, weights=excess, minlength=n_sec)
    counts = np.bincount(second, minlength=n_sec)
    curve = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)

    worst: list[tuple[float, float]] = []
    remaining = excess.copy()
    while len(worst) < int(top_k):
        i = int(np.argmax(remaining))
        if remaining[i] < MIN_WORST_DB:
            break
        worst.append((float(times[i]), float(excess[i])))
        remaining[max(0, i - NMS_HOPS) : i + NMS_HOPS + 1] = -np.inf
    return AudioFlicker(score=float(excess.mean()), curve=curve, worst=worst)
