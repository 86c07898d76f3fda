"""The `learned` lip-sync backend: a small sync embedding this project trains on its own synthetic
talking-head corpus, scored with the SyncNet protocol (eval.protocol).

What it was trained on
    Drawn 64x64 faces of avgen's synthetic corpus (avgen.data: procedural faces whose visemes follow
    the phone timeline of source-filter speech), train split only (held-out identities and sentences
    never seen). It knows those faces; on real faces use the `landmarks` or `syncnet` backends.
    Its distances and confidences are on its own scale (distances between L2-normalised 128-d
    embeddings, 0..2): compare them with each other, not with published SyncNet LSE-D / LSE-C.

Inputs (25 fps RGB frames, 16 kHz mono audio)
    Video: the mouth region of eval.landmarks.mouth_patches (the lower third of a Haar face box tracked
    over the clip, or the fixed lower-centre region when no face is found; the `landmarks` backend
    itself now uses face-mesh lip landmarks, but these patches are unchanged, bit for bit),
    grayscale 32x16, normalised per clip (zero mean, unit std over the whole clip); window i stacks
    frames i..i+4 as 5 channels.
    Audio: log-mel, 40 bands (0-8 kHz), 25 ms windows every 10 ms with no centring, so mel frame k
    covers samples 160k..160k+400 as SyncNet's MFCC frames do; power floored 50 dB below the clip's
    peak (gain-invariant), each band's clip mean subtracted, divided by the clip's std. Audio window
    i = mel frames 4i..4i+19: the same 200 ms as video frames i..i+4 (as SyncNet's 1x13x20 MFCC
    windows). A clip of T frames gives T-4 windows (at least 5 frames are needed).

Network (about 0.75 M parameters, 3 MB float32)
    Two conv towers (3x3 conv + BatchNorm + ReLU, channels 32-64-96-128, three stride-2 stages) each
    followed by a linear layer to a 128-d embedding, L2-normalised. Video in 5x16x32, audio in 1x40x20.

Training (avgen/train_sync_scorer.py; retrain with `python -m avgen.train_sync_scorer --steps N --out PATH`)
    Contrastive, the SyncNet idea with an InfoNCE loss: each video window's positive is its aligned
    audio window; its negatives are every other audio window of the batch: the same clip's audio
    shifted by any number of frames (hard negatives) and other clips' audio (easy ones); symmetric
    (audio -> video too), cosine similarity / temperature. Augmentations so it is not brittle on
    generated video: per-frame brightness/contrast jitter, pixel noise, blur, small shifts and scales
    of the mouth patch, audio noise and gain. The weight file (eval/weights/learned_sync.safetensors)
    carries its config, step count and training data in its safetensors metadata.

Scoring
    Per-window embeddings of both streams go through eval.protocol.sync_offset (offsets -15..+15):
    offset = 15 - argmin of the mean distance (delaying the audio by k frames changes the offset by
    -k), distance = that minimum, confidence = median - minimum.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avgen.files import file_hash
from eval.landmarks import mouth_patches
from eval.protocol import VSHIFT, SyncResult, sync_offset

WEIGHTS = Path(__file__).resolve().parent / "weights" / "learned_sync.safetensors"
FORMAT = "avgen-learned-sync-v1"
TRAINED_ON = "trained on drawn 64x64 faces of avgen's synthetic corpus (train split)"
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
WINDOW = 5  # video frames per window
MEL_PER_FRAME = 4  # 10 ms mel hops per 40 ms video frame
MIN_FRAMES = WINDOW


@dataclass(frozen=True)
class LearnedConfig:
    n_mels: int = 40
    n_fft: int = 400  # 25 ms
    hop: int = 160  # 10 ms
    mel_floor_db: float = 50.0
    patch_w: int = 32  # eval.landmarks.ROI_SIZE
    patch_h: int = 16
    window: int = WINDOW
    channels: tuple[int, ...] = (32, 64, 96, 128)
    dim: int = 128

    @property
    def audio_steps(self) -> int:
        return self.window * MEL_PER_FRAME

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LearnedConfig:
        data = json.loads(text)
        data["channels"] = tuple(data["channels"])
        return cls(**data)


def _tower(in_channels: int, channels: tuple[int, ...]) -> nn.Sequential:
    layers, c_in = [], in_channels
    for i, c in enumerate(channels):
        layers += [
            nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        ]
        c_in = c
    return nn.Sequential(*layers, nn.Flatten())


def _out_size(n: int, stages: int) -> int:
    for _ in range(stages):
        n = (n + 1) // 2
    return n


class LearnedSync(nn.Module):
    """Two towers: video windows (N, 5, 16, 32) and audio windows (N, 1, 40, 20) -> (N, 128) unit vectors."""

    def __init__(self, config: LearnedConfig = LearnedConfig()):
        super().__init__()
        self.config = config
        c, stages = config.channels, len(config.channels) - 1
        self.video = _tower(config.window, c)
        self.video_fc = nn.Linear(
            c[-1] * _out_size(config.patch_h, stages) * _out_size(config.patch_w, stages), config.dim
        )
        self.audio = _tower(1, c)
        self.audio_fc = nn.Linear(
            c[-1] * _out_size(config.n_mels, stages) * _out_size(config.audio_steps, stages), config.dim
        )

    def embed_video(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.video_fc(self.video(x)), dim=-1)

    def embed_audio(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.audio_fc(self.audio(x)), dim=-1)


# ------------------------------------------------------------------ features

_mel_cache: dict = {}


def _mel_transform(config: LearnedConfig):
    key = (config.n_fft, config.hop, config.n_mels)
    if key not in _mel_cache:
        import torchaudio

        _mel_cache[key] = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=config.n_fft,
            win_length=config.n_fft,
            hop_length=config.hop,
            f_min=0.0,
            f_max=SAMPLE_RATE / 2,
            n_mels=config.n_mels,
            center=False,
            power=2.0,
        )
    return _mel_cache[key]


def _mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono 16 kHz samples (N,), got shape {audio.shape}")
    return audio


def log_mel(audio, frames: int, config: LearnedConfig = LearnedConfig()) -> torch.Tensor:
    """(n_mels, 4*frames) normalised log-mel of 16 kHz audio cut / zero-padded to `frames` video frames.
    Accepts (N,) or batched (B, N) audio (then returns (B, n_mels, 4*frames))."""
    audio = torch.as_tensor(np.asarray(audio, np.float32) if not torch.is_tensor(audio) else audio, dtype=torch.float32)
    n = frames * SAMPLES_PER_FRAME
    # pad so the last of the 4*frames mel frames (160k..160k+400) fits: n - 160 + 400 samples
    total = n + config.n_fft - config.hop
    if audio.shape[-1] >= total:
        audio = audio[..., :total]
    else:
        audio = nn.functional.pad(audio[..., :n], (0, total - min(audio.shape[-1], n)))
    mel = _mel_transform(config)(audio)[..., : frames * MEL_PER_FRAME]
    peak = mel.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    mel = torch.log(mel + peak * 10 ** (-config.mel_floor_db / 10))
    mel = mel - mel.mean(dim=-1, keepdim=True)
    return mel / mel.std(dim=(-2, -1), keepdim=True).clamp_min(1e-5)


def audio_windows(mel: torch.Tensor, config: LearnedConfig = LearnedConfig()) -> torch.Tensor:
    """(n_mels, 4T) -> (T-4, 1, n_mels, 20): window i = mel frames 4i..4i+19."""
    n = mel.shape[-1] // MEL_PER_FRAME - config.window + 1
    idx = MEL_PER_FRAME * torch.arange(n)[:, None] + torch.arange(config.audio_steps)[None, :]
    return mel[:, idx].permute(1, 0, 2).unsqueeze(1).contiguous()


def normalise_patches(patches) -> torch.Tensor:
    """(T, 16, 32) gray mouth patches (0..255) -> zero mean, unit std over the clip."""
    x = torch.as_tensor(
        np.asarray(patches, np.float32) if not torch.is_tensor(patches) else patches, dtype=torch.float32
    )
    x = x - x.mean()
    return x / x.std().clamp_min(1.0 / 255)


def video_windows(patches: torch.Tensor, config: LearnedConfig = LearnedConfig()) -> torch.Tensor:
    """(T, 16, 32) normalised patches -> (T-4, 5, 16, 32): window i = frames i..i+4 as channels."""
    return patches.unfold(0, config.window, 1).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------ weights


class LearnedWeightsError(ValueError):
    """The learned scorer's weight file is missing, corrupt or of another format."""


