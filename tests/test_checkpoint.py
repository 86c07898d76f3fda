"""Checkpoints: safetensors + config; a checkpoint alone rebuilds its model."""

import pytest
import torch
from safetensors.torch import save_file

from avgen.checkpoint import AVGenModel, CheckpointError, file_hash, load_checkpoint, read_metadata, save_checkpoint
from avgen.config import Config


def test_checkpoint_alone_rebuilds_the_same_model(tmp_path):
    cfg = Config(hidden=64, depth=2, heads=2, video_latent_channels=4, n_mels=48)
    torch.manual_seed(3)
    model = AVGenModel(cfg)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, metadata={"step": "7"})
    loaded = load_checkpoint(path)
    assert loaded.cfg == cfg
    assert read_metadata(path)["step"] == "7"
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    assert len(file_hash(path)) == 16
    assert not list(tmp_path.glob(".*tmp"))


def test_missing_corrupt_or_foreign_files_give_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an avgen checkpoint"):
        load_checkpoint(foreign)


def test_truncated_checkpoint_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(AVGenModel(Config(hidden=64, depth=1, heads=2)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_loading_only_the_codecs_ignores_the_rest_of_the_file(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    cfg = Config(hidden=64, depth=1, heads=2)
    model = AVGenModel(cfg)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    state = load_file(str(path))
    del state["transformer.patch_position"]  # e.g. codecs trained by an older transformer layout
    older = tmp_path / "older.safetensors"
    save_file(state, str(older), metadata=read_metadata(path))
    with pytest.raises(CheckpointError, match="patch_position"):
        load_checkpoint(older)
    codecs_only = load_checkpoint(older, only=("video_codec", "audio_codec"))
    assert torch.equal(codecs_only.video_codec.encoder[0][0].weight, model.video_codec.encoder[0][0].weight)
