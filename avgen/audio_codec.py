"""Audio autoencoder: 16 kHz mono <-> log-mel (100 frames/s) <-> latents at 25/s.

Audio latent j covers the same 40 ms as video frame j (4 mel frames, 640 samples). Waveforms come
back through torchaudio's Griffin-Lim or, given one, the learned vocoder (avgen.vocoder; generation's default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torchaudio
from torch import nn

from avgen.config import Config
from avgen.timeline import MEL_HOP, MELS_PER_FRAME, SAMPLE_RATE, SAMPLES_PER_FRAME

if TYPE_CHECKING:
    from avgen.vocoder import Vocoder

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
    def vocode(
        self, log_mel: torch.Tensor, seed: int = 0, known_phase: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, 4*T) log-mel -> (B, 640*T) waveform via Griffin-Lim, and its final phases
        (B, n_fft/2+1, 4*T+1). The phases start random from `seed` (a local generator: no global
        RNG is touched, so threads never disturb each other), except the first STFT frames where
        `known_phase` (B, n_fft/2+1, k) gives them."""
        frames = log_mel.shape[-1] // MELS_PER_FRAME
        mel = torch.exp(log_mel.float().cpu()).sub(LOG_FLOOR).clamp_min(0)
        mel = torch.cat([mel, mel[..., -1:]], dim=-1)  # the centred STFT has 4*T + 1 frames
        magnitude = self.inverse_mel.cpu()(mel)
        phase = torch.rand(magnitude.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed))
        if known_phase is not None:
            phase[..., : known_phase.shape[-1]] = known_phase
        window, n_fft = self.griffin_lim.window.cpu(), self.griffin_lim.n_fft
        stft = {"n_fft": n_fft, "hop_length": MEL_HOP, "win_length": 400, "window": window}
        previous = torch.zeros((), dtype=torch.complex64)
        for _ in range(self.griffin_lim_iters):  # fast Griffin-Lim (momentum 0.99), as torchaudio's
            wave = torch.istft(magnitude * phase, length=frames * SAMPLES_PER_FRAME, **stft)
            rebuilt = torch.stft(wave, center=True, pad_mode="reflect", return_complex=True, **stft)
            phase = rebuilt - 0.99 * previous
            phase = phase / (phase.abs() + 1e-16)
            previous = rebuilt
        wave = torch.istft(magnitude * phase, length=frames * SAMPLES_PER_FRAME, **stft)
        return wave.clamp(-1, 1), phase

    def decode(self, latents: torch.Tensor, seed: int = 0, vocoder: Vocoder | None = None) -> torch.Tensor:
        """(B, T, C) latents -> (B, 640*T) waveform, vocoded segment by segment (`AudioStream`), by
        Griffin-Lim or, given one, the learned `vocoder` (avgen.vocoder.load_vocoder())."""
        stream = AudioStream(self, latents.shape[1], seed, vocoder)
        return torch.cat([*stream.push(latents), *stream.finish()], dim=-1)


VOCODE_FRAMES = 50  # frames vocoded at once (2 s): memory per segment, not per clip
VOCODE_OVERLAP = 8  # frames on each side of a boundary that both segments vocode, then cross-fade (4 left
# measurable seams on a steady voice: audio flicker 0.03 dB at seams vs 0.005 elsewhere; 8: none)
DECODE_CONTEXT = 8  # latent frames of context each side for the mel decoder (convolutions see ~4)


