"""Training objectives: plain flow matching (the baseline) and Self-Flow, one flag apart; and the
distillation of a trained model into one that takes a guided step of any size in one forward.

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

from avgen.model import DISTILLED_GUIDANCE, AVTransformer, moving_part
from avgen.phones import NULL_PHONE, PHONE_IDS
from avgen.sampling import CleanMask, Latents, interpolate

NULL_PHONE_ID = PHONE_IDS[NULL_PHONE]
# the phone prior's loss (latent variation, ~0.03 a value) next to the flow loss (~0.2-1)
PRIOR_LOSS_WEIGHT = 10.0


@dataclass
class Batch:
    latents: Latents  # clean latents x0: video (B, T, Nv, Pv), audio (B, T, Pa)
    phones: torch.Tensor  # (B, T)
    clean: CleanMask  # tokens given as conditions (continuation, audio-driven): t = 0, no loss
    reference: torch.Tensor | None = None  # (B, Nr, Pv)
    video_weight: torch.Tensor | None = None  # (B, T, Nv) per-token weight of the video loss (None: all 1)


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


def _masked_mse(prediction, target, keep, token_weight=None) -> torch.Tensor:
    """Mean squared error over tokens with keep=True (conditions carry no loss), a weighted mean
    where `token_weight` (shaped as `keep`) is given."""
    error = (prediction.float() - target.float()).pow(2).mean(-1)
    weight = keep.float() if token_weight is None else keep.float() * token_weight
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


def motion_weight(video: torch.Tensor, strength: float) -> torch.Tensor:
    """(B, T, Nv) token weights 1 + strength * m, where m is each video token's standard deviation over
    the clip's frames, over the clip's largest: the tokens that move (the mouth, the eyes) weigh up to
    1 + strength times the still ones, which otherwise dominate the loss."""
    motion = video.float().std(dim=1).mean(-1)  # (B, Nv)
    motion = motion / motion.amax(dim=-1, keepdim=True).clamp_min(1e-6)
    return (1 + strength * motion)[:, None, :].expand(video.shape[:3])


def flow_loss(model: AVTransformer, batch: Batch, video_t, audio_t, noise: Latents, features_at=()):
    """Generation loss at per-token times (the flow loss, plus the phone prior's where the model has
    one); returns (loss, velocity output, logs)."""
    x0, clean = batch.latents, batch.clean
    video_t = video_t.masked_fill(clean.video, 0.0)
    audio_t = audio_t.masked_fill(clean.audio, 0.0)
    xv = interpolate(x0.video, noise.video, video_t)
    xa = interpolate(x0.audio, noise.audio, audio_t)
    out = model(xv, xa, video_t, audio_t, batch.phones, batch.reference, features_at=features_at)
    loss_v = _masked_mse(out.video, noise.video - x0.video, ~clean.video, batch.video_weight)
    loss_a = _masked_mse(out.audio, noise.audio - x0.audio, ~clean.audio)
    logs = {"loss_video": loss_v.detach(), "loss_audio": loss_a.detach()}
    loss = loss_v + loss_a
    if out.prior is not None:  # the phone prior learns what moves in each frame from the phones (and given audio)
        loss_prior = (out.prior.float() - moving_part(x0.video).float()).pow(2).mean()
        loss, logs["loss_prior"] = loss + PRIOR_LOSS_WEIGHT * loss_prior, loss_prior.detach()
    return loss, out, logs


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
    return loss, {"loss": loss.detach(), "loss_gen": logs["loss_video"] + logs["loss_audio"], **logs}


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
    loss_gen = logs["loss_video"] + logs["loss_audio"]  # the flow loss alone (gen_loss adds the phone prior's)
    return loss, {"loss": loss.detach(), "loss_gen": loss_gen, "loss_rep": rep_loss.detach(), **logs}


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


# ---------------------------------------------------------------------------------------------
# distillation: guidance folded in (one forward a step), and few steps (shortcut self-consistency)

SHORTCUT_STEPS = (1 / 8, 1 / 4, 1 / 2, 1.0)  # step sizes learned by self-consistency: 8, 4, 2 and 1 steps
DISTILLED_STEPS = 4  # the sampler steps a distilled checkpoint defaults to


def _rows(batch: Batch, rows: slice) -> Batch:
    x0, clean = batch.latents, batch.clean
    return Batch(Latents(x0.video[rows], x0.audio[rows]), batch.phones[rows],
                 CleanMask(clean.video[rows], clean.audio[rows]),
                 None if batch.reference is None else batch.reference[rows])  # fmt: skip


def _per_sample(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def teacher_branches(teacher: AVTransformer, x: Latents, video_t, audio_t, batch: Batch) -> tuple[Latents, Latents]:
    """The teacher's conditional and unconditional (null transcript) velocities, in one batch."""
    null = torch.full_like(batch.phones, NULL_PHONE_ID)
    reference = None if batch.reference is None else torch.cat([batch.reference, batch.reference])
    v = teacher(torch.cat([x.video, x.video]), torch.cat([x.audio, x.audio]), torch.cat([video_t, video_t]),
                torch.cat([audio_t, audio_t]), torch.cat([batch.phones, null]), reference)  # fmt: skip
    (cv, uv), (ca, ua) = v.video.float().chunk(2), v.audio.float().chunk(2)
    return Latents(cv, ca), Latents(uv, ua)


def guide(conditional: Latents, unconditional: Latents, guidance: torch.Tensor) -> Latents:
    """Classifier-free guidance, a scale per sample (B,)."""
    cv, uv, ca, ua = conditional.video, unconditional.video, conditional.audio, unconditional.audio
    return Latents(uv + _per_sample(guidance, cv) * (cv - uv), ua + _per_sample(guidance, ca) * (ca - ua))


