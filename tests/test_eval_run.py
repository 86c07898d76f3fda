"""Evaluation runs over real MP4 files: rows, bad clips, resume, outputs, the `avgen eval` command."""

import csv
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from avgen.media import write_mp4
from eval.drawn_face import drawn_talking_head
from eval.run import COLUMNS, EvalSettings, evaluate, find_clips, mean_ci95, summary_table


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    frames, audio = drawn_talking_head(4.0, seed=1)
    write_mp4(folder / "synced.mp4", frames, audio)
    write_mp4(folder / "delayed.mp4", *drawn_talking_head(4.0, seed=1, audio_delay_frames=5))
    _, other_audio = drawn_talking_head(4.0, seed=2)
    write_mp4(folder / "other_audio.mp4", frames, other_audio)
    return folder


def write_video_only(path, frames, rate=25, codec="libx264", pix_fmt="yuv420p"):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_rows_hold_every_column_and_the_scores_mean_what_they_say(clips, tmp_path):
    given = [str(clips / "synced.mp4"), str(clips / "delayed.mp4"), str(clips / "other_audio.mp4")]
    rows = evaluate(given, tmp_path / "out", EvalSettings())
    by_name = {os.path.basename(r["path"]): r for r in rows}
    assert [r["path"] for r in rows] == given  # exactly as given
    for row in rows:
        assert set(COLUMNS) <= set(row) and row["error"] is None and row["backend"] == "landmarks"
        assert 0.9 < row["temporal_flickering"] <= 1.0 and row["warping_error"] >= 0
        assert row["speech_fraction"] > 0.3 and row["face"]
    assert abs(by_name["synced.mp4"]["av_offset_frames"]) <= 1
    assert abs(by_name["delayed.mp4"]["av_offset_frames"] - (-5)) <= 1
    assert by_name["synced.mp4"]["sync_confidence"] > by_name["other_audio.mp4"]["sync_confidence"]


def test_outputs_json_csv_plots_and_a_summary_with_confidence_intervals(clips, tmp_path):
    out = tmp_path / "out"
    rows = evaluate([str(clips)], out, EvalSettings())
    stored = json.loads((out / "results.json").read_text())  # strict JSON: NaN would fail allow_nan=False
    assert len(stored) == 3 and [r["path"] for r in stored] == [r["path"] for r in rows]
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(COLUMNS) and len(table) == 3
    assert len(list((out / "plots").glob("*.png"))) == 3
    summary = summary_table(rows)
    assert "temporal_flickering" in summary and "95% CI" in summary


