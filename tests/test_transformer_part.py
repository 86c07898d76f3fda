"""scripts/transformer_part.py: a transformer of another shape travels alone in bf16 and is put back
beside a checkpoint's codecs, generating."""

from pathlib import Path

import pytest
import torch
from conftest import load_script

from avgen.checkpoint import AVGenModel, load_checkpoint, read_metadata, save_checkpoint
from avgen.config import Config
from avgen.pipeline import GenerationRequest, Generator

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "transformer_part.py"


def test_a_wider_transformer_goes_and_comes_back_beside_the_teachers_codecs(tmp_path):
    part_script = load_script(SCRIPT)
    torch.manual_seed(0)
    teacher, wide = AVGenModel(Config(hidden=64, depth=2, heads=2)), AVGenModel(Config(hidden=96, depth=3, heads=2))
    save_checkpoint(teacher, tmp_path / "teacher.safetensors")
    save_checkpoint(wide, tmp_path / "wide.safetensors", metadata={"steps": "250", "objective": "flow"})
    part, rebuilt = tmp_path / "wide.transformer.safetensors", tmp_path / "rebuilt.safetensors"
    assert part_script.main(["extract", str(tmp_path / "wide.safetensors"), str(part)]) == 0
    assert part.stat().st_size < 0.6 * (tmp_path / "wide.safetensors").stat().st_size
    assert part_script.main(["rebuild", str(part), str(tmp_path / "teacher.safetensors"), str(rebuilt)]) == 0

    model = load_checkpoint(rebuilt)
    assert (model.cfg.hidden, model.cfg.depth) == (96, 3) and read_metadata(rebuilt)["steps"] == "250"
    for key, value in wide.transformer.state_dict().items():
        assert torch.equal(model.transformer.state_dict()[key], value.to(torch.bfloat16).float()), key
    for key, value in teacher.video_codec.state_dict().items():
        assert torch.equal(model.video_codec.state_dict()[key], value), key
    frames = Generator.load(rebuilt).generate(GenerationRequest(text="hi", seconds=0.4, steps=1)).frames
    assert frames.shape[0] == 10


def test_codecs_of_other_settings_and_whole_checkpoints_are_refused(tmp_path):
    part_script = load_script(SCRIPT)
    save_checkpoint(AVGenModel(Config(hidden=64, depth=2, heads=2)), tmp_path / "a.safetensors")
    save_checkpoint(
        AVGenModel(Config(hidden=64, depth=2, heads=2, video_latent_channels=4)), tmp_path / "b.safetensors"
    )
    part_script.main(["extract", str(tmp_path / "a.safetensors"), str(tmp_path / "a.part")])
    with pytest.raises(SystemExit, match="video_latent_channels"):
        part_script.main(["rebuild", str(tmp_path / "a.part"), str(tmp_path / "b.safetensors"), str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="not a transformer part"):
        part_script.main(
            ["rebuild", str(tmp_path / "a.safetensors"), str(tmp_path / "a.safetensors"), str(tmp_path / "x")]
        )
