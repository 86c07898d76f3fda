"""A small learned vocoder (Vocos-style): the codec's log-mel -> waveform; generation's default (Griffin-Lim on request).

ConvNeXt blocks over the mel frames, then an iSTFT head: per STFT frame it predicts a log-magnitude
(exp, clipped) and a phase angle (as cos/sin), and torch.istft with the codec's own STFT (n_fft,
hop 160, 400-sample Hann window, centred) makes the waveform. One forward pass, no iterations, no
randomness: the same mel always gives the same samples. Its output has exactly the length that
`AudioAutoencoder.vocode` (Griffin-Lim) gives for the same mel: 640 samples per 4 mel frames.

Trained by scripts/train_vocoder.py on the synthetic speech of avgen.data.voices (wider voices than
the corpus draws, channel augmentation), with mel L1 and multi-resolution STFT losses; the shipped
weights are avgen/weights/vocoder.safetensors, for the `tiny` preset's mel (n_mels 64, n_fft 512):
35 min on this CPU, then 6 min on one H200 (scripts/gpu_session.sh; docs/training.md).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from avgen.files import atomic_path
from avgen.timeline import MEL_HOP, MELS_PER_FRAME, SAMPLES_PER_FRAME

WEIGHTS = Path(__file__).parent / "weights" / "vocoder.safetensors"
WIN_LENGTH = 400  # the codec's STFT window (25 ms)
MAX_LOG_MAGNITUDE = 6.0  # exp() of the predicted log-magnitude is clipped here (e^6 ~ 400, far above speech)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm -> pointwise MLP (GELU) -> layer scale, residual."""

    def __init__(self, dim: int, hidden: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1, self.pw2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim, n)
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.gamma * self.pw2(nn.functional.gelu(self.pw1(y)))
        return x + y.transpose(1, 2)


class Vocoder(nn.Module):
    def __init__(self, n_mels: int = 64, n_fft: int = 512, dim: int = 192, hidden: int = 576, blocks: int = 6):
        super().__init__()
        self.hparams = {"n_mels": n_mels, "n_fft": n_fft, "dim": dim, "hidden": hidden, "blocks": blocks}
        self.n_mels, self.n_fft = n_mels, n_fft
        self.embed = nn.Conv1d(n_mels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, hidden, 1.0 / blocks) for _ in range(blocks))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, n_fft + 2)  # log-magnitude and phase angle for n_fft/2+1 bins
        self.register_buffer("window", torch.hann_window(WIN_LENGTH), persistent=False)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, 4*T) log-mel -> (B, 640*T) waveform (differentiable; for training)."""
        if log_mel.ndim != 3 or log_mel.shape[1] != self.n_mels:
            raise ValueError(f"log_mel must be (batch, {self.n_mels}, frames), got {tuple(log_mel.shape)}")
        if log_mel.shape[-1] % MELS_PER_FRAME:
            raise ValueError(f"log_mel frames must be a multiple of {MELS_PER_FRAME}, got {log_mel.shape[-1]}")
        frames = log_mel.shape[-1] // MELS_PER_FRAME
        x = torch.cat([log_mel, log_mel[..., -1:]], dim=-1)  # the centred STFT has 4*T + 1 frames, as in vocode
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        mag, angle = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
        mag = torch.exp(mag.clamp(max=MAX_LOG_MAGNITUDE))
        spec = torch.complex(mag * torch.cos(angle), mag * torch.sin(angle))
        return torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=MEL_HOP,
            win_length=WIN_LENGTH,
            window=self.window,
            center=True,
            length=frames * SAMPLES_PER_FRAME,
        )

    @torch.no_grad()
    def vocode(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, 4*T) log-mel -> (B, 640*T) waveform in [-1, 1], as Griffin-Lim's `vocode` returns."""
        device = next(self.parameters()).device
        return self(log_mel.float().to(device)).clamp(-1, 1)


def save_vocoder(vocoder: Vocoder, path: str | Path, extra: dict | None = None) -> None:
    """Weights and their hyper-parameters (as metadata) in one safetensors file, written atomically."""
    meta = {"hparams": json.dumps(vocoder.hparams), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    state = {k: v.detach().contiguous().cpu() for k, v in vocoder.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def vocoder_metadata(path: str | Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


VOCODERS = ("learned", "griffin-lim")  # what `avgen generate --vocoder` takes; learned is the default


@functools.cache
def _shipped_hparams() -> dict | None:
    return vocoder_metadata(WEIGHTS).get("hparams") if WEIGHTS.is_file() else None


def learned_vocoder_fits(cfg) -> bool:
    """Whether the shipped vocoder was trained on this config's mel (n_mels, n_fft): then it is the default."""
    hparams = _shipped_hparams()
    return hparams is not None and (hparams["n_mels"], hparams["n_fft"]) == (cfg.n_mels, cfg.n_fft)


def load_vocoder(path: str | Path | None = None, n_mels: int | None = None, n_fft: int | None = None) -> Vocoder:
    """The learned vocoder from `path` (default: the shipped weights), in eval mode on the CPU.
    n_mels / n_fft, when given (a config's), must match what the weights were trained for."""
    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"no vocoder weights at {path}")
    hparams = vocoder_metadata(path).get("hparams")
    if hparams is None:
        raise ValueError(f"{path} is not a vocoder checkpoint (no hparams in its metadata)")
    for name, want in (("n_mels", n_mels), ("n_fft", n_fft)):
        if want is not None and hparams[name] != want:
            raise ValueError(f"the vocoder at {path} was trained for {name}={hparams[name]}, not {want}")
    vocoder = Vocoder(**hparams)
    vocoder.load_state_dict(load_file(str(path)))
    return vocoder.eval()


# ------------------------------------------------------------------ losses and metrics

STFT_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))  # (n_fft = window, hop) at 16 kHz


def mr_stft_distance(wave: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT distance (B, n) vs (B, n) -> scalar: the mean over STFT_RESOLUTIONS of
    spectral convergence ||S - S'||_F / ||S||_F (per clip, then averaged) plus the mean absolute
    difference of natural-log magnitudes (floored at 1e-5). The training loss and the benchmark's metric."""
    total = wave.new_zeros(())
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=wave.device)
        s, t = (
            torch.stft(x, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-5) for x in (wave, target)
        )
        sc = torch.linalg.vector_norm(t - s, dim=(1, 2)) / torch.linalg.vector_norm(t, dim=(1, 2)).clamp_min(1e-8)
        total = total + sc.mean() + (t.log() - s.log()).abs().mean()
    return total / len(STFT_RESOLUTIONS)
