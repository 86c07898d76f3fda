"""Audio autoencoder: 16 kHz mono <-> log-mel (100 frames/s) <-> latents at 25/s.

Audio latent j covers the same 40 ms as video frame j (4 mel frames, 640 samples). Waveforms come
back through torchaudio's Griffin-Lim, the embedded default vocoder.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from avgen.config import Config
from avgen.timeline import MEL_HOP, MELS_PER_FRAME, SAMPLE_RATE, SAMPLES_PER_FRAME

LOG_FLOOR = 1e-5


def _res1d(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.SiLU())


class AudioAutoencoder(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        c, latent = cfg.audio_codec_channels, cfg.audio_latent_channels
        self.n_mels = cfg.n_mels
        self.griffin_lim_iters = cfg.griffin_lim_iters
        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=cfg.n_fft, win_length=400, hop_length=MEL_HOP, n_mels=cfg.n_mels, power=1.0
        )
        self.inverse_mel = torchaudio.transforms.InverseMelScale(cfg.n_fft // 2 + 1, cfg.n_mels, SAMPLE_RATE)
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=cfg.n_fft, n_iter=cfg.griffin_lim_iters, win_length=400, hop_length=MEL_HOP, power=1.0
        )
        # 4x downsampling in time: 100 mel frames/s -> 25 latents/s.
        self.encoder = nn.Sequential(
            nn.Conv1d(cfg.n_mels, c, 3, padding=1), nn.SiLU(),
            nn.Conv1d(c, c, 4, stride=2, padding=1), nn.SiLU(), _res1d(c),
            nn.Conv1d(c, c, 4, stride=2, padding=1), nn.SiLU(), _res1d(c),
            nn.Conv1d(c, latent, 1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv1d(latent, c, 3, padding=1), nn.SiLU(), _res1d(c),
            nn.ConvTranspose1d(c, c, 4, stride=2, padding=1), nn.SiLU(), _res1d(c),
            nn.ConvTranspose1d(c, c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv1d(c, cfg.n_mels, 3, padding=1),
        )  # fmt: skip
        self.register_buffer("latent_mean", torch.zeros(latent))
        self.register_buffer("latent_std", torch.ones(latent))

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, 640*T) -> (B, n_mels, 4*T). The centred STFT's one extra frame is dropped."""
        frames = waveform.shape[-1] // SAMPLES_PER_FRAME
        mel = self.mel(waveform[..., : frames * SAMPLES_PER_FRAME])
        return torch.log(mel[..., : frames * MELS_PER_FRAME] + LOG_FLOOR)

    def encode_mel(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, 4*T) -> (B, T, C) normalised latents."""
        z = self.encoder(log_mel).transpose(1, 2)
        return (z - self.latent_mean) / self.latent_std

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.encode_mel(self.log_mel(waveform))

    def decode_mel(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, n_mels, 4*T) log-mel."""
        z = latents * self.latent_std + self.latent_mean
        return self.decoder(z.transpose(1, 2))

    @torch.no_grad()
    def vocode(self, log_mel: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """(B, n_mels, 4*T) log-mel -> (B, 640*T) waveform via Griffin-Lim (seeded phase init)."""
        frames = log_mel.shape[-1] // MELS_PER_FRAME
        mel = torch.exp(log_mel.float().cpu()).sub(LOG_FLOOR).clamp_min(0)
        mel = torch.cat([mel, mel[..., -1:]], dim=-1)  # the centred STFT has 4*T + 1 frames
        magnitude = self.inverse_mel.cpu()(mel)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            wave = torchaudio.functional.griffinlim(
                magnitude, self.griffin_lim.window.cpu(), self.griffin_lim.n_fft, MEL_HOP, 400, 1.0,
                self.griffin_lim_iters, 0.99, frames * SAMPLES_PER_FRAME, True,
            )  # fmt: skip
        return wave.clamp(-1, 1)

    def decode(self, latents: torch.Tensor, seed: int = 0) -> torch.Tensor:
        return self.vocode(self.decode_mel(latents), seed=seed)