def test_bad_clips_get_an_error_in_their_row_and_the_run_goes_on(clips, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "not_a_video.mp4").write_text("hello")
    data = (clips / "synced.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])
    frames, audio = drawn_talking_head(0.12, seed=3)  # 3 frames
    write_mp4(bad / "three_frames.mp4", frames, audio)
    write_video_only(bad / "silent_video.mp4", drawn_talking_head(1.0, seed=4)[0])
    given = [str(p) for p in sorted(bad.iterdir())] + [str(tmp_path / "missing.mp4"), str(clips / "synced.mp4")]
    rows = {os.path.basename(r["path"]): r for r in evaluate(given, tmp_path / "out", EvalSettings())}
    assert "not a readable media file" in rows["not_a_video.mp4"]["error"]
    assert "truncated" in rows["truncated.mp4"]["error"] or "corrupt" in rows["truncated.mp4"]["error"]
    assert "at least 5" in rows["three_frames.mp4"]["error"]
    assert "no audio track" in rows["silent_video.mp4"]["error"]
    assert rows["silent_video.mp4"]["temporal_flickering"] is not None  # what can be computed still is
    assert "does not exist" in rows["missing.mp4"]["error"]
    assert rows["synced.mp4"]["error"] is None


def write_float_audio_clip(path, frames, audio, rate=25, sample_rate=16_000):
    """H.264 video with 32-bit float PCM audio (Matroska), which can carry NaN samples as they are."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("pcm_f32le", rate=sample_rate)
        sound.layout = "mono"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        samples = av.AudioFrame.from_ndarray(audio.astype(np.float32)[None], format="flt", layout="mono")
        samples.sample_rate = sample_rate
        for packet in [*sound.encode(samples), *sound.encode(None)]:
            container.mux(packet)


def test_a_clip_with_nan_audio_gets_an_error_and_the_clips_around_it_are_scored(clips, tmp_path):
    frames, audio = drawn_talking_head(2.0, seed=6)
    audio = audio.astype(np.float32)
    audio[8000:8100] = np.nan
    write_float_audio_clip(tmp_path / "nan_audio.mkv", frames, audio)
    given = [str(clips / "synced.mp4"), str(tmp_path / "nan_audio.mkv"), str(clips / "delayed.mp4")]
    rows = evaluate(given, tmp_path / "out", EvalSettings())
    assert [r["path"] for r in rows] == given
    good, bad, also_good = rows
    assert "NaN" in bad["error"] and bad["temporal_flickering"] is not None  # the video still scores
    for row in (good, also_good):
        assert row["error"] is None and row["sync_confidence"] is not None and row["audio_flicker"] is not None
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 3


def test_other_frame_rates_odd_and_large_sizes_are_resampled_and_noted(tmp_path):
    frames, audio = drawn_talking_head(2.4, seed=5, size=64)  # 60 frames: 2 s at 30 fps
    odd = np.ascontiguousarray(frames[:, :63, :63])
    write_video_only(tmp_path / "odd_30fps.mov", odd[:60], rate=30, codec="png", pix_fmt="rgb24")
    big = np.repeat(np.repeat(frames[:20], 12, axis=1), 12, axis=2)  # 768x768
    write_mp4(tmp_path / "big.mp4", big, audio[: 20 * 640])
    rows = {os.path.basename(r["path"]): r for r in evaluate([str(tmp_path)], tmp_path / "out", EvalSettings())}
    assert rows["odd_30fps.mov"]["frames"] == 50 and "30 fps to 25 fps" in rows["odd_30fps.mov"]["note"]
    assert rows["odd_30fps.mov"]["temporal_flickering"] is not None
    assert "downscaled from 768x768 to 512x512" in rows["big.mp4"]["note"]


def test_a_rerun_skips_clips_already_scored_and_rescores_changed_files(clips, tmp_path):
    out = tmp_path / "out"
    first = evaluate([str(clips / "synced.mp4")], out, EvalSettings())
    second = evaluate([str(clips / "synced.mp4")], out, EvalSettings())
    assert not first[0].get("skipped") and second[0].get("skipped")
    assert second[0]["sync_confidence"] == first[0]["sync_confidence"]
    copy = tmp_path / "copy.mp4"
    copy.write_bytes((clips / "synced.mp4").read_bytes())
    evaluate([str(copy)], out, EvalSettings())
    os.utime(copy, ns=(1, 1))  # same bytes, other mtime: another file as far as resuming knows
    assert not evaluate([str(copy)], out, EvalSettings())[0].get("skipped")


def test_the_learned_backend_without_weights_says_so_in_each_row(clips, tmp_path, monkeypatch):
    monkeypatch.setattr("eval.learned.WEIGHTS", tmp_path / "missing.safetensors")
    rows = evaluate([str(clips / "synced.mp4")], tmp_path / "out", EvalSettings(backend="learned"))
    assert "no trained weights" in rows[0]["error"] and rows[0]["temporal_flickering"] is not None


def test_manifests_list_clips_relative_to_themselves(clips, tmp_path):
    manifest = tmp_path / "clips.txt"
    manifest.write_text(f"# my clips\n{clips / 'synced.mp4'}\n\nrelative.mp4\n")
    assert find_clips([str(manifest)]) == [str(clips / "synced.mp4"), str(tmp_path / "relative.mp4")]


def test_confidence_interval_uses_student_t():
    mean, half, n = mean_ci95([1.0, 2.0, 3.0, None])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.303 * 1.0 / np.sqrt(3), rel=1e-4)  # t(2) = 4.303
    # t with 39 degrees of freedom (2.023), not the normal 1.96, for 40 clips
    values = [float(v) for v in range(40)]
    assert mean_ci95(values)[1] == pytest.approx(2.023 * np.std(values, ddof=1) / np.sqrt(40), rel=1e-3)
    assert mean_ci95([5.0]) == (5.0, None, 1) and mean_ci95([None]) == (None, None, 0)
    assert mean_ci95([2.0, 2.0, 2.0]) == (2.0, 0.0, 3)


def test_avgen_eval_command_prints_a_summary_and_writes_results(clips, tmp_path):
    run = subprocess.run([sys.executable, "-m", "avgen", "eval", str(clips / "synced.mp4"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "sync_confidence" in run.stdout and (tmp_path / "o" / "results.json").exists()
    bad = subprocess.run([sys.executable, "-m", "avgen", "eval", str(clips), "--backend", "syncnet"],
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert bad.returncode != 0 and "syncnet-weights" in bad.stderr and "Traceback" not in bad.stderr


def test_other_learned_weights_score_the_same_clips_and_a_rerun_with_the_shipped_ones_rescores(clips, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from eval import learned

    with safe_open(str(learned.WEIGHTS), "pt") as f:
        metadata = f.metadata()
    other = tmp_path / "other.safetensors"  # a valid weight file of the same network, other numbers
    generator = torch.Generator().manual_seed(0)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=generator) * v.std().nan_to_num(0) if v.is_floating_point() else v
             for k, v in load_file(str(learned.WEIGHTS)).items()}  # fmt: skip
    save_file(state, str(other), metadata=metadata)
    out, clip = tmp_path / "out", [str(clips / "synced.mp4")]
    theirs = evaluate(clip, out, EvalSettings(backend="learned", learned_weights=str(other)))[0]
    assert theirs["error"] is None and theirs["weights_hash"] == learned.weights_hash(other)
    shipped = evaluate(clip, out, EvalSettings(backend="learned"))[0]  # the same folder: not a resumable row
    assert not shipped.get("skipped") and shipped["weights_hash"] == learned.weights_hash()
    assert shipped["sync_confidence"] != theirs["sync_confidence"]
    with pytest.raises(ValueError, match="--learned-weights is for --backend learned"):
        EvalSettings(backend="landmarks", learned_weights=str(other))
    bad = subprocess.run([sys.executable, "-m", "avgen", "eval", clip[0], "--learned-weights", str(other)],
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert bad.returncode != 0 and "--backend learned" in bad.stderr and "Traceback" not in bad.stderr
