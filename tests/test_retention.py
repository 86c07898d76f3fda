"""Retention on a real JobStore and real files: `sweep` with an injected clock expires old results (status,
event, files), deletes old uploads, keeps the disk under the cap oldest first, and never touches a running
job's file. Also the settings behind it: durations, sizes, the serve flags and their one-line errors."""

from __future__ import annotations

import json
import time

import pytest

from api.artifacts import Artifacts
from api.config import ServiceConfig, format_duration, parse_duration, parse_size
from api.retention import sweep
from api.store import JobStore
from avgen.cli import main
from workers.jobs import Status

DAY = 86400.0
OWNER = "key:owner"


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock(time.time())  # uploads are stamped with the real time; jobs follow this clock from there


@pytest.fixture
def store(tmp_path, clock):
    with JobStore(tmp_path / "jobs.sqlite3", clock=clock) as s:
        yield s


@pytest.fixture
def files(tmp_path):
    return Artifacts(tmp_path / "data")


def run_job(store, files, clock, at: float, status="succeeded", size=1000, ran=10.0) -> str:
    """A job leased at `at` and finished `ran` seconds later, its result written first, as the pool does."""
    job, _ = store.create(OWNER, "generate", {"text": f"job at {at}"})
    clock.now = at
    leased = store.lease("worker", 60)
    assert leased.id == job.id
    files.save_result(job.id, bytes(size), "video/mp4")
    clock.now = at + ran
    assert store.finish(job.id, leased.lease_token, status, result={"media_type": "video/mp4"})
    return job.id


def upload_at(files, created_at: float, size=1000) -> str:
    """An upload whose metadata says it was made at created_at (the clock of an upload is the real one)."""
    upload_id = files.save_upload(OWNER, bytes(size), "image")
    meta = next(files.root.glob(f"uploads/*/{upload_id}.json"))
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "created_at": created_at}))
    return upload_id


def result_file(files, job_id):
    return files.result_path(job_id, "video/mp4")


def test_old_results_expire_with_their_event_and_files_and_younger_ones_stay(store, files, clock):
    t0 = clock.now
    old = run_job(store, files, clock, t0)
    young = run_job(store, files, clock, t0 + 3 * DAY)
    failed = run_job(store, files, clock, t0, status="failed")  # a file left by a run that did not count
    running, _ = store.create(OWNER, "generate", {"text": "running"})
    token = store.lease("worker", 60).lease_token
    files.save_result(running.id, bytes(10), "video/mp4")  # written, not yet finished: the pool's next step

    swept = sweep(store, files, retention_seconds=7 * DAY, now=t0 + 7 * DAY + 11)

    assert swept.expired == [old]
    assert store.job(old).status == Status.EXPIRED and store.job(young).status == Status.SUCCEEDED
    events = store.events_after(old)
    assert [e.type for e in events] == ["queued", "started", "succeeded", "expired"]
    assert events[-1].data == {"status": "expired", "reason": "retention"}
    assert not result_file(files, old).exists() and not result_file(files, failed).exists()
    assert result_file(files, young).exists() and result_file(files, running.id).exists()
    assert store.job(old).finished_at == t0 + 10  # when it finished stays what it was
    assert sweep(store, files, retention_seconds=7 * DAY, now=t0 + 7 * DAY + 11).expired == []  # idempotent
    assert store.finish(running.id, token, "succeeded")


def test_a_backlog_expires_in_chunks_oldest_first(store, files, clock, monkeypatch):
    monkeypatch.setattr(JobStore, "CHUNK", 2)  # a transaction per 2 jobs (500 in service)
    t0 = clock.now
    jobs = [run_job(store, files, clock, t0 + i) for i in range(5)]
    spy = []
    expire = store._expire
    monkeypatch.setattr(store, "_expire", lambda *a: spy.append(expire(*a)) or spy[-1])
    assert sweep(store, files, retention_seconds=DAY, now=t0 + DAY + 100).expired == jobs
    assert [len(chunk) for chunk in spy] == [2, 2, 1]
    assert set(store.finish_states(jobs + ["0" * 32])) == set(jobs)  # read in chunks too; an unknown id is left out
    assert not files.results()


def test_a_sweep_cut_short_between_store_and_disk_is_finished_by_the_next(store, files, clock):
    job = run_job(store, files, clock, clock.now)
    assert store.expire_finished(before=clock.now + 1) == [job]  # expired in the store; the process died here
    assert result_file(files, job).exists()
    swept = sweep(store, files, retention_seconds=7 * DAY, now=clock.now)
    assert swept.expired == [] and swept.results == 1 and not result_file(files, job).exists()


def test_uploads_older_than_the_retention_are_deleted(store, files, clock):
    old = upload_at(files, clock.now - 8 * DAY)
    young = upload_at(files, clock.now - 6 * DAY)
    swept = sweep(store, files, retention_seconds=7 * DAY, now=clock.now)
    assert swept.uploads == 1
    assert files.upload_info(OWNER, old) is None and files.upload_bytes(OWNER, old) is None
    assert not list(files.root.glob(f"uploads/*/{old}*"))
    assert files.upload_bytes(OWNER, young) == bytes(1000)


