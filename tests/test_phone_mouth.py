"""scripts/phone_mouth.py: real corpus drawings, real codecs and transformer (a small untrained checkpoint)."""

import json
from pathlib import Path

import pytest
from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "phone_mouth.py"


def test_the_clean_prediction_is_the_truth_and_noise_hides_it_from_an_untrained_model(small_checkpoint, tmp_path):
    script = load_script(SCRIPT)
    out = tmp_path / "r.json"
    assert (
        script.main([str(small_checkpoint), "--clips", "3", "--frames", "12", "--times", "0", "1", "--json", str(out)])
        == 0
    )
    (result,) = json.loads(out.read_text())
    assert result["windows"] == 3 and set(result["times"]) == {"0", "1"}
    for mode in script.MODES:  # at t = 0 the prediction x_t - 0 * v is the clean latents themselves
        assert result["times"]["0"][mode] == {"r": pytest.approx(1.0), "amplitude": pytest.approx(1.0)}
        assert abs(result["times"]["1"][mode]["r"]) < 0.9  # pure noise: an untrained model knows no mouth


def test_times_outside_the_path_are_refused(small_checkpoint):
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main([str(small_checkpoint), "--times", "1.5"])


def test_the_probe_fitted_on_the_windows_it_is_scored_on_finds_their_mouths(small_checkpoint, tmp_path):
    import torch

    from avgen.checkpoint import load_checkpoint

    script = load_script(SCRIPT)
    with torch.no_grad():
        windows = script.still_windows(load_checkpoint(small_checkpoint).eval(), 4, 20)
    cache = tmp_path / "latents.pt"
    torch.save(dict(zip(("video", "audio", "phones", "reference"), windows)), cache)
    assert script.probe(str(cache), windows, steps=300) > 0.8
    shuffled = (windows[0], windows[1], windows[2][torch.randperm(4)], windows[3])  # another window's phones
    assert script.probe(str(cache), shuffled, steps=300) < 0.6
