"""`avgen generate` as a user runs it: a real process, a real MP4, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import soundfile as sf

from avgen.media import read_mp4, write_mp4
from avgen.timeline import SAMPLE_RATE


def avgen(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "avgen", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False, env=None if env is None else {**os.environ, **env})  # fmt: skip


@pytest.fixture(scope="module")
def hello(tmp_path_factory, small_checkpoint):
    out = tmp_path_factory.mktemp("cli") / "hello.mp4"
    run = avgen("generate", "--text", "Hello from the Black Forest", "--seconds", 4, "--seed", 0,
                "--checkpoint", small_checkpoint, "--out", out, "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    return out, run


def test_generate_writes_an_h264_aac_mp4_of_the_asked_length(hello):
    out, _ = hello
    clip = read_mp4(out)
    assert clip.frames.shape == (100, 64, 64, 3)
    assert clip.sample_rate == SAMPLE_RATE and abs(len(clip.audio) - 100 * 640) <= 640
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert audio.codec_context.sample_rate == 48_000


def test_json_summary_and_mp4_tags_say_it_is_ai_generated_with_its_settings(hello, small_checkpoint):
    out, run = hello
    summary = json.loads(run.stdout)
    assert summary["frames"] == 100 and summary["seconds"] == 4.0 and summary["seed"] == "0"
    tags = read_mp4(out).metadata
    assert tags["avgen_ai_generated"] == "true"
    assert "AI-generated" in tags["comment"]
    assert (tags["avgen_seed"], tags["avgen_steps"], tags["avgen_cfg"]) == ("0", "2", "2")
    from avgen.checkpoint import file_hash

    assert tags["avgen_checkpoint"] == file_hash(small_checkpoint)
    assert "generate: 100%|" in run.stderr  # the progress bar (a log line each 10%: stderr is not a terminal)


def test_same_seed_and_settings_give_identical_decoded_frames_and_samples(hello, small_checkpoint, tmp_path):
    out, _ = hello
    again = tmp_path / "again.mp4"
    run = avgen("generate", "--text", "Hello from the Black Forest", "--seconds", 4, "--seed", 0,
                "--checkpoint", small_checkpoint, "--out", again, "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stderr
    a, b = read_mp4(out), read_mp4(again)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)


def test_audio_driven_output_keeps_the_given_speech(small_checkpoint, tmp_path):
    t = np.arange(SAMPLE_RATE * 2) / SAMPLE_RATE
    speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech, SAMPLE_RATE)
    out = tmp_path / "driven.mp4"
    run = avgen("generate", "--audio", wav, "--checkpoint", small_checkpoint, "--out", out, "--quiet")
    assert run.returncode == 0, run.stderr
    clip = read_mp4(out)
    assert len(clip.frames) == 50
    n = min(len(clip.audio), len(speech))
    assert np.corrcoef(clip.audio[:n], speech[:n])[0, 1] > 0.9


def test_reference_image_is_accepted(small_checkpoint, tmp_path):
    picture = tmp_path / "face.png"
    frames = np.zeros((1, 48, 80, 3), dtype=np.uint8)
    frames[:, 10:40, 30:50] = 220
    with av.open(str(picture), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 80, 48, "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(frames[0], format="rgb24")):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    out = tmp_path / "ref.mp4"
    run = avgen("generate", "--text", "Hi", "--seconds", 0.4, "--reference-image", picture,
                "--checkpoint", small_checkpoint, "--out", out, "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(read_mp4(out).frames) == 10


def test_without_weights_the_untrained_default_model_warns_on_stderr(tmp_path):
    run = avgen("generate", "--text", "Hi", "--seconds", 0.2, "--steps", 1, "--out", tmp_path / "u.mp4", "--quiet",
                env={"AVGEN_WEIGHTS_DIR": str(tmp_path)})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "UNTRAINED" in run.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "hi", "--bogus"], "unrecognized arguments"),
        (["--text", "hi", "--seconds", "0"], "positive"),
        (["--text", "hi", "--seconds", "-2"], "positive"),
        (["--text", "hi", "--seconds", "100000"], "at most"),
        (["--text", "hi", "--seconds", "four"], "invalid float"),
        (["--text", "hi", "--steps", "0"], "steps"),
        (["--text", "hi", "--reference-image", "{bad_image}"], "bad.png"),
        (["--text", "hi", "--reference-image", "{missing}"], "missing.png"),
        (["--audio", "{bad_audio}"], "bad.wav"),
        (["--text", "hi", "--checkpoint", "{bad_image}"], "bad.png"),
        (["--text", "hi", "--device", "cuda:7"], "cuda"),
        (["--text", "hi", "--threads", "0"], "threads"),
    ],
)
def test_bad_input_gives_one_line_error_and_nonzero_exit(args, message, tmp_path):
    bad_image, bad_audio = tmp_path / "bad.png", tmp_path / "bad.wav"
    bad_image.write_bytes(b"this is not a picture")
    bad_audio.write_bytes(b"RIFF....not audio")
    args = [a.format(bad_image=bad_image, bad_audio=bad_audio, missing=tmp_path / "missing.png") for a in args]
    run = avgen("generate", *args, "--out", tmp_path / "o.mp4")
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert message in lines[0]
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("where", ["missing_folder", "directory", "read_only"])
def test_unwritable_output_fails_fast_with_one_line(where, tmp_path):
    target = {"missing_folder": tmp_path / "nope" / "o.mp4", "directory": tmp_path}.get(where)
    if where == "read_only":
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        target = folder / "o.mp4"
        if os.access(folder, os.W_OK):  # root ignores permission bits: use a path under /proc instead
            target = "/proc/avgen-cannot-write-here.mp4"
    run = avgen("generate", "--text", "hi", "--out", target)
    assert run.returncode != 0
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr


def test_an_existing_output_is_replaced_whole(hello, small_checkpoint, tmp_path):
    target = tmp_path / "o.mp4"
    write_mp4(target, np.zeros((5, 64, 64, 3), np.uint8), np.zeros(5 * 640, np.float32))
    run = avgen("generate", "--text", "hi", "--seconds", 0.4, "--checkpoint", small_checkpoint, "--out", target,
                "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(read_mp4(target).frames) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


def test_sigterm_while_the_mp4_is_written_leaves_no_temporary_file(small_checkpoint, tmp_path):
    out = tmp_path / "long.mp4"
    process = subprocess.Popen([sys.executable, "-m", "avgen", "generate", "--seconds", "8", "--steps", "1", "--cfg", "1",
                                "--checkpoint", str(small_checkpoint), "--out", str(out), "--quiet"],
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    temporary = []
    while process.poll() is None and not temporary:  # wait until the MP4 is being written
        temporary = list(tmp_path.glob(".*.tmp.mp4"))
        time.sleep(0.002)
    assert temporary, f"the command ended before its temporary file was seen: {process.communicate()[1]}"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert list(tmp_path.iterdir()) == []  # neither the temporary file nor a half-written clip


def test_shipped_weights_say_the_transcript_with_a_mouth_in_sync(tmp_path):
    from eval.run import EvalSettings, SyncScorer, score_clip

    out = tmp_path / "hello.mp4"
    run = avgen(
        "generate", "--text", "Hello from the Black Forest", "--seconds", 4, "--seed", 0, "--out", out, "--json"
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["trained"] is True and "UNTRAINED" not in run.stderr
    scorer = SyncScorer(EvalSettings(backend="learned"))
    row = score_clip(str(out), scorer)
    assert row["error"] is None and abs(row["av_offset_frames"]) <= 1, row
    clip = read_mp4(out)
    moved = tmp_path / "audio-a-second-late.mp4"  # the same video with its speech shifted by 1 s
    write_mp4(moved, clip.frames, np.roll(clip.audio, SAMPLE_RATE))
    assert row["sync_confidence"] > 2 * score_clip(str(moved), scorer)["sync_confidence"]


def test_progress_bar_writes_whole_lines_to_a_log_and_redraws_on_a_terminal():
    import io

    from avgen.progress import ProgressBar

    for tty in (False, True):
        stream = io.StringIO()
        stream.isatty = lambda tty=tty: tty
        bar = ProgressBar("work", stream)
        for i in range(101):
            bar(i / 100, f"item {i}")
        text = stream.getvalue()
        assert "work: 100%|" in text and "item 100" in text
        if tty:
            assert text.count("\r") > 11
        else:
            assert "\r" not in text and len(text.splitlines()) == 11  # 0%, 10%, ..., 100%
