"""Video autoencoder: RGB frames <-> latent grids at 8x spatial downsampling, frame by frame."""

from __future__ import annotations

import torch
from torch import nn

from avgen.config import Config


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.GroupNorm(min(8, c_out), c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.SiLU(),
    )


class VideoAutoencoder(nn.Module):
    """(N, 3, H, W) in [-1, 1] <-> (N, C, H/8, W/8) normalised latents."""

    def __init__(self, cfg: Config):
        super().__init__()
        c1, c2, c3 = cfg.video_codec_channels
        latent = cfg.video_latent_channels
        self.encoder = nn.Sequential(
            _conv_block(3, c1, stride=2),
            _conv_block(c1, c2, stride=2),
            _conv_block(c2, c3, stride=2),
            nn.Conv2d(c3, latent, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, c3, 1),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv_block(c3, c2),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv_block(c2, c1),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv_block(c1, c1),
            nn.Conv2d(c1, 3, 3, padding=1),
            nn.Tanh(),
        )
        # Per-channel statistics of the latents, set after codec training, so the transformer
        # sees roughly unit-variance latents (flow matching assumes data and noise on one scale).
        self.register_buffer("latent_mean", torch.zeros(latent))
        self.register_buffer("latent_std", torch.ones(latent))

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        z = self.encoder(frames)
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents * self.latent_std[:, None, None] + self.latent_mean[:, None, None]
        return self.decoder(z)

    @torch.no_grad()
    def round_trip(self, frames_uint8: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """(N, H, W, 3) uint8 frames encoded and decoded: what the latent space keeps of them."""
        pieces = [self.decode(self.encode(frames_to_tensor(part))) for part in frames_uint8.split(batch)]
        return tensor_to_frames(torch.cat(pieces))


def frames_to_tensor(frames_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return frames_uint8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_frames(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1] -> (N, H, W, 3) uint8."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