def guided_velocity(teacher: AVTransformer, x: Latents, video_t, audio_t, batch: Batch, guidance: torch.Tensor):
    """The teacher's classifier-free-guided velocity, a guidance scale per sample (B,)."""
    return guide(*teacher_branches(teacher, x, video_t, audio_t, batch), guidance)


def distillation_loss(student, teacher: AVTransformer, batch: Batch, generator: torch.Generator,
                      consistency_fraction: float = 0.25):  # fmt: skip
    """Guidance distillation (FLUX.1-dev style) and shortcut models (Frans et al., arXiv 2410.12557)
    in one fine-tune of a `distilled` student that starts as its teacher.

    Every sample draws a guidance scale in DISTILLED_GUIDANCE. Most rows learn the teacher's guided
    velocity at step size 0. The rest learn, at a step size s of SHORTCUT_STEPS and a time t on the
    s-grid that a uniform sampler visits, the mean of two of the student's own steps of s/2
    (stop-gradient): one jump of s lands where two of s/2 do. Half of the smallest size is taken
    as the step-0 velocity. No JVP: CPU flash attention has no forward-mode AD. Errors are logged
    relative to guidance's move (1 = the teacher's conditional branch, i.e. ignoring guidance).
    """
    x0, clean = batch.latents, batch.clean
    b, device = x0.video.shape[0], x0.video.device
    low, high = DISTILLED_GUIDANCE
    guidance = (low + (high - low) * torch.rand(b, generator=generator)).to(device)
    noise = Latents(torch.randn(x0.video.shape, generator=generator).to(device),
                    torch.randn(x0.audio.shape, generator=generator).to(device))  # fmt: skip
    n_consistency = min(b - 1, max(1, round(b * consistency_fraction))) if b > 1 else 0
    n_flow = b - n_consistency
    t = sample_timesteps((b,), generator, device)
    step = torch.zeros(b, device=device)
    if n_consistency:
        size = torch.tensor(SHORTCUT_STEPS)[torch.randint(len(SHORTCUT_STEPS), (n_consistency,), generator=generator)]
        k = torch.floor(torch.rand(n_consistency, generator=generator) / size) + 1  # t = k * size in (0, 1]
        t[n_flow:], step[n_flow:] = (k * size).clamp(max=1.0).to(device), size.to(device)
    video_t = _broadcast(t, x0.video[..., 0]).masked_fill(clean.video, 0.0)
    audio_t = _broadcast(t, x0.audio[..., 0]).masked_fill(clean.audio, 0.0)
    x = Latents(interpolate(x0.video, noise.video, video_t), interpolate(x0.audio, noise.audio, audio_t))

    flow, rest = slice(0, n_flow), slice(n_flow, b)
    flow_batch = _rows(batch, flow)
    conditional, unconditional = teacher_branches(
        teacher, Latents(x.video[flow], x.audio[flow]), video_t[flow], audio_t[flow], flow_batch
    )
    targets = [guide(conditional, unconditional, guidance[flow])]
    # Each modality's error is measured against how far guidance moves it (the guided target from
    # the conditional velocity, over this batch): audio's guidance term is ~30x video's, and raw
    # errors would leave video to drift while audio learns (seen in a first CPU run).
    scale_video = _masked_mse(conditional.video, targets[0].video, ~flow_batch.clean.video).clamp_min(1e-3)
    scale_audio = _masked_mse(conditional.audio, targets[0].audio, ~flow_batch.clean.audio).clamp_min(1e-3)
    if n_consistency:
        with torch.no_grad():
            part = _rows(batch, rest)
            half = step[rest] / 2
            told = torch.where(half >= SHORTCUT_STEPS[0], half, torch.zeros_like(half))  # the smallest: step 0
            vt, at = video_t[rest], audio_t[rest]
            xr = Latents(x.video[rest], x.audio[rest])
            v1 = student(xr.video, xr.audio, vt, at, part.phones, part.reference, guidance=guidance[rest], step=told)
            mid = Latents(  # half a step towards the data; tokens given as conditions stay clean
                torch.where(part.clean.video[..., None], xr.video, xr.video - _per_sample(half, xr.video) * v1.video),
                torch.where(part.clean.audio[..., None], xr.audio, xr.audio - _per_sample(half, xr.audio) * v1.audio),
            )
            vt_mid = (vt - _per_sample(half, vt)).clamp_min(0.0).masked_fill(part.clean.video, 0.0)
            at_mid = (at - _per_sample(half, at)).clamp_min(0.0).masked_fill(part.clean.audio, 0.0)
            v2 = student(mid.video, mid.audio, vt_mid, at_mid, part.phones, part.reference,
                         guidance=guidance[rest], step=told)  # fmt: skip
            targets.append(
                Latents((v1.video.float() + v2.video.float()) / 2, (v1.audio.float() + v2.audio.float()) / 2)
            )
    target = Latents(torch.cat([p.video for p in targets]), torch.cat([p.audio for p in targets]))
    out = student(x.video, x.audio, video_t, audio_t, batch.phones, batch.reference, guidance=guidance, step=step)
    loss, logs = 0.0, {}
    for name, rows, count in (("distill", flow, n_flow), ("consistency", rest, n_consistency)):
        if count:
            video = _masked_mse(out.video[rows], target.video[rows], ~clean.video[rows])
            audio = _masked_mse(out.audio[rows], target.audio[rows], ~clean.audio[rows])
            loss = loss + count / b * (video / scale_video + audio / scale_audio)
            logs[f"loss_{name}"] = (video + audio).detach()  # the plain squared error
            logs[f"relative_{name}_video"], logs[f"relative_{name}_audio"] = video / scale_video, audio / scale_audio
    logs = {"loss": loss.detach(), **{k: v.detach() for k, v in logs.items()}}
    return loss, logs
