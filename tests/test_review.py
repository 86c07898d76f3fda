"""Review findings on the service, each a test that failed on the code it guards against: one real `avgen serve
--workers 0` for the module (real HTTP, a real SQLite file, a job finished by hand as the pool would), and the
pool's own spec building over a real store and real files."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import sqlite3
import threading
import time

import pytest
from test_api import KEY_A, assert_problem, client, serve

from api import webhooks
from api.artifacts import Artifacts
from api.deps import ANONYMOUS, owner_of_key
from api.retention import sweep
from api.store import JobStore
from api.webhooks import Deliverer, Secrets
from workers.pool import Pool

BODY_CAP = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("review"), AVGEN_MAX_BODY_BYTES=str(BODY_CAP)) as running:
        yield running


def finish_by_hand(store: JobStore, job_id: str, result: dict) -> None:
    """Lease jobs until this one is leased (others fail), then finish it succeeded with `result`, as the pool does."""
    while (leased := store.lease("review-worker", 60)) is not None:
        if leased.id == job_id:
            assert store.finish(job_id, leased.lease_token, "succeeded", result=result)
            return
        store.finish(leased.id, leased.lease_token, "failed", error={"type": "internal", "detail": "not this one"})
    raise AssertionError(f"job {job_id} was never leased")


# --- the JSON body cap holds for a body sent without Content-Length (chunked) ---


def test_a_chunked_body_over_the_cap_is_413_not_read_whole(server):
    """BodyLimit looked only at Content-Length: a chunked body (none) of any size was read into memory whole."""

    def chunked(size: int):
        yield b'{"kind": "generate", "text": "'
        yield b"x" * size
        yield b'"}'

    with client(server) as c:
        headers = {"content-type": "application/json"}
        over = assert_problem(c.post("/v1/jobs", content=chunked(3 * BODY_CAP), headers=headers), 413)
        assert str(BODY_CAP) in over["detail"]
        small = c.post("/v1/jobs", content=chunked(10), headers=headers)  # under the cap: read as before
        assert small.status_code == 202, small.text
        assert c.get(small.json()["urls"]["self"]).json()["spec"]["text"] == "x" * 10


# --- integers a client sends that SQLite cannot hold are a 4xx, not a 500 ---


def test_a_last_event_id_too_large_for_sqlite_is_400_not_a_broken_stream(server):
    with client(server) as c:
        job = c.post("/v1/jobs", json={"kind": "generate", "text": "events"}).json()
        body = assert_problem(c.get(job["urls"]["events"], headers={"Last-Event-ID": "9" * 30}), 400)
        assert "Last-Event-ID" in body["detail"]


def test_a_cursor_holding_a_number_too_large_for_sqlite_is_422_not_500(server):
    cursor = base64.urlsafe_b64encode(b"before:" + b"9" * 30).decode().rstrip("=")
    with client(server) as c:
        assert "cursor" in assert_problem(c.get("/v1/jobs", params={"cursor": cursor}), 422)["detail"]


# --- an evaluate job without a plot ---


def test_an_evaluate_job_without_a_plot_has_no_result_file_and_its_result_is_404_not_500(server):
    """The pool finishes an evaluate job run with plot false with media_type None (no file): /result said 500."""
    with client(server) as c, JobStore(server["data"] / "jobs.sqlite3") as store:
        job, _ = store.create(
            owner_of_key(KEY_A), "evaluate", {"upload": "0" * 32, "backend": "learned", "plot": False}
        )
        finish_by_hand(store, job.id, {"media_type": None, "path": None, "metadata": {}, "scores": {"frames": 25}})
        assert c.get(f"/v1/jobs/{job.id}").json()["scores"] == {"frames": 25}
        assert "plot" in assert_problem(c.get(f"/v1/jobs/{job.id}/result"), 404)["detail"]


def spec_builder(store: JobStore, artifacts: Artifacts) -> Pool:
    """The pool's spec building (Pool._spec) over a real store and real files, without starting Ray actors."""
    pool = Pool.__new__(Pool)
    pool.store, pool.artifacts = store, artifacts
    return pool


def test_the_pool_passes_an_evaluate_jobs_plot_setting_to_the_worker(tmp_path):
    """`plot: false` (what `avgen eval --server` sends for every clip) was dropped: every clip was plotted."""
    artifacts = Artifacts(tmp_path)
    owner = owner_of_key(KEY_A)
    upload = artifacts.save_upload(owner, b"clip bytes", "video")
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        pool = spec_builder(store, artifacts)
        for plot in (False, True):
            job, _ = store.create(owner, "evaluate", {"upload": upload, "backend": "learned", "plot": plot})
            assert pool._spec(job).plot is plot


def test_evaluating_a_finished_job_finds_its_result_in_the_data_dir_after_the_dir_moved(tmp_path):
    """The pool read the source job's MP4 from the path stored when it finished (relative to the server's working
    directory with the default ./avgen-data): a data dir that moved, or a server started elsewhere, broke it."""
    before, after = tmp_path / "before", tmp_path / "after"
    owner = owner_of_key(KEY_A)
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        source, _ = store.create(owner, "generate", {"text": "hi"})
        path = Artifacts(before).save_result(source.id, b"mp4 bytes", "video/mp4")
        finish_by_hand(store, source.id, {"media_type": "video/mp4", "path": str(path), "metadata": {}, "scores": None})
        shutil.move(before, after)  # the volume is mounted elsewhere now, or restored from a backup
        job, _ = store.create(owner, "evaluate", {"job": source.id, "backend": "learned", "plot": True})
        spec = spec_builder(store, Artifacts(after))._spec(job)
        assert spec.clip == b"mp4 bytes" and spec.name.endswith(".mp4")


