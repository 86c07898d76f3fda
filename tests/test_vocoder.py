"""The learned vocoder (avgen/vocoder.py): the default, Griffin-Lim on request, with shipped weights."""

import numpy as np
import pytest
import torch

from avgen.audio_codec import VOCODE_FRAMES, AudioAutoencoder, AudioStream
from avgen.config import PRESETS
from avgen.data.voices import synthetic_speech
from avgen.pipeline import GenerationError, GenerationRequest, Generator
from avgen.timeline import MELS_PER_FRAME, SAMPLES_PER_FRAME
from avgen.vocoder import WEIGHTS, Vocoder, load_vocoder, mr_stft_distance, save_vocoder

CFG = PRESETS["tiny"]


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return AudioAutoencoder(CFG).eval()


@pytest.fixture(scope="module")
def heldout(codec):
    """2 s of a held-out sentence in a voice stream training never drew (seed 1), and its true log-mel."""
    wave = torch.from_numpy(synthetic_speech("heldout", 0, seed=1))[None]
    wave = wave[:, : 50 * SAMPLES_PER_FRAME]
    return wave, codec.log_mel(wave)


@pytest.fixture(scope="module")
def shipped():
    return load_vocoder(n_mels=CFG.n_mels, n_fft=CFG.n_fft)


@pytest.mark.parametrize("frames", [1, 7, 50])
def test_length_equals_griffin_lims(codec, frames):
    torch.manual_seed(frames)
    mel = torch.randn(2, CFG.n_mels, frames * MELS_PER_FRAME) - 4
    small = Vocoder(CFG.n_mels, CFG.n_fft, dim=32, hidden=64, blocks=2).eval()
    wave = small.vocode(mel)
    assert wave.shape == codec.vocode(mel)[0].shape == (2, frames * SAMPLES_PER_FRAME)
    assert wave.abs().max() <= 1 and torch.isfinite(wave).all()


def test_bad_mel_is_a_clear_error():
    small = Vocoder(CFG.n_mels, CFG.n_fft, dim=32, hidden=64, blocks=2)
    with pytest.raises(ValueError, match="log_mel must be"):
        small.vocode(torch.zeros(1, CFG.n_mels + 1, 8))
    with pytest.raises(ValueError, match="multiple of 4"):
        small.vocode(torch.zeros(1, CFG.n_mels, 6))


def test_shipped_weights_load_and_are_deterministic(shipped, heldout):
    assert WEIGHTS.stat().st_size <= 10 * 2**20
    assert 1e6 <= sum(p.numel() for p in shipped.parameters()) <= 2e6
    _, mel = heldout
    assert torch.equal(shipped.vocode(mel), shipped.vocode(mel))
    with pytest.raises(ValueError, match="n_mels=64, not 80"):
        load_vocoder(n_mels=80)
    with pytest.raises(FileNotFoundError, match="no vocoder weights"):
        load_vocoder("/nonexistent/vocoder.safetensors")


def test_save_load_round_trip(tmp_path, heldout):
    torch.manual_seed(1)
    small = Vocoder(CFG.n_mels, CFG.n_fft, dim=32, hidden=64, blocks=2).eval()
    save_vocoder(small, tmp_path / "v.safetensors")
    again = load_vocoder(tmp_path / "v.safetensors")
    assert again.hparams == small.hparams
    assert torch.equal(again.vocode(heldout[1]), small.vocode(heldout[1]))


def test_shipped_weights_beat_an_untrained_vocoder(shipped, heldout):
    wave, mel = heldout
    torch.manual_seed(0)
    untrained = Vocoder(**shipped.hparams).eval()
    with torch.no_grad():
        learned_d = mr_stft_distance(shipped.vocode(mel), wave).item()
        untrained_d = mr_stft_distance(untrained.vocode(mel), wave).item()
    assert learned_d < 0.6 * untrained_d, (learned_d, untrained_d)


def test_audio_stream_takes_the_vocoder(codec, shipped):
    """Behind a parameter: one segment is the vocoder on the decoded mel exactly; longer clips are
    cut and cross-faded like Griffin-Lim's and come out exact in length."""
    torch.manual_seed(2)
    short = torch.randn(1, 30, CFG.audio_latent_channels)
    with torch.no_grad():
        assert torch.equal(codec.decode(short, vocoder=shipped), shipped.vocode(codec.decode_mel(short)))
        frames = 2 * VOCODE_FRAMES + 13
        latents = torch.randn(1, frames, CFG.audio_latent_channels)
        whole = codec.decode(latents, vocoder=shipped)
        stream, pieces = AudioStream(codec, frames, vocoder=shipped), []
        for a in range(0, frames, 17):
            pieces += stream.push(latents[:, a : a + 17])
        pieces += stream.finish()
    assert whole.shape == (1, frames * SAMPLES_PER_FRAME)
    assert torch.equal(torch.cat(pieces, dim=-1), whole)
    assert not torch.equal(whole, codec.decode(latents))  # Griffin-Lim stays the default


def test_shipped_weights_are_closer_to_the_truth_than_griffin_lim(codec, shipped, heldout):
    wave, mel = heldout
    with torch.no_grad():
        learned_d = mr_stft_distance(shipped.vocode(mel), wave).item()
        griffin_lim_d = mr_stft_distance(codec.vocode(mel, seed=0)[0], wave).item()
    assert learned_d < griffin_lim_d, (learned_d, griffin_lim_d)


def test_generation_uses_the_learned_vocoder_unless_griffin_lim_is_asked_for(small_checkpoint):
    generator = Generator.load(small_checkpoint)
    learned = generator.generate(GenerationRequest(text="hello there", seed=3))
    griffin_lim = generator.generate(GenerationRequest(text="hello there", seed=3, vocoder="griffin-lim"))
    assert (learned.metadata["avgen_vocoder"], griffin_lim.metadata["avgen_vocoder"]) == ("learned", "griffin-lim")
    assert (learned.frames == griffin_lim.frames).all()  # the vocoder changes the waveform only
    assert learned.audio.shape == griffin_lim.audio.shape and not np.allclose(learned.audio, griffin_lim.audio)
    with pytest.raises(GenerationError, match="vocoder must be one of learned, griffin-lim"):
        generator.check(GenerationRequest(text="hello", vocoder="wavenet"))
