"""JobRunner: jobs in, event streams out, with the small model, real MP4 encode/decode and real scoring."""

import pickle
import tempfile
import threading

import numpy as np
import pytest

from avgen.media import read_mp4, write_mp4
from workers.jobs import (
    INTERNAL,
    INVALID_REQUEST,
    Canceled,
    EvaluateSpec,
    Failed,
    GenerateSpec,
    Progress,
    Started,
    Succeeded,
)
from workers.runner import JobRunner

SCORE_KEYS = {"sync_distance", "sync_confidence", "av_offset_frames", "temporal_flickering", "warping_error",
              "audio_flicker", "frames", "error"}  # fmt: skip


@pytest.fixture(scope="module")
def runner(small_checkpoint):
    return JobRunner(checkpoint=small_checkpoint)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Jobs' temporary folders go here, so a test can see that none is left behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def decode(data: bytes, folder):
    path = folder / f"decoded-{len(list(folder.iterdir()))}.mp4"
    path.write_bytes(data)
    return read_mp4(path)


def sampler_steps(events):
    return [e for e in events if isinstance(e, Progress) and e.message.startswith("chunk")]


def test_generate_job_streams_progress_then_a_playable_scored_mp4(runner, private_tmp, tmp_path_factory):
    spec = GenerateSpec(text="hello there", seconds=1.4, seed=3, steps=3, score=True)
    events = list(runner.run(spec, cancelled=lambda: False))

    assert isinstance(events[0], Started)
    assert isinstance(events[-1], Succeeded) and not any(
        isinstance(e, (Succeeded, Failed, Canceled)) for e in events[:-1]
    )
    progress = [e for e in events if isinstance(e, Progress)]
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[0] < 0.5 and fractions[-1] == 1.0
    # 1.4 s is two 1-second chunks (0.2 s overlap), after a pass over the first second alone (its rest
    # frame is the reference: avgen_reference first-chunk): three passes of 3 steps
    steps = sampler_steps(events)
    assert [p.step for p in steps] == list(range(1, 10)) and {p.steps for p in progress} == {9}
    assert any("scoring" in p.message for p in progress) and all(p.step <= p.steps for p in progress)

    done = events[-1]
    assert done.media_type == "video/mp4" and done.metadata["avgen_seed"] == "3"
    clip = decode(done.result, tmp_path_factory.mktemp("out"))
    assert clip.frames.shape[0] == round(1.4 * 25) and clip.frames.dtype == np.uint8
    assert len(clip.audio) == round(1.4 * 16000) and np.abs(clip.audio).max() > 0
    assert SCORE_KEYS <= set(done.scores) and done.scores["frames"] == 35 and done.scores["path"] == "result.mp4"
    assert list(private_tmp.iterdir()) == []  # the job's temporary files are gone

    for event in events:  # every event survives Ray's object store
        assert pickle.loads(pickle.dumps(event)) == event
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_an_unscored_job_has_no_scores_and_still_reaches_one(runner):
    events = list(runner.run(GenerateSpec(seconds=0.4, score=False)))
    assert events[-1].scores is None and events[-2].fraction == 1.0
    assert not any("scoring" in e.message for e in events if isinstance(e, Progress))


def test_cancel_stops_within_one_step_keeps_nothing_and_says_canceled(runner, private_tmp):
    transformer = runner.generator.model.transformer
    forward, calls = transformer.forward, []

    def spy(*args, **kwargs):  # counts sampler evaluations (one per euler step: guidance is batched)
        calls.append(flag.is_set())
        if len(calls) == 4:
            ahead.set()
        return forward(*args, **kwargs)

    flag, ahead = threading.Event(), threading.Event()
    events = []
    transformer.forward = spy
    try:
        for event in runner.run(GenerateSpec(text="a long one", seconds=2.0, steps=8), cancelled=flag.is_set):
            events.append((flag.is_set(), event))
            if len([e for _, e in events if isinstance(e, Progress)]) == 2:
                ahead.wait(timeout=60)  # the sampler is already past step 3: its progress is queued, unseen
                flag.set()
    finally:
        del transformer.forward

    assert isinstance(events[-1][1], Canceled)
    assert not any(isinstance(e, (Succeeded, Failed)) for _, e in events)
    assert not any(after and isinstance(e, Progress) for after, e in events)  # nothing after the cancel was seen
    assert calls.count(True) <= 1  # the sampler stopped within one step of the cancel
    assert calls.count(False) < 3 * 8  # ... long before the three chunks' 24 steps were done
    assert list(private_tmp.iterdir()) == []
    assert not any(t.name == "avgen-job" for t in threading.enumerate())  # nothing runs after Canceled
    assert all(pickle.loads(pickle.dumps(e)) == e for _, e in events)


