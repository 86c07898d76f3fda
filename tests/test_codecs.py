"""Video and audio codecs: the shared 40 ms timeline, shapes, and the Griffin-Lim vocoder."""

import numpy as np
import torch

from avgen.audio_codec import AudioAutoencoder
from avgen.config import Config
from avgen.timeline import SAMPLE_RATE, SAMPLES_PER_FRAME
from avgen.video_codec import VideoAutoencoder, frames_to_tensor, tensor_to_frames

CFG = Config()


def test_video_codec_downsamples_8x_spatially_and_back():
    codec = VideoAutoencoder(CFG)
    frames = torch.rand(5, 3, 64, 64) * 2 - 1
    latents = codec.encode(frames)
    assert latents.shape == (5, CFG.video_latent_channels, 8, 8)
    out = codec.decode(latents)
    assert out.shape == frames.shape and out.abs().max() <= 1


def test_frame_conversion_round_trips_uint8():
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    assert torch.equal(tensor_to_frames(frames_to_tensor(frames)), frames)


def test_audio_codec_emits_one_latent_per_video_frame_and_exactly_640_samples_back():
    codec = AudioAutoencoder(CFG).eval()
    for frames in (1, 7, 50):
        wave = torch.randn(2, frames * SAMPLES_PER_FRAME) * 0.1
        with torch.no_grad():
            latents = codec.encode(wave)
            assert latents.shape == (2, frames, CFG.audio_latent_channels)
            assert codec.decode_mel(latents).shape == (2, CFG.n_mels, 4 * frames)
            assert codec.decode(latents).shape == (2, frames * SAMPLES_PER_FRAME)


def test_vocoder_is_deterministic_for_a_seed_and_keeps_the_pitch():
    codec = AudioAutoencoder(CFG)
    t = np.arange(25 * SAMPLES_PER_FRAME) / SAMPLE_RATE
    tone = torch.tensor(0.3 * np.sin(2 * np.pi * 440 * t), dtype=torch.float32)[None]
    log_mel = codec.log_mel(tone)
    assert log_mel.shape == (1, CFG.n_mels, 100)
    a, b, c = (codec.vocode(log_mel, seed=s)[0] for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    spectrum = np.abs(np.fft.rfft(a[0].numpy()))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / a.shape[-1]
    assert abs(peak_hz - 440) < 30  # mel resolution near 440 Hz is ~30 Hz
