"""The unified audio-video transformer: one token sequence, one stack of blocks.

Per 40 ms frame the sequence holds that frame's video-latent patches followed by its audio
latent, frame after frame, so tokens are sorted by time and a sliding window over time is a
contiguous band. Optional reference-image tokens (identity) come first and are visible to all.
Every token carries its own timestep: tokens given as conditions are simply held at t=0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from avgen.attention import SlidingWindowMask
from avgen.config import Config
from avgen.layers import Block, FinalLayer, MLPEmbedder, rope_frequencies, time_pairs, timestep_embedding
from avgen.phones import PHONES
from avgen.timeline import FPS

VIDEO, AUDIO, REFERENCE = 0, 1, 2  # modality embedding rows
DISTILLED_GUIDANCE = (1.0, 4.0)  # the guidance scales a distilled model is trained on (one forward a step)


@dataclass
class Velocity:
    video: torch.Tensor  # (B, T, Nv, Pv)
    audio: torch.Tensor  # (B, T, Pa)
    features: dict[int, torch.Tensor]  # block index -> hidden states (B, L, D), when asked for
    prior: torch.Tensor | None = None  # (B, T, Nv, Pv) the phone prior's video-latent variation (cfg.phone_prior)


PRIOR_KERNEL = 5  # frames: two such convolutions see +-4 frames of phones (coarticulation)


def moving_part(video: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) latents minus their mean over the clip's frames: what moves (the phone prior's target)."""
    return video - video.mean(dim=1, keepdim=True)


class PhonePrior(nn.Module):
    """Each frame's video latents minus their mean over the clip (what moves: the mouth), predicted
    from the phones around the frame: phone embeddings, two temporal convolutions, a linear read-out
    to every patch of the frame. With `Config.prior_audio` it also reads the audio latents of the
    frames whose audio is given clean (audio-driven video); elsewhere it sees the phones alone."""

    def __init__(self, cfg: Config):
        super().__init__()
        d, pad = cfg.hidden, PRIOR_KERNEL // 2
        self.embedding = nn.Embedding(len(PHONES), d)
        if cfg.prior_audio:
            self.audio = nn.Linear(cfg.audio_latent_channels, d)
        self.convs = nn.Sequential(nn.Conv1d(d, d, PRIOR_KERNEL, padding=pad), nn.GELU(),
                                   nn.Conv1d(d, d, PRIOR_KERNEL, padding=pad), nn.GELU())  # fmt: skip
        self.out = nn.Linear(d, cfg.video_tokens_per_frame * cfg.video_token_dim)
        self.tokens = cfg.video_tokens_per_frame

    def forward(
        self, phones: torch.Tensor, audio: torch.Tensor | None = None, given: torch.Tensor | None = None
    ) -> torch.Tensor:
        """phones (B, T); prior_audio models: audio latents (B, T, Pa), read where `given` (B, T) is True."""
        x = self.embedding(phones)
        if audio is not None:
            heard = self.audio(audio.to(x.dtype))
            x = x + (heard if given is None else heard * given[..., None])
        x = self.convs(x.transpose(1, 2)).transpose(1, 2)
        return rearrange(self.out(x), "b t (n p) -> b t n p", n=self.tokens)


