"""Real PyAV encode/decode round trips for avgen.media (small 64x64 clips)."""

import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile as sf

from avgen.media import MediaError, check_writable, read_audio, read_image, read_mp4, write_mp4
from avgen.timeline import FPS, MP4_AUDIO_RATE, SAMPLE_RATE, SAMPLES_PER_FRAME

T = 50  # 2 s


def moving_frames(t=T, h=64, w=64):
    """Smooth diagonal gradient drifting a few pixels per frame (easy on H.264)."""
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (x * 2 + i * 3) % 256
        out[i, ..., 1] = (y * 2 + i * 2) % 256
        out[i, ..., 2] = 128 + 60 * np.sin((x + y + i) / 10)
    return np.clip(out, 0, 255)


def sine(freq=440.0, n=T * SAMPLES_PER_FRAME, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SAMPLE_RATE)).astype(np.float32)


def peak_hz(audio, rate=SAMPLE_RATE):
    spec = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return np.fft.rfftfreq(audio.size, 1 / rate)[spec.argmax()]


def tmp_leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_mp4(path, moving_frames(), sine(), metadata={"comment": "hello"})
    return path


def test_round_trip_keeps_frames_close_and_audio_length_and_pitch(clip_path):
    clip = read_mp4(clip_path)
    assert clip.frames.shape == (T, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert np.abs(clip.frames.astype(int) - moving_frames().astype(int)).mean() < 8
    assert clip.fps == FPS and clip.sample_rate == SAMPLE_RATE
    assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert abs(clip.audio.size - T * SAMPLES_PER_FRAME) <= SAMPLES_PER_FRAME
    assert abs(peak_hz(clip.audio) - 440) < 2
    # Aligned with the original: normalised correlation at zero lag is high.
    n = min(clip.audio.size, T * SAMPLES_PER_FRAME)
    a, b = clip.audio[:n], sine()[:n]
    assert np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)) > 0.95


def test_click_at_frame_k_stays_within_one_frame_after_round_trip(tmp_path):
    k = 30
    audio = np.zeros(T * SAMPLES_PER_FRAME, np.float32)
    start = k * SAMPLES_PER_FRAME
    audio[start : start + 80] = sine(1000, 80, amp=0.9)  # 5 ms burst
    write_mp4(tmp_path / "click.mp4", moving_frames(), audio)
    got = read_mp4(tmp_path / "click.mp4").audio
    onset = np.argmax(np.abs(got) > 0.5 * np.abs(got).max())
    assert abs(onset - start) <= SAMPLES_PER_FRAME


def test_streams_are_h264_yuv420p_and_aac_48k_with_equal_durations(clip_path):
    with av.open(str(clip_path)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        assert vs.codec_context.name == "h264" and vs.codec_context.pix_fmt == "yuv420p"
        assert aus.codec_context.name == "aac" and aus.sample_rate == MP4_AUDIO_RATE
        assert aus.codec_context.channels == 1
        v_dur = float(vs.duration * vs.time_base)
        a_dur = float(aus.duration * aus.time_base)
        assert v_dur == pytest.approx(T / FPS, abs=1e-6)
        assert abs(v_dur - a_dur) <= 1 / FPS
        vi, ai = vs.index, aus.index  # stream objects are unusable once the file is closed
        frame_ticks = int(1 / (FPS * vs.time_base))
        dts, pts = {vi: [], ai: []}, {vi: [], ai: []}
        for p in c.demux():
            if p.size:  # skip the demuxer's empty flush packets
                dts[p.stream.index].append(p.dts)
                pts[p.stream.index].append(p.pts)
    # Decode order is strictly increasing per stream; audio pts too (video pts are reordered
    # by B-frames, but as a set they are exactly one per frame index).
    for s in dts.values():
        assert all(x < y for x, y in zip(s, s[1:]))
    assert all(x < y for x, y in zip(pts[ai], pts[ai][1:]))
    assert sorted(pts[vi]) == [i * frame_ticks for i in range(T)]


def test_metadata_round_trips_including_custom_keys(tmp_path):
    meta = {
        "avgen_seed": "1234",
        "avgen_steps": "20",
        "avgen_cfg": "3.5",
        "avgen_checkpoint": "ckpt/tiny-0001.pt",
        "comment": "a cat meows",
    }
    write_mp4(tmp_path / "m.mp4", moving_frames(10), sine(n=10 * SAMPLES_PER_FRAME), metadata=meta)
    got = read_mp4(tmp_path / "m.mp4").metadata
    assert {k: got.get(k) for k in meta} == meta


def test_same_inputs_give_decode_identical_output(tmp_path):
    frames, audio = moving_frames(20), sine(n=20 * SAMPLES_PER_FRAME)
    write_mp4(tmp_path / "a.mp4", frames, audio, metadata={"avgen_seed": "1"})
    write_mp4(tmp_path / "b.mp4", frames, audio, metadata={"avgen_seed": "1"})
    a, b = read_mp4(tmp_path / "a.mp4"), read_mp4(tmp_path / "b.mp4")
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)


