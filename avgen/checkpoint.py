"""The whole model (codecs + transformer) and its checkpoint: safetensors plus the config.

A checkpoint alone rebuilds its model: the config travels in the safetensors metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from avgen.audio_codec import AudioAutoencoder
from avgen.config import Config
from avgen.files import atomic_path, file_hash  # noqa: F401  (file_hash: checkpoint ids)
from avgen.model import AVTransformer
from avgen.video_codec import VideoAutoencoder

FORMAT = "avgen-checkpoint-1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not an avgen checkpoint."""


class AVGenModel(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.video_codec = VideoAutoencoder(cfg)
        self.audio_codec = AudioAutoencoder(cfg)
        self.transformer = AVTransformer(cfg)


def default_checkpoint(preset: str = "tiny") -> Path | None:
    """The weights for a preset in AVGEN_WEIGHTS_DIR if set, else those shipped in the package."""
    folder = Path(os.environ.get("AVGEN_WEIGHTS_DIR") or WEIGHTS_DIR)
    path = folder / f"{preset}.safetensors"
    return path if path.is_file() else None


def _persistent_state(model: AVGenModel) -> dict[str, torch.Tensor]:
    # Fixed DSP tensors (mel filter banks, STFT windows) are rebuilt from the config, not stored.
    fixed = ("audio_codec.mel.", "audio_codec.inverse_mel.", "audio_codec.griffin_lim.")
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith(fixed)}


def save_checkpoint(model: AVGenModel, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": model.cfg.to_json(), **(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(_persistent_state(model), str(tmp), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", only: tuple[str, ...] = ()) -> AVGenModel:
    """The model a checkpoint describes. `only` loads just those parts (e.g. the codecs, for
    training a transformer on them) and leaves the rest as initialised."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an avgen checkpoint (no '{FORMAT}' metadata)")
    model = AVGenModel(Config.from_json(meta["config"]))
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    parts = tuple(f"{part}." for part in only)
    if parts:
        state = {k: v for k, v in state.items() if k.startswith(parts)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k in _persistent_state(model) and (not parts or k.startswith(parts))]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(device).eval()