def test_over_the_disk_cap_the_oldest_results_and_uploads_go_first(store, files, clock):
    t0 = clock.now - DAY
    first = run_job(store, files, clock, t0 + 1)  # finished at t0 + 11
    upload_2 = upload_at(files, t0 + 20)
    third = run_job(store, files, clock, t0 + 30)  # t0 + 40
    upload_4 = upload_at(files, t0 + 50)
    fifth = run_job(store, files, clock, t0 + 60)  # t0 + 70
    running, _ = store.create(OWNER, "generate", {"text": "running"})
    store.lease("worker", 60)
    files.save_result(running.id, bytes(1000), "video/mp4")
    used = sum(files.disk_bytes().values())  # 4 results of 1000 bytes, 2 uploads of 1000 and their metadata

    # room for all but about 1.5 items: the oldest result, then the oldest upload go
    swept = sweep(store, files, retention_seconds=7 * DAY, max_disk_bytes=used - 1500, now=clock.now)
    assert swept.expired == [first] and swept.uploads == 1
    assert store.events_after(first)[-1].data == {"status": "expired", "reason": "max-disk"}
    assert files.upload_info(OWNER, upload_2) is None and files.upload_info(OWNER, upload_4) is not None
    assert [store.job(j).status for j in (third, fifth)] == [Status.SUCCEEDED] * 2
    assert sum(files.disk_bytes().values()) <= used - 1500

    # a cap of one byte: every finished result and every upload goes; the running job's file stays
    swept = sweep(store, files, retention_seconds=7 * DAY, max_disk_bytes=1, now=clock.now)
    assert swept.expired == [third, fifth] and swept.uploads == 1
    assert files.results() == {running.id: 1000} and files.disk_bytes()["uploads"] == 0


def test_job_durations_are_a_histogram_by_kind_and_final_status(store, files, clock):
    t0 = clock.now
    run_job(store, files, clock, t0, ran=0.5)
    run_job(store, files, clock, t0, ran=42)
    expired = run_job(store, files, clock, t0, ran=3)
    run_job(store, files, clock, t0, status="failed", ran=7)
    store.create(OWNER, "generate", {"text": "never ran"})
    store.request_cancel(OWNER, store.create(OWNER, "evaluate", {"upload": "x"})[0].id)  # canceled unrun: no time
    store.expire_jobs([expired], reason="test")
    histogram = store.duration_histogram([1, 5, 60])
    assert histogram == {
        ("generate", "succeeded"): ([1, 2, 3], 3, 45.5),  # the expired one counts as the succeeded job it was
        ("generate", "failed"): ([0, 0, 1], 1, 7.0),
    }
    assert store.kind_counts() == {
        ("generate", Status.SUCCEEDED): 2,
        ("generate", Status.EXPIRED): 1,
        ("generate", Status.FAILED): 1,
        ("generate", Status.QUEUED): 1,
        ("evaluate", Status.CANCELED): 1,
    }


# --- the settings ---


@pytest.mark.parametrize(
    "text, seconds", [("7d", 7 * DAY), ("12h", 43200), ("30m", 1800), ("45s", 45), ("3600", 3600), ("1.5d", 1.5 * DAY)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, size", [("500M", 500 << 20), ("10G", 10 << 30), ("64k", 64 << 10), ("1TiB", 1 << 40),
                                        ("2GB", 2 << 30), ("12345", 12345)])  # fmt: skip
def test_sizes(text, size):
    assert parse_size(text) == size


def test_durations_read_back():
    assert [format_duration(s) for s in (7 * DAY, 5400, 3600, 1, 2.5)] == [
        "7 days", "90 minutes", "1 hour", "1 second", "2.5 seconds"
    ]  # fmt: skip


def test_environment_settings_and_their_errors():
    config = ServiceConfig.from_env(env={"AVGEN_RETENTION": "12h", "AVGEN_MAX_DISK": "10G"})
    assert config.retention_seconds == 43200 and config.max_disk_bytes == 10 << 30
    assert ServiceConfig.from_env(env={}).retention_seconds == 7 * DAY and ServiceConfig().max_disk_bytes is None
    given = ServiceConfig.from_env(env={"AVGEN_RETENTION": "12h"}, retention_seconds=60.0)
    assert given.retention_seconds == 60  # a flag wins over the environment
    with pytest.raises(ValueError, match="AVGEN_RETENTION: '7 days' is not a duration"):
        ServiceConfig.from_env(env={"AVGEN_RETENTION": "7 days"})
    with pytest.raises(ValueError, match="AVGEN_MAX_DISK: '-1G' is not a size"):
        ServiceConfig.from_env(env={"AVGEN_MAX_DISK": "-1G"})


@pytest.mark.parametrize(
    "flags, code, words",
    [
        (["--retention", "7x"], 2, "argument --retention: '7x' is not a duration: give e.g. 7d, 12h, 30m or 3600"),
        (["--retention", "0"], 2, "argument --retention: '0' is not a duration"),
        (["--max-disk", "ten gigs"], 2, "argument --max-disk: 'ten gigs' is not a size: give e.g. 500M, 10G"),
        (["--grace-seconds", "soon"], 2, "argument --grace-seconds: invalid float value"),
        (["--threads", "0"], 1, "threads must be at least 1, not 0"),
        (["--max-attempts", "0"], 1, "max_attempts must be at least 1, not 0"),
        (["--device", "tpu"], 1, "device must be cpu, cuda or cuda:N, not 'tpu'"),
        (["--grace-seconds", "-1"], 1, "grace_seconds must be 0 or more, not -1.0"),
        (["--checkpoint", "/nonexistent/w.safetensors"], 1, "--checkpoint /nonexistent/w.safetensors: no such file"),
    ],
)
def test_bad_serve_flags_are_one_line_errors(tmp_path, capsys, monkeypatch, flags, code, words):
    monkeypatch.delenv("AVGEN_API_KEYS", raising=False)
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(main(["serve", "--data-dir", str(tmp_path / "d"), *flags]))
    err = capsys.readouterr().err
    assert exit_.value.code == code and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists()  # refused before anything was made


def test_a_bad_environment_setting_fails_serve_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AVGEN_MAX_DISK", "lots")
    assert main(["serve", "--data-dir", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err == "avgen: error: AVGEN_MAX_DISK: 'lots' is not a size: give e.g. 500M, 10G or a number of bytes\n"