@pytest.mark.parametrize(
    "spec, says",
    [
        (GenerateSpec(text="hi", reference_image=b"\x89PNG but not really"), "cannot open reference_image as image"),
        (GenerateSpec(text="hi", audio=b"RIFF nonsense"), "audio"),
        (GenerateSpec(text="hi", seconds=-2), "seconds must be positive"),
        (GenerateSpec(text="hi", sampler="ddim"), "sampler must be"),
        (EvaluateSpec(b"", backend="nope"), "unknown backend 'nope'"),
    ],
)
def test_bad_input_fails_as_invalid_request_before_any_work(runner, private_tmp, spec, says):
    events = list(runner.run(spec))
    assert len(events) == 1 and isinstance(events[0], Failed)  # no Started, no Progress
    assert events[0].error_type == INVALID_REQUEST and says in events[0].detail
    assert "\n" not in events[0].detail and str(private_tmp) not in events[0].detail
    assert list(private_tmp.iterdir()) == []


def test_an_unexpected_error_is_one_internal_line_not_a_traceback(runner):
    asked = []

    def cancelled():  # the caller's own callback failing mid-run
        asked.append(1)
        if len(asked) == 3:
            raise RuntimeError("store\nunreachable")
        return False

    events = list(runner.run(GenerateSpec(seconds=1.2), cancelled=cancelled))
    assert isinstance(events[0], Started) and events[-1] == Failed(INTERNAL, "RuntimeError: store unreachable")


def test_evaluate_job_returns_the_score_row_and_its_plot(runner, tmp_path):
    t = np.arange(30)[:, None, None, None]
    frames = np.broadcast_to((t * 7 + np.arange(64)[None, None, :, None]) % 256, (30, 64, 64, 3)).astype(np.uint8)
    audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(30 * 640) / 16000)).astype(np.float32)
    write_mp4(tmp_path / "mine.mp4", frames, audio)

    events = list(runner.run(EvaluateSpec((tmp_path / "mine.mp4").read_bytes(), backend="learned", name="mine.mp4")))
    assert isinstance(events[0], Started) and isinstance(events[-1], Succeeded)
    row = events[-1].scores
    assert SCORE_KEYS <= set(row) and row["path"] == "mine.mp4" and row["frames"] == 30 and row["backend"] == "learned"
    assert row["temporal_flickering"] is not None and row["audio_flicker"] is not None
    assert events[-1].media_type == "image/png" and events[-1].result.startswith(b"\x89PNG")
    assert pickle.loads(pickle.dumps(events[-1])) == events[-1]


def test_evaluating_a_file_that_is_not_a_video_fails_as_invalid_request(runner):
    events = list(runner.run(EvaluateSpec(b"just text", name="notes.mp4")))
    assert isinstance(events[-1], Failed) and events[-1].error_type == INVALID_REQUEST
    assert events[-1].detail.startswith("cannot open notes.mp4 as video: not a readable media file")


def test_one_runner_runs_jobs_from_several_threads_at_once(runner, tmp_path):
    results = {}

    def job(seconds):
        results[seconds] = list(runner.run(GenerateSpec(text="at once", seconds=seconds, score=False)))

    threads = [threading.Thread(target=job, args=(s,)) for s in (0.4, 0.8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seconds, events in results.items():
        assert isinstance(events[-1], Succeeded)
        assert len(decode(events[-1].result, tmp_path).frames) == round(seconds * 25)