class AVTransformer(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.video_in = nn.Linear(cfg.video_token_dim, d)
        self.audio_in = nn.Linear(cfg.audio_latent_channels, d)
        self.modality = nn.Parameter(torch.randn(3, d) * 0.02)
        # Where a patch sits in its frame. Rotary positions are relative only, and a 4x4 patch grid
        # gives a patch little else to learn its place from: without this every patch of an early
        # model drew the same blob (seen at 800 training steps).
        self.patch_position = nn.Parameter(torch.randn(cfg.video_tokens_per_frame, d) * 0.02)
        self.phone_embedding = nn.Embedding(len(PHONES), d)
        if cfg.phone_prior:
            self.phone_prior, self.prior_in = PhonePrior(cfg), nn.Linear(cfg.video_token_dim, d)
        self.time_in = MLPEmbedder(256, d)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        if cfg.distilled:  # zero-initialised: a fine-tune starts as its teacher's conditional branch
            self.guidance_in, self.step_in = MLPEmbedder(256, d), MLPEmbedder(256, d)
            for embedder in (self.guidance_in, self.step_in):
                nn.init.zeros_(embedder.net[2].weight)
                nn.init.zeros_(embedder.net[2].bias)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.video_out = FinalLayer(d, cfg.video_token_dim)
        self.audio_out = FinalLayer(d, cfg.audio_latent_channels)
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)
        self._layout_cache: dict[tuple, tuple[torch.Tensor, SlidingWindowMask]] = {}

    def token_layout(self, frames: int, reference_tokens: int, device) -> tuple[torch.Tensor, SlidingWindowMask]:
        """Positions (L, 3) = (time in rotary units, y, x) and the attention mask of a chunk.

        Reference tokens get time 0 here, but `rope_and_mask` removes their time axis entirely.
        """
        cfg = self.cfg
        gh, gw = cfg.latent_height // cfg.patch_size, cfg.latent_width // cfg.patch_size
        ys = torch.arange(gh, device=device, dtype=torch.float32) - (gh - 1) / 2
        xs = torch.arange(gw, device=device, dtype=torch.float32) - (gw - 1) / 2
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)  # (Nv, 2)
        frame_grid = torch.cat([grid, grid.new_zeros(1, 2)])  # the audio latent sits at the centre
        per_frame = frame_grid.shape[0]
        times = torch.arange(frames, device=device, dtype=torch.float32) / FPS * cfg.rope_units_per_second
        positions = torch.cat(
            [repeat(times, "t -> (t n) 1", n=per_frame), repeat(frame_grid, "n c -> (t n) c", t=frames)], dim=1
        )
        frame_index = repeat(torch.arange(frames, device=device), "t -> (t n)", n=per_frame)
        is_global = torch.zeros(frames * per_frame, dtype=torch.bool, device=device)
        if reference_tokens:
            ref_positions = torch.cat([grid.new_zeros(reference_tokens, 1), grid], dim=1)
            positions = torch.cat([ref_positions, positions])
            frame_index = torch.cat([frame_index.new_zeros(reference_tokens), frame_index])
            is_global = torch.cat([is_global.new_ones(reference_tokens), is_global])
        return positions, SlidingWindowMask(frame_index, is_global, cfg.window_frames)

    def rope_and_mask(self, frames: int, reference_tokens: int, device) -> tuple[torch.Tensor, SlidingWindowMask]:
        """Rotary phases and attention mask for a chunk shape, cached: every sampler step reuses them.

        Reference tokens have no place in time: their time-axis rotary pairs are zero (not rotated,
        removed), so a frame's attention to the reference is the same at any time in any chunk
        length; training windows and generation chunks of different lengths see the same thing.
        Safe to call from several threads at once: a cached entry is read once into a local.
        """
        key = (frames, reference_tokens, str(device))
        entry = self._layout_cache.get(key)
        if entry is None:
            positions, mask = self.token_layout(frames, reference_tokens, device)
            rope = rope_frequencies(positions, self.cfg.head_dim, self.cfg.rope_theta)
            rope[:reference_tokens, : time_pairs(self.cfg.head_dim)] = 0
            entry = (rope, mask)
            if len(self._layout_cache) >= 8:
                self._layout_cache.clear()
            self._layout_cache[key] = entry
        return entry

    def forward(
        self,
        video: torch.Tensor,  # (B, T, Nv, Pv) noisy video-latent patches
        audio: torch.Tensor,  # (B, T, Pa) noisy audio latents
        video_t: torch.Tensor,  # (B, T, Nv) per-token timestep, 0 = clean
        audio_t: torch.Tensor,  # (B, T)
        phones: torch.Tensor,  # (B, T) phone id spoken at each frame
        reference: torch.Tensor | None = None,  # (B, Nr, Pv) clean reference-image patches
        features_at: tuple[int, ...] = (),
        attention_backend: str = "auto",
        guidance: torch.Tensor | None = None,  # (B,) guidance scale: distilled models only
        step: torch.Tensor | None = None,  # (B,) the sampler's step size (0: the instantaneous velocity)
        prior_audio: bool = True,  # prior_audio models: False, the prior follows the phones alone (a transcript's)
    ) -> Velocity:
        b, frames, nv, _ = video.shape
        phone = self.phone_embedding(phones)[:, :, None]
        video_x = self.video_in(video) + self.patch_position + self.modality[VIDEO] + phone
        prior = None
        if self.cfg.phone_prior:
            # the audio only where it is given clean (audio-driven video), not noisy audio being generated
            reads = self.cfg.prior_audio and prior_audio
            prior = self.phone_prior(phones, audio, audio_t == 0) if reads else self.phone_prior(phones)
            video_x = video_x + self.prior_in(prior.to(video_x.dtype))
        audio_x = self.audio_in(audio)[:, :, None] + self.modality[AUDIO] + phone
        x = rearrange(torch.cat([video_x, audio_x], dim=2), "b t n d -> b (t n) d")
        t = rearrange(torch.cat([video_t, audio_t[:, :, None]], dim=2), "b t n -> b (t n)")
        n_ref = 0 if reference is None else reference.shape[1]
        if n_ref:
            x = torch.cat([self.video_in(reference) + self.patch_position + self.modality[REFERENCE], x], dim=1)
            t = torch.cat([t.new_zeros(b, n_ref), t], dim=1)

        rope, mask = self.rope_and_mask(frames, n_ref, video.device)
        with torch.autocast(video.device.type, enabled=False):  # timestep embedding in fp32, under autocast too
            t_emb = self.time_in(timestep_embedding(t.float(), 256))  # (B, L, D)
            if self.cfg.distilled:
                t_emb = t_emb + self.sampler_embedding(guidance, step, b, video.device)[:, None]
            modulation = rearrange(self.modulation(t_emb), "b l (six d) -> b l six d", six=6)

        features = {}
        for index, block in enumerate(self.blocks):
            x = block(x, modulation, rope, mask, attention_backend)
            if index in features_at:
                features[index] = x
        x, t_emb = x[:, n_ref:], t_emb[:, n_ref:]
        tokens = rearrange(x, "b (t n) d -> b t n d", t=frames)
        emb = rearrange(t_emb, "b (t n) d -> b t n d", t=frames)
        with torch.autocast(video.device.type, enabled=False):  # the output layers in fp32, under autocast too
            tokens = tokens.float()
            video_v = self.video_out(tokens[:, :, :nv], emb[:, :, :nv])
            audio_v = self.audio_out(tokens[:, :, nv], emb[:, :, nv])
        return Velocity(video_v, audio_v, features, prior)

    def sampler_embedding(self, guidance, step, batch: int, device) -> torch.Tensor:
        """(B, D): what a distilled model adds to every token's timestep embedding. Guidance scales
        are embedded as scale / 10 (the trained 1-4 become 0.1-0.4, spread like timesteps), step
        sizes as they are."""
        if guidance is None or step is None:
            raise ValueError("a distilled model needs the guidance scale and the step size")
        guidance = guidance.to(device, torch.float32).expand(batch)
        step = step.to(device, torch.float32).expand(batch)
        return self.guidance_in(timestep_embedding(guidance / 10, 256)) + self.step_in(timestep_embedding(step, 256))


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bf16 matrix products natively (else autocast to bf16 only emulates them)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())  # fmt: skip
    return False


def patchify(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, C, h, w) latent grids -> (B, T, Nv, C*p*p) tokens."""
    return rearrange(latents, "b t c (h p1) (w p2) -> b t (h w) (c p1 p2)", p1=patch, p2=patch)


def unpatchify(tokens: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """(B, T, Nv, C*p*p) -> (B, T, C, h, w); height/width are the latent grid's."""
    return rearrange(
        tokens, "b t (h w) (c p1 p2) -> b t c (h p1) (w p2)", h=height // patch, w=width // patch, p1=patch, p2=patch
    )