# --- a webhook receiver that trickles its answer ---


class TricklingReceiver:
    """A webhook receiver on 127.0.0.1 that reads each POST whole, then sends its 200 answer one byte at a time,
    `pause` seconds apart (each pause shorter than the deliverer's read timeout): a slow-loris receiver. Records
    the webhook-id of each request."""

    ANSWER = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"

    def __init__(self, pause: float):
        self.pause, self.ids, self.socket = pause, [], socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            headers = dict(line.split(": ", 1) for line in head.decode().lower().split("\r\n")[1:])
            while len(body) < int(headers["content-length"]):
                body += conn.recv(65536)
            self.ids.append(headers["webhook-id"])
            try:
                for byte in self.ANSWER:
                    time.sleep(self.pause)
                    conn.sendall(bytes([byte]))
            except OSError:  # the deliverer hung up: what a deadline does
                pass

    def close(self) -> None:
        self.socket.close()


def test_a_receiver_that_trickles_its_answer_is_cut_off_and_never_sent_the_delivery_twice_at_once(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 0.5)  # each read's timeout: the receiver pauses less
    monkeypatch.setattr(webhooks, "HOLD_SECONDS", 1.5)  # 3 x the timeout, as shipped
    receiver = TricklingReceiver(pause=0.1)  # 41 bytes: 4 s in all
    try:
        with JobStore(tmp_path / "jobs.sqlite3") as store:
            job, _ = store.create(ANONYMOUS, "generate", {"text": "hi", "webhook": {"url": receiver.url}})
            finish_by_hand(store, job.id, {"media_type": "video/mp4", "metadata": {}, "scores": None})
            deliverer = Deliverer(store, Secrets(store, tmp_path), backoff_seconds=60, max_attempts=3)
            deliverer.start()
            deadline = time.monotonic() + 20
            while store.deliveries(job.id)[0].attempts == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            deliverer.stop()
            delivery = store.deliveries(job.id)[0]
    finally:
        receiver.close()
    assert len(receiver.ids) == 1, f"the delivery was sent {len(receiver.ids)} times at once"
    assert delivery.status == "pending" and "Timeout" in delivery.last_error  # cut off, to be retried


# --- what a killed server left half-written ---


def test_files_a_killed_server_left_half_written_are_swept_and_do_not_evict_results(tmp_path):
    """A SIGKILL during a write leaves its temporary file (atomic_path), or an upload's bytes without their metadata;
    nothing deleted them, and under --max-disk they counted for ever: each sweep then expired the newest results
    (here one that finished a minute ago) to make room that those files kept taking."""
    files = Artifacts(tmp_path / "data")
    now = time.time()
    owner = owner_of_key(KEY_A)
    upload = files.save_upload(owner, b"u" * 100, "image")
    owner_dir = files.uploads()[0].path.parent
    leftovers = [
        tmp_path / "data" / "results" / f".{'1' * 32}.mp4.dead.tmp",  # a result being saved
        owner_dir / f".{'2' * 32}.dead.tmp",  # an upload's bytes being written
        owner_dir / ("3" * 32),  # an upload's bytes, written, its metadata not yet
    ]
    for path in leftovers:
        path.write_bytes(bytes(10_000))
        os.utime(path, (now - 2 * 3600, now - 2 * 3600))  # from a server killed two hours ago
    young = tmp_path / "data" / "results" / f".{'4' * 32}.mp4.busy.tmp"  # a write under way now: left alone
    young.write_bytes(bytes(100))
    with JobStore(tmp_path / "jobs.sqlite3", clock=lambda: now) as store:
        job, _ = store.create(owner, "generate", {"text": "hi"})
        files.save_result(job.id, bytes(1000), "video/mp4")
        finish_by_hand(store, job.id, {"media_type": "video/mp4", "metadata": {}, "scores": None})
        swept = sweep(store, files, retention_seconds=7 * 86400, max_disk_bytes=5000, now=now + 60)
        assert swept.expired == [] and store.job(job.id).status == "succeeded"
    assert not any(path.exists() for path in leftovers) and young.exists()
    assert files.upload_info(owner, upload) is not None  # a whole upload stays


# --- a COMMIT that fails ---


class FailingCommit:
    """Wraps a real sqlite3 connection and calls through, except that the first COMMIT fails as SQLite's does when
    the disk is full or the database is locked (SQLITE_FULL, SQLITE_BUSY), the transaction still open."""

    def __init__(self, db: sqlite3.Connection):
        self.db, self.failed = db, False

    def execute(self, sql: str, *args):
        if sql == "COMMIT" and not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_a_failed_commit_is_rolled_back_and_the_store_writes_again(tmp_path):
    """SQLite's advice: after a failed COMMIT, ROLLBACK. Without it the thread's connection stayed inside the
    transaction, holding the database's write lock: its every later write failed ("cannot start a transaction
    within a transaction") and every other connection's, the worker pool's too, waited on the lock and failed."""
    owner = owner_of_key(KEY_A)
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        real = store._db()
        store._local.db = FailingCommit(real)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            store.create(owner, "generate", {"text": "the disk was full"})
        assert not real.in_transaction
        job, created = store.create(owner, "generate", {"text": "room again"})
        assert created and [j.id for j in store.list(owner)[0]] == [job.id]  # the failed one left nothing
