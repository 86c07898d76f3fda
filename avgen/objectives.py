"""Training objectives: plain flow matching (the baseline) and Self-Flow, one flag apart.

Self-Flow (Chefer, Esser et al., BFL 2026) learns representations inside the generator, no
external encoder: per-token dual timesteps (a random mask of tokens gets timestep s, the rest t),
an EMA teacher that sees every token at min(t, s) under stop-gradient, and the student's features
at layer ~0.3*depth, through a small MLP head, pulled towards the teacher's features at layer
~0.7*depth by negative cosine similarity. L = L_gen + gamma * L_rep.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avgen.model import AVTransformer
from avgen.sampling import CleanMask, Latents, interpolate


@dataclass
class Batch:
    latents: Latents  # clean latents x0: video (B, T, Nv, Pv), audio (B, T, Pa)
    phones: torch.Tensor  # (B, T)
    clean: CleanMask  # tokens given as conditions (continuation, audio-driven): t = 0, no loss
    reference: torch.Tensor | None = None  # (B, Nr, Pv)


@dataclass(frozen=True)
class SelfFlowSettings:
    gamma: float = 0.8
    mask_ratio_video: float = 0.25
    mask_ratio_audio: float = 0.5
    student_fraction: float = 0.3  # student features at this fraction of the depth
    teacher_fraction: float = 0.7

    def layers(self, depth: int) -> tuple[int, int]:
        student = max(0, round(self.student_fraction * depth) - 1)
        teacher = min(depth - 1, max(student + 1, round(self.teacher_fraction * depth) - 1))
        return student, teacher


class ProjectionHead(nn.Module):
    """Linear -> SiLU -> Linear on the student's features (Self-Flow's small MLP head)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def sample_timesteps(shape, generator: torch.Generator, device) -> torch.Tensor:
    """Logit-normal t in (0, 1) (SD3): more weight on the middle of the path."""
    return torch.sigmoid(torch.randn(shape, generator=generator)).to(device)


def _broadcast(per_sample: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return per_sample.reshape(-1, *([1] * (like.dim() - 1))).expand_as(like)


def _masked_mse(prediction, target, keep) -> torch.Tensor:
    """Mean squared error over tokens with keep=True (conditions carry no loss)."""
    error = (prediction.float() - target.float()).pow(2).mean(-1)
    weight = keep.float()
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


def flow_loss(model: AVTransformer, batch: Batch, video_t, audio_t, noise: Latents, features_at=()):
    """Generation loss at per-token times; returns (loss, velocity output)."""
    x0, clean = batch.latents, batch.clean
    video_t = video_t.masked_fill(clean.video, 0.0)
    audio_t = audio_t.masked_fill(clean.audio, 0.0)
    xv = interpolate(x0.video, noise.video, video_t)
    xa = interpolate(x0.audio, noise.audio, audio_t)
    out = model(xv, xa, video_t, audio_t, batch.phones, batch.reference, features_at=features_at)
    loss_v = _masked_mse(out.video, noise.video - x0.video, ~clean.video)
    loss_a = _masked_mse(out.audio, noise.audio - x0.audio, ~clean.audio)
    return loss_v + loss_a, out, {"loss_video": loss_v.detach(), "loss_audio": loss_a.detach()}


def baseline_loss(model, batch: Batch, generator: torch.Generator):
    """Plain flow matching: one timestep per sample for all its tokens."""
    x0 = batch.latents
    b, device = x0.video.shape[0], x0.video.device
    t = sample_timesteps((b,), generator, device)
    noise = Latents(torch.randn(x0.video.shape, generator=generator).to(device),
                    torch.randn(x0.audio.shape, generator=generator).to(device))  # fmt: skip
    video_t = _broadcast(t, x0.video[..., 0])
    audio_t = _broadcast(t, x0.audio[..., 0])
    loss, _, logs = flow_loss(model, batch, video_t, audio_t, noise)
    return loss, {"loss": loss.detach(), "loss_gen": loss.detach(), **logs}


def self_flow_loss(
    model, teacher, head: ProjectionHead, batch: Batch, generator: torch.Generator, settings: SelfFlowSettings
):
    x0 = batch.latents
    b, device = x0.video.shape[0], x0.video.device
    t = sample_timesteps((b,), generator, device)
    s = sample_timesteps((b,), generator, device)
    noise = Latents(torch.randn(x0.video.shape, generator=generator).to(device),
                    torch.randn(x0.audio.shape, generator=generator).to(device))  # fmt: skip
    mask_video = (torch.rand(x0.video.shape[:3], generator=generator) < settings.mask_ratio_video).to(device)
    mask_audio = (torch.rand(x0.audio.shape[:2], generator=generator) < settings.mask_ratio_audio).to(device)
    video_t = torch.where(mask_video, _broadcast(s, mask_video), _broadcast(t, mask_video))
    audio_t = torch.where(mask_audio, _broadcast(s, mask_audio), _broadcast(t, mask_audio))

    student_layer, teacher_layer = settings.layers(len(teacher.blocks))  # model may be DDP-wrapped
    gen_loss, out, logs = flow_loss(model, batch, video_t, audio_t, noise, features_at=(student_layer,))
    with torch.no_grad():  # the teacher sees every token at the less noisy min(t, s)
        m = torch.minimum(t, s)
        clean = batch.clean
        tv = _broadcast(m, x0.video[..., 0]).masked_fill(clean.video, 0.0)
        ta = _broadcast(m, x0.audio[..., 0]).masked_fill(clean.audio, 0.0)
        target = teacher(interpolate(x0.video, noise.video, tv), interpolate(x0.audio, noise.audio, ta), tv, ta,
                         batch.phones, batch.reference, features_at=(teacher_layer,)).features[teacher_layer]  # fmt: skip
    prediction = head(out.features[student_layer])
    rep_loss = -F.cosine_similarity(prediction.float(), target.float(), dim=-1).mean()
    loss = gen_loss + settings.gamma * rep_loss
    return loss, {"loss": loss.detach(), "loss_gen": gen_loss.detach(), "loss_rep": rep_loss.detach(), **logs}


class EMA:
    """An exponential moving average copy of a model (the Self-Flow teacher, and the shipped
    weights). The decay warms up as (1 + step) / (10 + step) towards `decay`, so a short run is
    not stuck near its initial weights (0.9999 over 2,000 steps would keep ~80% of them)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.current_decay(step)
        for ema, live in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema.dtype.is_floating_point:
                ema.lerp_(live.detach(), 1 - d)
            else:
                ema.copy_(live)
