"""Flow matching and its samplers, as plain functions.

Path x_t = (1 - t) * x0 + t * noise, velocity target v = noise - x0; t = 1 is pure noise.
Tokens given as conditions (audio for audio-driven video, the overlap of a previous chunk) are
held clean: timestep 0 and their known value at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class Latents(NamedTuple):
    video: torch.Tensor  # (B, T, Nv, Pv)
    audio: torch.Tensor  # (B, T, Pa)


class CleanMask(NamedTuple):
    video: torch.Tensor  # (B, T, Nv) bool: True = held clean at t=0
    audio: torch.Tensor  # (B, T) bool


# velocity_fn(x, video_t, audio_t, step) -> velocity, where video_t is (B, T, Nv), audio_t (B, T)
# and step the size of the step about to be taken (distilled models predict the average velocity
# over it; others ignore it)
VelocityFn = Callable[[Latents, torch.Tensor, torch.Tensor, float], Latents]


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The flow-matching path at per-token time t (broadcast over the last dims of x)."""
    t = t.reshape(*t.shape, *([1] * (x0.dim() - t.dim())))
    return (1 - t) * x0 + t * noise


def time_shift(t: torch.Tensor | float, shift: float):
    """Spend more steps at high noise when shift > 1 (SD3 / Flux style)."""
    return shift * t / (1 + (shift - 1) * t)


def get_schedule(steps: int, shift: float = 1.0) -> list[float]:
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return [float(t) for t in time_shift(ts, shift)]


def _hold_clean(x: Latents, condition: Latents, clean: CleanMask) -> Latents:
    return Latents(
        torch.where(clean.video[..., None], condition.video, x.video),
        torch.where(clean.audio[..., None], condition.audio, x.audio),
    )


def _timesteps(t: float, clean: CleanMask) -> tuple[torch.Tensor, torch.Tensor]:
    return (~clean.video).float() * t, (~clean.audio).float() * t


def _step(x: Latents, v: Latents, dt: float) -> Latents:
    return Latents(x.video + dt * v.video, x.audio + dt * v.audio)


def denoise(
    velocity_fn: VelocityFn,
    noise: Latents,
    condition: Latents,
    clean: CleanMask,
    schedule: list[float],
    sampler: str = "euler",
    on_step: Callable[[int], None] | None = None,
) -> Latents:
    """Integrate from t=1 (noise) to t=0 along `schedule`; Heun adds a corrector except at t=0."""
    if sampler not in ("euler", "heun"):
        raise ValueError(f"sampler must be 'euler' or 'heun', not {sampler!r}")
    x = _hold_clean(noise, condition, clean)
    for index, (t_cur, t_next) in enumerate(zip(schedule[:-1], schedule[1:])):
        v = velocity_fn(x, *_timesteps(t_cur, clean), t_cur - t_next)
        x_next = _step(x, v, t_next - t_cur)
        if sampler == "heun" and t_next > 0:
            v_next = velocity_fn(_hold_clean(x_next, condition, clean), *_timesteps(t_next, clean), t_cur - t_next)
            x_next = _step(x, Latents((v.video + v_next.video) / 2, (v.audio + v_next.audio) / 2), t_next - t_cur)
        x = _hold_clean(x_next, condition, clean)
        if on_step is not None:
            on_step(index + 1)
    return x
