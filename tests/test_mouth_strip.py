"""scripts/mouth_strip.py: one row per stage (ground truth, codec round trip, each guidance scale),
real corpus, codec and generator, with a small untrained checkpoint."""

from pathlib import Path

import cv2
import pytest
import torch
from conftest import load_script

from avgen.checkpoint import AVGenModel, save_checkpoint
from avgen.config import Config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mouth_strip.py"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    save_checkpoint(AVGenModel(Config(hidden=64, depth=2, heads=2, griffin_lim_iters=2)), path)
    return path


def test_rows_and_frames_of_the_strip(checkpoint, tmp_path, capsys):
    strip = load_script(SCRIPT)
    out = tmp_path / "strip.jpg"
    args = ["--checkpoint", str(checkpoint), "--steps", "1", "--guidance", "1", "2", "4", "--frames", "5"]
    assert strip.main([*args, "--out", str(out)]) == 0
    image = cv2.imread(str(out))
    assert image.shape == (64 * 5, 64 * 5, 3)  # ground truth, codec, 3 guidance scales; 5 frames of 64 px
    # the first row is the corpus clip itself: it differs from the untrained model's rows
    assert abs(image[:64].astype(float) - image[-64:]).mean() > 5
    assert "generated, guidance 4" in capsys.readouterr().out


def test_an_image_name_without_a_known_ending_is_an_error(checkpoint, tmp_path):
    strip = load_script(SCRIPT)
    with pytest.raises(SystemExit):
        strip.main(
            ["--checkpoint", str(checkpoint), "--steps", "1", "--guidance", "1", "--out", str(tmp_path / "x.txt")]
        )
