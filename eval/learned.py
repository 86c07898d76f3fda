"""The `learned` sync backend: a sync embedding this project trains on its own synthetic
talking-head corpus (drawn 64x64 faces), with the SyncNet protocol.

The network and its weights arrive with the training issue (as package data of eval/); until
then this backend scores nothing and each row's `error` says so.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights" / "learned_sync.safetensors"


def unavailable_reason() -> str | None:
    """Why the learned backend cannot score in this install, or None once it can."""
    if not WEIGHTS.is_file():
        return "the learned sync scorer has no trained weights in this install yet; use --backend landmarks"
    return f"{WEIGHTS} exists but this version of avgen has no loader for it; upgrade avgen"