def _path(path) -> Path:
    return Path(WEIGHTS if path is None else path)


def weights_hash(path=None) -> str:
    """avgen.files.file_hash of the weight file (default: the shipped weights)."""
    return file_hash(_path(path))


def read_metadata(path=None) -> dict:
    from safetensors import safe_open

    path = _path(path)
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_learned(path=None) -> LearnedSync:
    """The learned sync network from a safetensors file written by avgen.train_sync_scorer (default: the
    shipped eval/weights/learned_sync.safetensors), in eval mode. Raises LearnedWeightsError with the
    reason when the file is missing, not a safetensors file, or not this network's weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _path(path)
    if not path.is_file():
        raise LearnedWeightsError(
            f"the learned sync scorer has no trained weights at {path}; retrain with "
            "`python -m avgen.train_sync_scorer` or use --backend landmarks"
        )
    try:
        meta = read_metadata(path)
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise LearnedWeightsError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e
    if meta.get("format") != FORMAT or "config" not in meta:
        raise LearnedWeightsError(
            f"{path} is not a learned sync weight file (metadata format {meta.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        model = LearnedSync(LearnedConfig.from_json(meta["config"]))
        model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise LearnedWeightsError(f"{path} does not hold weights of the learned sync network: {e}") from e
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise LearnedWeightsError(f"{path} holds non-finite weights")
    model.steps = int(meta.get("steps", 0))
    return model.eval()


def unavailable_reason(path=None) -> str | None:
    """Why the learned backend cannot score in this install, or None when its weights load."""
    try:
        load_learned(path)
    except LearnedWeightsError as e:
        return str(e)
    return None


# ------------------------------------------------------------------ scoring


@torch.no_grad()
def embeddings(
    frames: np.ndarray, audio: np.ndarray, model: LearnedSync, detect_face: bool = True
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-window video and audio embeddings, each (T-4, 128) float64, and the face description."""
    config = model.config
    audio = _mono(audio)
    patches, _, face = mouth_patches(frames, detect_face)  # ValueError for < 5 frames or bad shapes
    if patches.shape[1:] != (config.patch_h, config.patch_w):
        raise ValueError(f"mouth patches are {patches.shape[1:]}, the model expects {(config.patch_h, config.patch_w)}")
    video = video_windows(normalise_patches(patches), config)
    mel = audio_windows(log_mel(audio, len(patches), config), config)
    model.eval()
    v = torch.cat([model.embed_video(chunk) for chunk in video.split(1024)])
    a = torch.cat([model.embed_audio(chunk) for chunk in mel.split(1024)])
    return v.double().numpy(), a.double().numpy(), face


def score_learned(
    frames: np.ndarray, audio: np.ndarray, model: LearnedSync | None = None, detect_face: bool = True
) -> tuple[SyncResult, str]:
    """Lip-sync of RGB frames (T, H, W, 3) at 25 fps against 16 kHz mono audio with the learned embedding.

    Returns (SyncResult on the SyncNet protocol, offsets -15..+15; face description). Raises ValueError
    for fewer than 5 frames or malformed input. `model` defaults to the shipped weights."""
    frames = np.asarray(frames)
    if frames.ndim == 4 and len(frames) < MIN_FRAMES:
        raise ValueError(f"lip-sync scoring needs at least {MIN_FRAMES} frames (one 5-frame window), got {len(frames)}")
    model = load_learned() if model is None else model
    v, a, face = embeddings(frames, audio, model, detect_face)
    return sync_offset(v, a, vshift=VSHIFT), f"{face}; learned sync embedding (drawn-face corpus)"