WRITE_AFTER_HEAP_USE = """
import sys
import numpy as np
import torch
from avgen.media import read_mp4, write_mp4
read_mp4(sys.argv[1])  # use the heap first, as generation does before it writes
torch.randn(600, 600) @ torch.randn(600, 600)
rng = np.random.default_rng(0)
blocks = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
frames = np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)
write_mp4(sys.argv[2], frames, np.zeros(50 * 640, np.float32))
"""


def test_separate_processes_write_identical_video_after_using_the_heap(tmp_path, clip_path):
    # x264's macroblock-tree rate control gave different bytes from run to run here.
    outs = [tmp_path / f"{i}.mp4" for i in range(4)]
    for out in outs:
        run = subprocess.run([sys.executable, "-c", WRITE_AFTER_HEAP_USE, str(clip_path), str(out)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stderr
    frames = [read_mp4(out).frames for out in outs]
    assert all(np.array_equal(frames[0], f) for f in frames[1:])


@pytest.mark.parametrize("n_audio", [10 * SAMPLES_PER_FRAME - 1000, 10 * SAMPLES_PER_FRAME + 5000, 0])
def test_audio_is_padded_or_trimmed_to_video_length(tmp_path, n_audio):
    write_mp4(tmp_path / "p.mp4", moving_frames(10), sine(n=n_audio))
    assert read_mp4(tmp_path / "p.mp4").audio.size == 10 * SAMPLES_PER_FRAME
    with av.open(str(tmp_path / "p.mp4")) as c:
        aus = c.streams.audio[0]
        assert float(aus.duration * aus.time_base) == pytest.approx(10 / FPS)


def test_successful_write_leaves_no_temp_files(tmp_path):
    write_mp4(tmp_path / "ok.mp4", moving_frames(5), sine(n=5 * SAMPLES_PER_FRAME))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.mp4"]


def test_failed_write_keeps_existing_target_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous content")

    with pytest.raises(ValueError):  # rejected before anything is written
        write_mp4(target, np.zeros((5, 63, 64, 3), np.uint8), np.zeros(3200, np.float32))

    seen = []

    def failing_replace(src, dst):  # the whole file was encoded, the final rename fails
        seen.append(os.path.getsize(src))
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_mp4(target, moving_frames(5), sine(n=3200))

    assert seen and seen[0] > 1000  # a real temporary file existed and was removed
    assert target.read_bytes() == b"previous content"
    assert tmp_leftovers(tmp_path) == []


@pytest.mark.parametrize("shape", [(5, 63, 64, 3), (5, 64, 65, 3)])
def test_odd_frame_sizes_raise_value_error(tmp_path, shape):
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "x.mp4", np.zeros(shape, np.uint8), np.zeros(3200, np.float32))


@pytest.mark.parametrize(
    "frames, audio",
    [
        (np.zeros((0, 64, 64, 3), np.uint8), np.zeros(0, np.float32)),  # empty
        (np.zeros((5, 64, 64, 3), np.float32), np.zeros(3200, np.float32)),  # wrong dtype
        (np.zeros((5, 64, 64), np.uint8), np.zeros(3200, np.float32)),  # no channels
        (np.zeros((5, 64, 64, 3), np.uint8), np.zeros((2, 3200), np.float32)),  # stereo audio
    ],
)
def test_bad_frames_or_audio_raise_value_error(tmp_path, frames, audio):
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "x.mp4", frames, audio)
    assert list(tmp_path.iterdir()) == []


