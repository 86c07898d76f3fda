"""scripts/fit_prior.py: the phone prior fitted alone learns to read the given audio (a real small
checkpoint, a latent cache whose mouths follow the audio and not the phones)."""

import json
from pathlib import Path

import pytest
import torch
from conftest import SMALL_CONFIG, load_script

from avgen.checkpoint import AVGenModel, load_checkpoint, save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fit_prior.py"


def test_the_fitted_prior_follows_mouths_set_by_the_audio_and_the_rest_of_the_model_is_kept(tmp_path):
    torch.manual_seed(0)
    cfg = SMALL_CONFIG.replace(phone_prior=True)
    source = tmp_path / "prior.safetensors"
    save_checkpoint(AVGenModel(cfg), source)
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
    kept = {k: v for k, v in before.state_dict().items() if not k.startswith("phone_prior.")}
    assert all(torch.equal(v, after.state_dict()[k]) for k, v in kept.items())  # the transformer is unchanged


def test_a_checkpoint_without_a_prior_is_refused(small_checkpoint, tmp_path):
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main([str(small_checkpoint), "--cache", "x", "--heard", "y", "--out", str(tmp_path / "o")])