class AudioStream:
    """Audio latents in, in pieces of any size; waveform out, one segment at a time.

    A clip of T frames is cut at boundaries k * VOCODE_FRAMES (the last segment is 0.5x-1.5x as
    long). Segment k decodes its latents with DECODE_CONTEXT frames each side (the decoder's
    GroupNorm takes statistics over its input, as in training on 2 s windows, so a segment is
    decoded as a window like those) and vocodes frames [boundary - OVERLAP, next boundary + OVERLAP).
    Its Griffin-Lim starts from the phases the previous segment found for the shared frames, so
    both agree there, and the two are cross-faded (raised cosine) over the 2 * OVERLAP frames.
    Output is exact in length; peak memory is one segment's, whatever the clip's duration.

    With a learned `vocoder` (avgen.vocoder) instead of Griffin-Lim, segments are cut and cross-faded
    the same way; it has no phases to carry (it is deterministic: both segments' samples over the
    shared frames differ only where their mels or its receptive field, +-21 mel frames, differ).
    """

    def __init__(self, codec: AudioAutoencoder, frames: int, seed: int = 0, vocoder: Vocoder | None = None):
        self.codec, self.frames, self.seed, self.vocoder = codec, frames, seed, vocoder
        count = max(1, round(frames / VOCODE_FRAMES))
        self.bounds = [k * VOCODE_FRAMES for k in range(count)] + [frames]
        self.latents: torch.Tensor | None = None  # buffered latents, from frame `self.offset`
        self.offset = 0
        self.received = 0
        self.segment = 0
        self.tail: torch.Tensor | None = None  # the previous segment's samples over the next fade
        self.tail_phase: torch.Tensor | None = None

    def push(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """Add (B, n, C) latents (the next n frames); return the waveform pieces now complete."""
        if self.received + latents.shape[1] > self.frames:
            raise ValueError(f"more than the {self.frames} frames this stream was opened for")
        self.latents = latents if self.latents is None else torch.cat([self.latents, latents], dim=1)
        self.received += latents.shape[1]
        out = []
        while self.segment < len(self.bounds) - 1 and self.received >= min(
            self.frames, self._span(self.segment)[1] + DECODE_CONTEXT
        ):
            out.append(self._vocode_next())
        return out

    def finish(self) -> list[torch.Tensor]:
        if self.received != self.frames:
            raise ValueError(f"the stream got {self.received} of its {self.frames} frames")
        return self.push(self.latents[:, :0]) if self.latents is not None else []

    def _span(self, k: int) -> tuple[int, int]:
        """Frames [a, b) that segment k vocodes."""
        return max(0, self.bounds[k] - VOCODE_OVERLAP), min(self.frames, self.bounds[k + 1] + VOCODE_OVERLAP)

    def _vocode_next(self) -> torch.Tensor:
        k, (a, b) = self.segment, self._span(self.segment)
        lo, hi = max(0, a - DECODE_CONTEXT), min(self.frames, b + DECODE_CONTEXT)
        log_mel = self.codec.decode_mel(self.latents[:, lo - self.offset : hi - self.offset])
        log_mel = log_mel[..., (a - lo) * MELS_PER_FRAME : (b - lo) * MELS_PER_FRAME]
        if self.vocoder is None:
            wave, phase = self.codec.vocode(log_mel, seed=self.seed * 1_000_003 + k, known_phase=self.tail_phase)
        else:
            wave, phase = self.vocoder.vocode(log_mel), None
        last = k == len(self.bounds) - 2
        fade = 0 if k == 0 else 2 * VOCODE_OVERLAP * SAMPLES_PER_FRAME  # samples shared with the previous
        if fade:
            ramp = torch.sin(0.5 * torch.pi * (torch.arange(fade) + 0.5) / fade) ** 2
            wave = torch.cat([self.tail * (1 - ramp) + wave[..., :fade] * ramp, wave[..., fade:]], dim=-1)
        if not last:  # keep what the next segment also vocodes, and the phases it starts from
            shared = b - (self.bounds[k + 1] - VOCODE_OVERLAP)
            self.tail = wave[..., -shared * SAMPLES_PER_FRAME :]
            wave = wave[..., : -shared * SAMPLES_PER_FRAME]
            self.tail_phase = None if phase is None else phase[..., -shared * MELS_PER_FRAME - 1 : -1]
            keep_from = self._span(k + 1)[0] - DECODE_CONTEXT  # the latents the next segment needs
            drop = max(0, keep_from - self.offset)
            self.latents, self.offset = self.latents[:, drop:], self.offset + drop
        self.segment += 1
        return wave