def test_read_mp4_on_text_missing_or_directory_raises_media_error(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    for bad in (text, tmp_path / "missing.mp4", tmp_path):
        with pytest.raises(MediaError) as e:
            read_mp4(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_read_mp4_on_truncated_file_raises_media_error(tmp_path, clip_path):
    data = clip_path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # moov atom at the end: header is lost
    with pytest.raises(MediaError, match="cut.mp4"):
        read_mp4(cut)


def test_read_mp4_on_truncated_moov_first_file_raises_media_error(tmp_path):
    # Noisy frames so the media data dominates; remux with faststart so the header comes first
    # and the cut file still opens, failing only while demuxing.
    frames = np.random.default_rng(0).integers(0, 256, (T, 64, 64, 3), dtype=np.uint8)
    write_mp4(tmp_path / "noisy.mp4", frames, sine())
    fast = tmp_path / "fast.mp4"
    with (
        av.open(str(tmp_path / "noisy.mp4")) as src,
        av.open(str(fast), "w", format="mp4", options={"movflags": "faststart"}) as dst,
    ):
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for p in src.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                dst.mux(p)
    assert read_mp4(fast).frames.shape[0] == T
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="cut.mp4"):
        read_mp4(cut)


def test_video_without_audio_gives_empty_audio_unless_required(tmp_path, clip_path):
    silent = tmp_path / "silent.mp4"
    with av.open(str(clip_path)) as src, av.open(str(silent), "w", format="mp4") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(video=0):
            if p.dts is not None:
                p.stream = out
                dst.mux(p)
    clip = read_mp4(silent)
    assert clip.frames.shape[0] == T and clip.audio.shape == (0,) and clip.audio.dtype == np.float32
    with pytest.raises(MediaError, match="no audio"):
        read_mp4(silent, require_audio=True)


def test_read_audio_downmixes_and_resamples_a_44k_stereo_wav(tmp_path):
    t = np.arange(44100) / 44100
    left = 0.6 * np.sin(2 * np.pi * 300 * t)
    sf.write(tmp_path / "s.wav", np.stack([left, np.zeros_like(left)], axis=1), 44100)
    audio = read_audio(tmp_path / "s.wav")
    assert audio.dtype == np.float32 and audio.shape == (SAMPLE_RATE,)
    assert abs(peak_hz(audio) - 300) < 2
    assert np.abs(audio[1000:-1000]).max() == pytest.approx(0.3, abs=0.02)  # mean of L and R


def test_read_audio_reads_the_audio_track_of_an_mp4(clip_path):
    audio = read_audio(clip_path)
    assert audio.dtype == np.float32 and audio.size == T * SAMPLES_PER_FRAME
    assert abs(peak_hz(audio) - 440) < 2


def test_read_audio_on_missing_or_garbage_raises_media_error(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    for bad in (junk, tmp_path / "missing.wav"):
        with pytest.raises(MediaError):
            read_audio(bad)


def test_read_image_returns_the_pixels_of_a_png(tmp_path):
    img = moving_frames(1)[0]
    path = tmp_path / "img.png"
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", width=64, height=64, pix_fmt="rgb24")
        c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    got = read_image(path)
    assert got.dtype == np.uint8 and np.array_equal(got, img)


def test_read_image_on_garbage_raises_media_error(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all" * 20)
    with pytest.raises(MediaError, match="junk.png"):
        read_image(junk)


def test_check_writable_rejects_missing_folder_and_directory(tmp_path):
    check_writable(tmp_path / "fine.mp4")
    with pytest.raises(MediaError, match="does not exist"):
        check_writable(tmp_path / "nope" / "out.mp4")
    with pytest.raises(MediaError, match="directory"):
        check_writable(tmp_path)
    with pytest.raises(MediaError, match="does not exist"):
        write_mp4(tmp_path / "nope" / "out.mp4", moving_frames(2), np.zeros(1280, np.float32))


def _write_timed_video(path, times_ms, size=(64, 48)):
    """A video-only MP4 whose frame k is shown from times_ms[k] (variable frame rate if irregular)."""
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1000)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for k, t in enumerate(times_ms):
            img = np.full((h, w, 3), (k * 20) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_read_mp4_resamples_variable_frame_rate_to_a_constant_rate(tmp_path):
    path = tmp_path / "vfr.mp4"
    times = [0, 40, 80, 200, 240, 280, 400, 440]  # gaps: frames held longer
    _write_timed_video(path, times)
    clip = read_mp4(path, fps=25)
    assert clip.variable_frame_rate
    assert clip.fps == 25 and len(clip.frames) == 12  # 0..480 ms at 40 ms
    levels = clip.frames[:, 0, 0, 0].astype(int)
    # output instant 120 ms and 160 ms still show the frame that started at 80 ms (k=2)
    assert abs(levels[3] - 40) <= 3 and abs(levels[4] - 40) <= 3 and abs(levels[5] - 60) <= 3


def test_read_mp4_downscales_large_frames_while_decoding(tmp_path):
    path = tmp_path / "big.mp4"
    write_mp4(path, np.zeros((3, 96, 160, 3), np.uint8), np.zeros(3 * 640, np.float32))
    clip = read_mp4(path, max_side=64)
    assert clip.frames.shape[1:3] == (38, 64) and clip.source_size == (160, 96)


def test_read_mp4_refuses_clips_longer_than_max_seconds(tmp_path):
    path = tmp_path / "long.mp4"
    write_mp4(path, np.zeros((50, 16, 16, 3), np.uint8), np.zeros(50 * 640, np.float32))
    with pytest.raises(MediaError, match="maximum is 1 s"):
        read_mp4(path, max_seconds=1)
