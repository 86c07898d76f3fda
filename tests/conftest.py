import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from avgen.checkpoint import AVGenModel, save_checkpoint
from avgen.config import Config

# A small model whose every layer does something (DiT-style zero-initialised output layers would
# make an untrained model ignore its conditions), in short chunks so chunking is exercised.
SMALL_CONFIG = Config(hidden=64, depth=2, heads=2, chunk_seconds=1.0, overlap_seconds=0.2, steps=2, guidance=2.0)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = AVGenModel(SMALL_CONFIG)
    with torch.no_grad():
        for p in model.transformer.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("weights") / "small.safetensors"
    save_checkpoint(model, path)
    return path


def load_script(path: Path):
    """A script of scripts/ or benchmarks/ imported as a module (they are not in a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module
