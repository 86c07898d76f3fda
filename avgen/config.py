"""Every hyper-parameter of the model, its codecs and its default sampler, in one dataclass.

A checkpoint stores this config, so a checkpoint alone rebuilds its model. Presets are configs,
not code: `tiny` is the CPU default (64x64), `base` the same code at GPU scale (256x256).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from avgen.timeline import FPS

VIDEO_DOWNSAMPLE = 8  # the video codec's spatial downsampling (three stride-2 stages)


@dataclass(frozen=True)
class Config:
    preset: str = "tiny"
    # media
    height: int = 64
    width: int = 64
    # video codec: RGB frame -> (video_latent_channels, H/8, W/8)
    video_codec_channels: tuple[int, ...] = (32, 64, 96)
    video_latent_channels: int = 8
    # audio codec: 16 kHz -> log-mel (100/s) -> audio_latent_channels at 25/s
    n_mels: int = 64
    n_fft: int = 512
    audio_codec_channels: int = 128
    audio_latent_channels: int = 16
    griffin_lim_iters: int = 32
    # transformer
    patch_size: int = 2
    hidden: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    # a small convolutional predictor of each frame's video-latent variation (the mouth) from the
    # phones around it, fed to the video tokens and trained by its own loss (AVTransformer.phone_prior)
    phone_prior: bool = False
    prior_audio: bool = False  # the phone prior also reads the audio latents where they are given clean
    window_seconds: float = 0.5  # a token attends to tokens within +-window on the timeline
    rope_theta: float = 10_000.0
    rope_units_per_second: float = 25.0  # rotary position of a token = its time in s * this
    # long clips: chunk by chunk, each chunk starting with `overlap` already-generated seconds
    chunk_seconds: float = 4.0
    overlap_seconds: float = 0.8
    # without a reference image, a clip of several chunks or longer than this first generates its
    # first second alone and holds every chunk to its face (avgen.pipeline); one token sees only
    # depth x window seconds around it, so a longer lone chunk lets the face wander (the shipped
    # weights set 1.0: even a 4 s clip's hair and background drift without a reference)
    self_reference_over_seconds: float = 4.8
    # default sampler
    sampler: str = "euler"
    steps: int = 8
    guidance: float = 2.0  # classifier-free guidance scale (`--cfg` on the command line)
    shift: float = 1.0
    # distilled: the transformer also takes the guidance scale and the step size, so one forward
    # makes a guided step of any size (guidance distillation + shortcut fine-tuning, `avgen train distill`)
    distilled: bool = False

    def __post_init__(self) -> None:
        cell = VIDEO_DOWNSAMPLE * self.patch_size
        if self.height % cell or self.width % cell:
            raise ValueError(f"height and width must be multiples of {cell} (8x codec, {self.patch_size}x patches)")
        if len(self.video_codec_channels) != 3:
            raise ValueError("video_codec_channels needs 3 stages (8x spatial downsampling)")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.head_dim % 8:
            raise ValueError(f"head_dim {self.head_dim} must be a multiple of 8 (rotary axes t, y, x)")
        if not 0 <= self.overlap_frames < self.chunk_frames:
            raise ValueError("overlap_seconds must be >= 0 and shorter than chunk_seconds")
        if self.self_reference_over_seconds < 0:
            raise ValueError("self_reference_over_seconds must be >= 0")
        if self.sampler not in ("euler", "heun"):
            raise ValueError(f"sampler must be 'euler' or 'heun', not {self.sampler!r}")
        if self.prior_audio and not self.phone_prior:
            raise ValueError("prior_audio is an input of the phone prior: it needs phone_prior")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def latent_height(self) -> int:
        return self.height // VIDEO_DOWNSAMPLE

    @property
    def latent_width(self) -> int:
        return self.width // VIDEO_DOWNSAMPLE

    @property
    def video_tokens_per_frame(self) -> int:
        return (self.latent_height // self.patch_size) * (self.latent_width // self.patch_size)

    @property
    def video_token_dim(self) -> int:
        return self.video_latent_channels * self.patch_size**2

    @property
    def window_frames(self) -> int:
        return round(self.window_seconds * FPS)

    @property
    def chunk_frames(self) -> int:
        return round(self.chunk_seconds * FPS)

    @property
    def overlap_frames(self) -> int:
        return round(self.overlap_seconds * FPS)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        fields = json.loads(text)
        if "cfg" in fields:  # written before the guidance scale had its own name
            fields["guidance"] = fields.pop("cfg")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            raise ValueError(f"config has unknown fields {sorted(unknown)}: written by a newer avgen?")
        if "video_codec_channels" in fields:
            fields["video_codec_channels"] = tuple(fields["video_codec_channels"])
        return cls(**fields)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def differing(self, other: Config, free: frozenset[str] | set[str]) -> list[str]:
        """The fields, other than those in `free`, whose values differ between self and other."""
        return [f.name for f in dataclasses.fields(self)
                if f.name not in free and getattr(self, f.name) != getattr(other, f.name)]  # fmt: skip


# what a sampler (and distillation) may change in a checkpoint's config: the rest is the model's shape
SAMPLER_FIELDS = frozenset({"steps", "guidance", "shift", "sampler", "distilled"})

PRESETS: dict[str, Config] = {
    "tiny": Config(),
    # GPU scale: 256x256, 32x32 latents -> 256 video tokens per frame; FlexAttention on CUDA.
    "base": Config(
        preset="base",
        height=256,
        width=256,
        video_codec_channels=(128, 256, 512),
        video_latent_channels=16,
        n_mels=80,
        audio_codec_channels=512,
        audio_latent_channels=32,
        griffin_lim_iters=64,
        hidden=1024,
        depth=24,
        heads=16,
        window_seconds=1.0,
        chunk_seconds=5.0,
        overlap_seconds=1.0,
        steps=30,
        shift=3.0,
        guidance=4.0,
        sampler="heun",
    ),
}


def preset(name: str) -> Config:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
