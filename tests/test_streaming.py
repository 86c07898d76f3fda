"""Flat memory at any length: audio vocoded segment by segment, MP4s written piece by piece."""

import numpy as np
import pytest
import torch

from avgen.audio_codec import VOCODE_FRAMES, AudioStream
from avgen.checkpoint import default_checkpoint, load_checkpoint
from avgen.data import make_sample
from avgen.media import Mp4Writer, read_mp4, write_mp4
from avgen.timeline import SAMPLES_PER_FRAME
from eval.flicker import _excess, _mel_db

SECONDS = 16  # 8 vocoder segments, 7 seams


@pytest.fixture(scope="module")
def speech_latents():
    """The shipped audio codec and the latents of 16 s of the corpus's speech (held-out sentences)."""
    path = default_checkpoint("tiny")
    if path is None:
        pytest.skip("no shipped weights in this install")
    codec = load_checkpoint(path, only=("audio_codec",)).audio_codec
    audio = np.concatenate([make_sample(i, split="heldout").audio for i in range(8)])
    frames = SECONDS * 25
    audio = np.resize(audio, frames * SAMPLES_PER_FRAME).astype(np.float32)
    with torch.no_grad():
        return codec, codec.encode(torch.from_numpy(audio)[None])


def test_the_stream_gives_the_same_waveform_whatever_the_pieces(speech_latents):
    codec, latents = speech_latents
    whole = codec.decode(latents, seed=3)
    assert whole.shape == (1, latents.shape[1] * SAMPLES_PER_FRAME)
    stream, pieces, start = AudioStream(codec, latents.shape[1], seed=3), [], 0
    for size in [1, 7, 13, 30, 99, 2, 60] * 10:
        size = min(size, latents.shape[1] - start)
        pieces += stream.push(latents[:, start : start + size])
        start += size
    pieces += stream.finish()
    assert torch.equal(torch.cat(pieces, dim=-1), whole)
    assert not torch.equal(codec.decode(latents, seed=4), whole)


def test_vocoder_seams_are_no_louder_than_the_sound_between_them(speech_latents):
    # A steady voice (a gliding harmonic tone) through the codec: any seam at a segment boundary
    # (a click, a phase or level step) stands out in the audio flicker metric's excess jumps
    # (eval/flicker.py). Segments vocoded apart and concatenated score ~1 dB there.
    codec, _ = speech_latents
    t = np.arange(SECONDS * 16_000) / 16_000
    phase = 2 * np.pi * np.cumsum(140 * (1 + 0.03 * np.sin(2 * np.pi * 0.3 * t))) / 16_000
    voice = sum(0.15 / k * np.sin(k * phase) for k in range(1, 12)).astype(np.float32)
    with torch.no_grad():
        audio = codec.decode(codec.encode(torch.from_numpy(voice)[None]), seed=0)[0].numpy()
    band_db, loud_db = _mel_db(audio)
    excess = _excess(np.abs(np.diff(band_db, axis=0)).mean(axis=1) + np.abs(np.diff(loud_db)))
    hop_times = (np.arange(len(excess)) + 1.5) * 0.04  # seconds, as audio_flicker places them
    seams = np.arange(1, SECONDS * 25 // VOCODE_FRAMES) * VOCODE_FRAMES / 25
    near = np.abs(hop_times[:, None] - seams[None]).min(axis=1) <= 0.1
    assert near.sum() >= 2 * len(seams)
    assert excess[near].mean() <= excess[~near].mean() + 0.01, (excess[near].mean(), excess[~near].mean())


def test_a_clip_written_in_pieces_with_the_audio_behind_equals_one_written_whole(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.clip(rng.normal(128, 40, (50, 32, 48, 3)).cumsum(0) / 8 + 64, 0, 255).astype(np.uint8)
    audio = 0.3 * np.sin(np.arange(50 * SAMPLES_PER_FRAME) * 0.07) * rng.uniform(0.5, 1, 50 * SAMPLES_PER_FRAME)
    audio = audio.astype(np.float32)
    write_mp4(tmp_path / "whole.mp4", frames, audio, metadata={"k": "v"})
    with Mp4Writer(tmp_path / "pieces.mp4", 48, 32, metadata={"k": "v"}) as out:
        sent = 0
        for i in range(0, 50, 7):  # the audio runs 10 frames behind the video, in other pieces
            out.add_video(frames[i : i + 7])
            upto = max(0, i - 3) * SAMPLES_PER_FRAME
            out.add_audio(audio[sent:upto])
            sent = max(sent, upto)
        out.add_audio(audio[sent:])
    whole, pieces = read_mp4(tmp_path / "whole.mp4"), read_mp4(tmp_path / "pieces.mp4")
    assert np.array_equal(whole.frames, pieces.frames)
    assert len(whole.audio) == len(pieces.audio) == len(audio)
    # AAC flips quantisation choices on 1e-7 input changes (float rounding of the resampler run in
    # pieces), so the files differ in bits: both must match the audio as well as each other.
    error = [float(np.sqrt(np.mean((clip.audio - audio) ** 2))) for clip in (whole, pieces)]
    assert error[1] < 1.2 * error[0] + 1e-3 and error[0] < 0.1 * float(np.sqrt(np.mean(audio**2))), error
    assert pieces.metadata["k"] == "v"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pieces.mp4", "whole.mp4"]  # no temporary left


def test_audio_is_fitted_to_the_video_and_a_failed_write_leaves_nothing(tmp_path):
    frames = np.full((25, 16, 16, 3), 100, np.uint8)
    with Mp4Writer(tmp_path / "long.mp4", 16, 16) as out:  # 2 s of audio for 1 s of video: cut
        out.add_video(frames)
        out.add_audio(np.full(2 * 16_000, 0.2, np.float32))
    with Mp4Writer(tmp_path / "short.mp4", 16, 16) as out:  # 0.5 s of audio: padded with silence
        out.add_video(frames)
        out.add_audio(np.full(8_000, 0.2, np.float32))
    for name in ("long.mp4", "short.mp4"):
        assert len(read_mp4(tmp_path / name).audio) == 16_000
    short = read_mp4(tmp_path / "short.mp4").audio
    assert np.abs(short[12_000:]).max() < 0.01 < np.abs(short[2_000:6_000]).mean()
    with pytest.raises(ValueError, match="frames are"):
        with Mp4Writer(tmp_path / "bad.mp4", 16, 16) as out:
            out.add_video(frames)
            out.add_video(np.zeros((2, 32, 32, 3), np.uint8))
    assert not (tmp_path / "bad.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "short.mp4"]
