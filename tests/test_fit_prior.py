"""scripts/fit_prior.py: the phone prior fitted alone learns to read the given audio (a real small
checkpoint, a latent cache whose mouths follow the audio and not the phones)."""

import json
from pathlib import Path

import pytest
import torch
from conftest import SMALL_CONFIG, load_script

from avgen.checkpoint import AVGenModel, load_checkpoint, read_metadata, save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fit_prior.py"


def test_the_fitted_prior_follows_mouths_set_by_the_audio_and_the_rest_of_the_model_is_kept(tmp_path):
    torch.manual_seed(0)
    cfg = SMALL_CONFIG.replace(phone_prior=True)
    source = tmp_path / "prior.safetensors"
    save_checkpoint(AVGenModel(cfg), source, metadata={"steps": "7", "objective": "distill"})
    windows, frames = 48, 20
    audio = torch.randn(windows, frames, cfg.audio_latent_channels)
    video = torch.zeros(windows, frames, cfg.video_tokens_per_frame, cfg.video_token_dim)
    video[:, :, 0] = audio[:, :, :1]  # the mouth (the token that moves most) opens with the audio
    phones = torch.randint(1, 20, (windows, frames))  # phones that say nothing of it
    cache, heard = tmp_path / "latents.pt", tmp_path / "heard.pt"
    torch.save({"video": video, "audio": audio, "phones": phones}, cache)
    torch.save({"windows": None, "heard": torch.randint(1, 20, (windows, frames))}, heard)
    out = tmp_path / "fitted.safetensors"
    args = ["--cache", str(cache), "--heard", str(heard), "--out", str(out), "--steps", "300", "--every", "100"]
    assert load_script(SCRIPT).main([str(source), *args, "--held-out", "8", "--train", "all"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert abs(report["before"]["heard phones"]) < 0.5 and report["after"]["heard phones + audio"] > 0.8
    before, after = load_checkpoint(source).transformer, load_checkpoint(out).transformer
    assert after.cfg.prior_audio and not before.cfg.prior_audio
    meta = read_metadata(out)  # the transformer's provenance is the source's, and the fit is recorded
    assert meta["steps"] == "7" and meta["objective"] == "distill" and "prior_fitted_from" in meta
    kept = {k: v for k, v in before.state_dict().items() if not k.startswith("phone_prior.")}
    assert all(torch.equal(v, after.state_dict()[k]) for k, v in kept.items())  # the transformer is unchanged


def test_a_checkpoint_without_a_prior_and_mismatched_inputs_are_refused(small_checkpoint, tmp_path, capsys):
    script = load_script(SCRIPT)
    cache, heard = tmp_path / "latents.pt", tmp_path / "heard.pt"
    torch.save(
        {
            "video": torch.zeros(4, 6, 16, 32),
            "audio": torch.zeros(4, 6, 16),
            "phones": torch.ones(4, 6, dtype=torch.long),
        },
        cache,
    )
    torch.save({"windows": None, "heard": torch.ones(4, 6, dtype=torch.long)}, heard)
    files = ["--cache", str(cache), "--heard", str(heard), "--out", str(tmp_path / "o.safetensors")]
    with pytest.raises(SystemExit):
        script.main([str(small_checkpoint), *files])
    assert "has no phone prior" in capsys.readouterr().err
    prior = tmp_path / "prior.safetensors"
    save_checkpoint(AVGenModel(SMALL_CONFIG.replace(phone_prior=True)), prior)
    with pytest.raises(SystemExit):
        script.main([str(prior), *files, "--held-out", "4"])  # nothing left to fit
    assert "must match" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([str(prior), *files[:2], "--heard", str(tmp_path / "missing.pt"), *files[4:]])
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
