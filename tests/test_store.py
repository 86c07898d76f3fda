"""The job store on real SQLite files: ownership, idempotency, fair and exclusive leases, lease expiry,
exactly-once completion, cancel, events, and durability across close, reopen and SIGKILL."""

import collections
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from api.store import SCHEMA_VERSION, Conflict, IdempotencyConflict, JobStore, Quota, QuotaExceeded, StoreError
from workers.jobs import Status

REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    with JobStore(tmp_path / "jobs.db", clock=clock) as s:
        yield s


def run_in_threads(n, fn):
    """Run fn(i) in n threads released together; return their results (re-raising any error)."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def body(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_create_get_and_list_newest_first_in_cursor_pages(store, clock):
    ids = []
    for i in range(7):
        clock.advance(1)
        job, created = store.create("alice", "score" if i % 2 else "generate", {"i": i})
        assert created and job.status == Status.QUEUED and job.created_at == clock.now and job.attempts == 0
        ids.append(job.id)
    got = store.get("alice", ids[3])
    assert got.spec == {"i": 3} and got.kind == "score" and got.owner == "alice"

    pages, cursor = [], None
    while True:
        page, cursor = store.list("alice", limit=3, cursor=cursor)
        pages.append([j.id for j in page])
        if cursor is None:
            break
    assert pages == [ids[6:3:-1], ids[3:0:-1], ids[0:1]]

    assert [j.id for j in store.list("alice", kind="score")[0]] == [ids[5], ids[3], ids[1]]
    leased = store.lease("w", 30)
    assert [j.id for j in store.list("alice", status=Status.RUNNING)[0]] == [leased.id]
    assert store.counts("alice")[Status.QUEUED] == 6 and store.counts()[Status.RUNNING] == 1


def test_a_bad_cursor_or_limit_is_a_clear_error(store):
    with pytest.raises(ValueError, match="cursor"):
        store.list("alice", cursor="not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        store.list("alice", limit=0)


def test_another_owners_job_is_invisible(store):
    job, _ = store.create("alice", "generate", {})
    store.create("bob", "generate", {})
    assert store.get("bob", job.id) is None
    assert store.request_cancel("bob", job.id) is None
    assert store.get("alice", job.id).status == Status.QUEUED  # bob's cancel did nothing
    assert [j.owner for j in store.list("bob")[0]] == ["bob"]
    assert store.counts("bob")[Status.QUEUED] == 1 and store.counts()[Status.QUEUED] == 2
    with pytest.raises(StoreError, match="parent"):
        store.create("bob", "score", {}, parent=job.id)
    child, _ = store.create("alice", "score", {}, parent=job.id)
    assert child.parent == job.id


def test_idempotency_same_body_is_the_original_other_body_is_a_conflict(store):
    first, created = store.create("alice", "generate", {"text": "hi", "seed": 1}, idempotency_key="k1")
    again, created_again = store.create("alice", "generate", {"seed": 1, "text": "hi"}, idempotency_key="k1")
    assert created and not created_again and again == first
    with pytest.raises(IdempotencyConflict, match="k1"):
        store.create("alice", "generate", {"text": "bye", "seed": 1}, idempotency_key="k1")
    with pytest.raises(IdempotencyConflict):
        store.create("alice", "score", {"text": "hi", "seed": 1}, idempotency_key="k1")
    other_owner, created = store.create("bob", "generate", {"text": "hi", "seed": 1}, idempotency_key="k1")
    assert created and other_owner.id != first.id
    assert store.counts()[Status.QUEUED] == 2


def test_eight_threads_creating_with_one_key_make_one_job(store):
    results = run_in_threads(8, lambda i: store.create("alice", "generate", {"x": 1}, idempotency_key="same"))
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert store.counts()[Status.QUEUED] == 1
    assert len(store.events_after(results[0][0].id)) == 1  # one queued event


def test_a_quota_holds_exactly_under_concurrent_creates_and_a_replay_passes_it(store):
    quota = Quota(per_owner=3, queue=5)

    def create(i):
        try:
            return store.create("alice" if i % 2 else "bob", "generate", {"i": i}, f"key-{i}", quota=quota)[0]
        except QuotaExceeded as e:
            return e.scope

    outcomes = run_in_threads(16, create)
    jobs = [o for o in outcomes if not isinstance(o, str)]
    assert len(jobs) == 5 and store.counts()[Status.QUEUED] == 5  # 3 + 2 or 2 + 3: the queue cap binds
    assert {o for o in outcomes if isinstance(o, str)} <= {"owner", "queue"}
    assert max(collections.Counter(j.owner for j in jobs).values()) == 3
    first = jobs[0]
    again, created = store.create(first.owner, "generate", first.spec, f"key-{first.spec['i']}", quota=quota)
    assert again.id == first.id and not created  # the same request again: its job, though the queue is full
    with pytest.raises(QuotaExceeded):
        store.create_batch("carol", [{"kind": "generate"}], quota=quota)


def test_four_threads_leasing_forty_jobs_lease_each_exactly_once(store):
    for i in range(40):
        store.create(f"owner{i % 3}", "generate", {"i": i})

    def drain(worker):
        got = []
        while (job := store.lease(f"w{worker}", 60)) is not None:
            got.append(job)
        return got

    leased = [job for got in run_in_threads(4, drain) for job in got]
    assert len(leased) == 40
    assert collections.Counter(j.id for j in leased).most_common(1)[0][1] == 1
    assert all(j.status == Status.RUNNING and j.attempts == 1 for j in leased)
    assert len({j.lease_token for j in leased}) == 40
    assert store.counts()[Status.RUNNING] == 40


def test_one_owners_many_jobs_do_not_starve_another_owners_single_job(store, clock):
    for i in range(50):
        clock.advance(1)
        store.create("alice", "generate", {"i": i})
    clock.advance(1)
    bobs, _ = store.create("bob", "generate", {})
    assert store.queue_position(bobs.id) == 1
    first_two = [store.lease("w", 60).id for _ in range(2)]
    assert bobs.id in first_two
    # FIFO within an owner: alice's jobs come in the order she queued them
    alice = [store.lease("w", 60).spec["i"] for _ in range(49)]
    assert alice == sorted(alice)


def test_queue_position_is_the_order_lease_hands_jobs_out(store, clock):
    for owner, n in [("a", 5), ("b", 2), ("c", 3), ("a", 1), ("d", 1)]:
        for _ in range(n):
            clock.advance(1)
            store.create(owner, "generate", {})
    store.lease("w", 60)  # a has been served: b, c, d now come before a's next job
    queued = store.list("a")[0] + store.list("b")[0] + store.list("c")[0] + store.list("d")[0]
    positions = {j.id: store.queue_position(j.id) for j in queued if j.status == Status.QUEUED}
    assert sorted(positions.values()) == list(range(len(positions)))
    order = [store.lease("w", 60).id for _ in range(len(positions))]
    assert order == sorted(positions, key=positions.get)
    assert store.queue_position(order[0]) is None  # running: no longer in the queue


def test_heartbeat_keeps_a_lease_and_an_expired_lease_is_requeued_then_failed(store, clock):
    job, _ = store.create("alice", "generate", {})
    lease = store.lease("w1", 10)
    clock.advance(8)
    assert store.heartbeat(job.id, lease.lease_token, 10)
    clock.advance(8)
    assert store.requeue_expired() == []  # the heartbeat moved the expiry

    clock.advance(3)
    requeued = store.requeue_expired()
    assert [(j.id, j.status, j.attempts, j.lease_token) for j in requeued] == [(job.id, Status.QUEUED, 1, None)]
    assert not store.heartbeat(job.id, lease.lease_token, 10)  # the lost worker learns it lost the lease
    assert not store.finish(job.id, lease.lease_token, Status.SUCCEEDED)  # and cannot complete the job

    for attempt in (2, 3):
        again = store.lease("w2", 10)
        assert again.id == job.id and again.attempts == attempt and again.lease_token != lease.lease_token
        assert not store.finish(job.id, lease.lease_token, Status.SUCCEEDED)  # the first worker's token is stale
        clock.advance(11)
        (expired,) = store.requeue_expired(max_attempts=3)
    assert expired.status == Status.FAILED and expired.error["type"] == "worker-lost"
    assert expired.finished_at == clock.now
    assert store.lease("w3", 10) is None
    types = [e.type for e in store.events_after(job.id)]
    assert types == ["queued", "started", "queued", "started", "queued", "started", "failed"]


def test_requeue_gives_back_a_dead_workers_job_under_its_token_only(store):
    job, _ = store.create("alice", "generate", {})
    lease = store.lease("w1", 10)
    assert store.requeue(job.id, "not-the-token", "actor-died") is None
    back = store.requeue(job.id, lease.lease_token, "actor-died", max_attempts=2)
    assert (back.status, back.attempts, back.lease_token) == (Status.QUEUED, 1, None)
    assert store.requeue(job.id, lease.lease_token, "actor-died") is None  # once only
    again = store.lease("w2", 10)
    assert store.requeue(job.id, again.lease_token, "actor-died", max_attempts=2).status == Status.FAILED
    assert store.events_after(job.id)[2].data == {"status": "queued", "reason": "actor-died", "attempts": 1}


def test_finish_happens_exactly_once(store):
    job, _ = store.create("alice", "generate", {})
    lease = store.lease("w", 60)
    assert store.finish(job.id, lease.lease_token, Status.SUCCEEDED, result={"video": "out.mp4"})
    assert not store.finish(job.id, lease.lease_token, Status.SUCCEEDED, result={"video": "other.mp4"})
    assert not store.finish(job.id, lease.lease_token, Status.FAILED, error={"type": "boom"})
    done = store.get("alice", job.id)
    assert done.status == Status.SUCCEEDED and done.result == {"video": "out.mp4"} and done.error is None
    assert done.progress == 1.0
    assert [e.type for e in store.events_after(job.id)] == ["queued", "started", "succeeded"]
    with pytest.raises(ValueError, match="succeeded, failed or canceled"):
        store.finish(job.id, lease.lease_token, Status.QUEUED)


def test_concurrent_duplicate_finishes_complete_once(store):
    store.create("alice", "generate", {})
    lease = store.lease("w", 60)
    won = run_in_threads(8, lambda i: store.finish(lease.id, lease.lease_token, Status.SUCCEEDED, result={"i": i}))
    assert sum(won) == 1
    assert store.get("alice", lease.id).result == {"i": won.index(True)}


def test_cancel_rules(store):
    queued, _ = store.create("alice", "generate", {"n": 1})
    running, _ = store.create("alice", "generate", {"n": 2})
    done, _ = store.create("alice", "generate", {"n": 3})

    canceled = store.request_cancel("alice", queued.id)
    assert canceled.status == Status.CANCELED and canceled.finished_at is not None
    for _ in range(2):
        lease = store.lease("w", 60)
        assert lease.id != queued.id  # a canceled queued job never runs
        if lease.id == done.id:
            store.finish(done.id, lease.lease_token, Status.SUCCEEDED)
        else:
            running_lease = lease
    assert store.lease("w", 60) is None

    asked = store.request_cancel("alice", running.id)
    assert asked.status == Status.RUNNING and asked.cancel_requested
    assert store.request_cancel("alice", running.id).cancel_requested  # asking twice is harmless
    assert store.finish(running.id, running_lease.lease_token, Status.CANCELED)
    assert store.get("alice", running.id).status == Status.CANCELED

    with pytest.raises(Conflict, match="succeeded"):
        store.request_cancel("alice", done.id)
    events_before = store.events_after(queued.id)
    assert store.request_cancel("alice", queued.id).status == Status.CANCELED  # already canceled: no-op
    assert store.events_after(queued.id) == events_before
    assert [e.type for e in store.events_after(running.id)] == ["queued", "started", "cancel-requested", "canceled"]


def test_a_canceled_job_whose_worker_died_is_canceled_not_rerun(store, clock):
    job, _ = store.create("alice", "generate", {})
    store.lease("w", 10)
    store.request_cancel("alice", job.id)
    clock.advance(11)
    (after,) = store.requeue_expired()
    assert after.status == Status.CANCELED
    assert store.lease("w", 10) is None


def test_progress_needs_the_lease_and_is_an_event(store):
    job, _ = store.create("alice", "generate", {})
    lease = store.lease("w", 60)
    assert store.set_progress(job.id, lease.lease_token, 0.5, "chunk 2/4")
    assert not store.set_progress(job.id, "someone-else", 0.9, "no")
    with pytest.raises(ValueError, match="0..1"):
        store.set_progress(job.id, lease.lease_token, 1.5)
    got = store.get("alice", job.id)
    assert (got.progress, got.progress_message) == (0.5, "chunk 2/4")
    assert store.events_after(job.id)[-1].data == {"fraction": 0.5, "message": "chunk 2/4"}


def test_each_status_change_and_its_event_commit_in_one_transaction(store, clock):
    statements = []
    store._db().set_trace_callback(statements.append)  # a spy on this thread's connection: SQL still runs

    def one_transaction(operation):
        statements.clear()
        operation()
        assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
        begin = statements.index("BEGIN IMMEDIATE")
        assert all(s.startswith("SELECT") for s in statements[:begin])  # a read may decide there is nothing to do
        assert statements[-1] == "COMMIT"
        assert any(s.startswith(("INSERT INTO jobs", "UPDATE jobs")) for s in statements[begin:])
        assert any(s.startswith("INSERT INTO events") for s in statements[begin:])

    one_transaction(lambda: store.create("alice", "generate", {}))
    one_transaction(lambda: store.create("alice", "generate", {"n": 2}))
    jobs = []
    one_transaction(lambda: jobs.append(store.lease("w", 10)))
    one_transaction(lambda: store.finish(jobs[0].id, jobs[0].lease_token, Status.FAILED, error={"type": "x"}))
    one_transaction(lambda: jobs.append(store.lease("w", 10)))
    one_transaction(lambda: store.set_progress(jobs[1].id, jobs[1].lease_token, 0.5))
    one_transaction(lambda: store.request_cancel("alice", jobs[1].id))
    clock.advance(11)
    one_transaction(store.requeue_expired)


def test_events_have_increasing_sequence_ids_and_resume_after_any_of_them(store, clock):
    a, _ = store.create("alice", "generate", {})
    b, _ = store.create("alice", "generate", {})
    clock.advance(1)
    s1 = store.append_event(a.id, "log", {"line": "one"})
    store.append_event(b.id, "log", {"line": "other job"})
    s2 = store.append_event(a.id, "log", {"line": "two"})
    events = store.events_after(a.id)
    assert [e.type for e in events] == ["queued", "log", "log"]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3 and seqs[1:] == [s1, s2]
    assert [e.data for e in store.events_after(a.id, s1)] == [{"line": "two"}]
    assert store.events_after(a.id, s2) == []
    assert events[1].at == clock.now


def test_close_and_reopen_keeps_jobs_events_and_idempotency_keys(tmp_path, clock):
    path = tmp_path / "jobs.db"
    with JobStore(path, clock=clock) as store:
        job, _ = store.create("alice", "generate", {"x": 1}, idempotency_key="k")
        lease = store.lease("w", 60)
        store.set_progress(job.id, lease.lease_token, 0.25, "started")
        last = store.append_event(job.id, "log", {"line": "hello"})
        before = store.events_after(job.id)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    with JobStore(path, clock=clock) as store:
        assert store.get("alice", job.id).progress == 0.25
        assert store.events_after(job.id) == before
        again, created = store.create("alice", "generate", {"x": 1}, idempotency_key="k")
        assert again.id == job.id and not created
        with pytest.raises(IdempotencyConflict):
            store.create("alice", "generate", {"x": 2}, idempotency_key="k")
        assert store.finish(job.id, lease.lease_token, Status.SUCCEEDED)  # the lease token survived the restart
        assert store.events_after(job.id, last)[0].seq > last


def test_a_file_from_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "jobs.db"
    JobStore(path).close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        JobStore(path)


CREATE_FOREVER = """
import sys
from api.store import JobStore
store = JobStore(sys.argv[1])
i = 0
while True:
    store.create("alice", "generate", {"i": i}, idempotency_key=f"k{i}")
    print(i, flush=True)
    i += 1
"""


def test_sigkill_while_creating_jobs_leaves_a_consistent_file(tmp_path):
    path = tmp_path / "jobs.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CREATE_FOREVER, str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        for line in child.stdout:
            reported = int(line)
            if reported >= 200:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert reported >= 200 and child.returncode == -signal.SIGKILL

    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with JobStore(path) as store:
        jobs = []
        page, cursor = store.list("alice", limit=1000)
        jobs += page
        n = len(jobs)
        assert cursor is None and n >= reported + 1  # every create that returned was committed
        assert sorted(j.spec["i"] for j in jobs) == list(range(n))  # no gap, no half-written job
        for j in jobs:
            assert [e.type for e in store.events_after(j.id)] == ["queued"]  # job and event committed together
            assert j.idempotency_key == f"k{j.spec['i']}"
        assert not store.create("alice", "generate", {"i": 0}, idempotency_key="k0")[1]
        assert store.create("alice", "generate", {"i": n}, idempotency_key=f"k{n}")[1]


# --- batches: a parent job (never leased) whose status follows its children ---

ITEMS = [{"kind": "generate", "text": f"item {i}", "seed": i} for i in range(3)]


def finish_next(store, status, **kw):
    job = store.lease("w", 60)
    assert store.finish(job.id, job.lease_token, status, **kw)
    return job


def test_a_batch_is_a_parent_and_its_children_in_one_transaction_and_the_parent_is_never_leased(store, clock):
    statements = []
    store._db().set_trace_callback(statements.append)
    batch, created = store.create_batch("alice", ITEMS, idempotency_key="b1")
    store._db().set_trace_callback(None)
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    assert created and batch.kind == "batch" and batch.status == Status.QUEUED and batch.spec == {"count": 3}
    children = store.children(batch.id)
    assert [c.spec for c in children] == [{"text": f"item {i}", "seed": i} for i in range(3)]
    assert all(c.parent == batch.id and c.kind == "generate" and c.status == Status.QUEUED for c in children)
    assert store.children_counts(batch.id)[Status.QUEUED] == 3
    assert store.active_top_level("alice") == 1 and store.queued_work() == 3  # a batch counts once per key
    assert store.queue_position(batch.id) == store.queue_position(children[0].id) == 0
    assert [j.id for j in store.list("alice", top_level=True)[0]] == [batch.id]
    assert [j.id for j in store.list("alice", parent=batch.id)[0]] == [c.id for c in reversed(children)]

    again, created_again = store.create_batch("alice", ITEMS, idempotency_key="b1")
    assert not created_again and again.id == batch.id and len(store.children(batch.id)) == 3
    assert store.find_idempotent("alice", "b1", "batch", {"items": ITEMS}).id == batch.id
    assert store.find_idempotent("alice", "other", "batch", {"items": ITEMS}) is None
    with pytest.raises(IdempotencyConflict):
        store.create_batch("alice", ITEMS[:2], idempotency_key="b1")
    with pytest.raises(IdempotencyConflict):
        store.find_idempotent("alice", "b1", "batch", {"items": ITEMS[:2]})
    with pytest.raises(ValueError, match="not batch"):
        store.create_batch("alice", [{"kind": "batch", "items": []}])
    assert store.counts("alice")[Status.QUEUED] == 4  # nothing more was created

    leased = [store.lease("w", 60) for _ in range(4)]
    assert [j.id for j in leased[:3]] == [c.id for c in children] and leased[3] is None  # FIFO; never the parent
    assert store.get("alice", batch.id).status == Status.RUNNING


def test_a_batch_does_not_starve_another_owners_job_and_queue_positions_are_the_lease_order(store, clock):
    batch, _ = store.create_batch("alice", [{"kind": "generate", "i": i} for i in range(2)])
    clock.advance(1)
    bobs = [store.create("bob", "generate", {"i": i})[0].id for i in range(4)]
    assert store.queue_position(bobs[0]) == 1
    queued = [c.id for c in store.children(batch.id)] + bobs
    positions = {job_id: store.queue_position(job_id) for job_id in queued}
    assert sorted(positions.values()) == list(range(6))  # the batch itself takes no place in the queue
    order = [store.lease("w", 60).id for _ in range(6)]
    assert order == sorted(positions, key=positions.get) and store.lease("w", 60) is None


def test_a_batch_runs_then_succeeds_with_one_progress_event_per_finished_child(store, clock):
    batch, _ = store.create_batch("alice", ITEMS)
    statements = []
    store._db().set_trace_callback(statements.append)
    first = store.lease("w", 60)  # the first child starts: the batch runs, in the same transaction
    store._db().set_trace_callback(None)
    assert statements.count("COMMIT") == 1 and store.get("alice", batch.id).status == Status.RUNNING
    assert store.finish(first.id, first.lease_token, Status.SUCCEEDED, result={"scores": {"x": 1}})
    got = store.get("alice", batch.id)
    assert got.status == Status.RUNNING and got.progress == pytest.approx(1 / 3)
    finish_next(store, Status.FAILED, error={"type": "invalid-request", "detail": "no"})
    third = store.lease("w", 10)
    clock.advance(11)
    (lost,) = store.requeue_expired(max_attempts=1)  # its worker died on its last attempt: failed
    assert lost.id == third.id and lost.status == Status.FAILED
    done = store.get("alice", batch.id)
    assert done.status == Status.SUCCEEDED and done.progress == 1.0 and done.finished_at == clock.now
    events = store.events_after(batch.id)
    assert [e.type for e in events] == ["queued", "started", "progress", "progress", "progress", "succeeded"]
    assert [e.data["fraction"] for e in events if e.type == "progress"] == pytest.approx([1 / 3, 2 / 3, 1])
    assert events[-1].data["children"] == {**{s.value: 0 for s in Status}, "succeeded": 1, "failed": 2}


def test_a_batch_whose_children_all_fail_fails_saying_how_many(store, clock):
    batch, _ = store.create_batch("alice", ITEMS[:2])
    finish_next(store, Status.FAILED, error={"type": "internal", "detail": "x"})
    job = store.lease("w", 10)
    assert store.requeue(job.id, job.lease_token, "worker-died", max_attempts=1).status == Status.FAILED
    failed = store.get("alice", batch.id)
    assert failed.status == Status.FAILED and failed.error["type"] == "batch-failed"
    assert "none of the 2 items succeeded: 2 failed" in failed.error["detail"]


def test_cancel_a_batch_cancels_its_children_and_it_ends_canceled_once_they_have(store):
    batch, _ = store.create_batch("alice", ITEMS + [{"kind": "evaluate", "upload": "u"}])
    finish_next(store, Status.SUCCEEDED)
    running = store.lease("w", 60)
    asked = store.request_cancel("alice", batch.id)
    assert asked.status == Status.RUNNING and asked.cancel_requested  # one child still runs
    by_status = {c.id: (c.status, c.cancel_requested) for c in store.children(batch.id)}
    assert by_status[running.id] == (Status.RUNNING, True)
    assert sorted(s for s, _ in by_status.values()) == ["canceled", "canceled", "running", "succeeded"]
    assert store.lease("w", 60) is None  # the canceled queued children never run
    assert store.request_cancel("alice", batch.id).status == Status.RUNNING  # asking twice changes nothing
    assert store.finish(running.id, running.lease_token, Status.CANCELED)  # the worker confirms
    canceled = store.get("alice", batch.id)
    assert canceled.status == Status.CANCELED and canceled.error is None
    types = [e.type for e in store.events_after(batch.id)]
    assert types == ["queued", "started", "progress", "cancel-requested", "progress", "progress", "canceled"]
    assert store.request_cancel("alice", batch.id).status == Status.CANCELED


def test_a_child_canceled_alone_leaves_its_batch_to_succeed_and_a_finished_batch_cannot_be_canceled(store):
    batch, _ = store.create_batch("alice", ITEMS[:2])
    first, second = store.children(batch.id)
    assert store.request_cancel("alice", second.id).status == Status.CANCELED
    assert store.get("alice", batch.id).status == Status.QUEUED  # nothing started yet
    finish_next(store, Status.SUCCEEDED)
    assert store.get("alice", batch.id).status == Status.SUCCEEDED
    with pytest.raises(Conflict, match="succeeded"):
        store.request_cancel("alice", batch.id)


def test_a_batch_whose_queued_children_are_all_canceled_is_canceled_at_once(store):
    batch, _ = store.create_batch("alice", ITEMS)
    assert store.request_cancel("alice", batch.id).status == Status.CANCELED
    assert [e.type for e in store.events_after(batch.id)] == ["queued", "cancel-requested", "progress", "canceled"]
    assert store.queued_work() == 0 and store.active_top_level("alice") == 0


def test_mean_duration_of_recent_succeeded_jobs_of_a_kind(store, clock):
    assert store.mean_duration("generate") is None
    for seconds, status in [(10, Status.SUCCEEDED), (20, Status.SUCCEEDED), (99, Status.FAILED)]:
        store.create("alice", "generate", {})
        job = store.lease("w", 600)
        clock.advance(seconds)
        store.finish(job.id, job.lease_token, status)
    assert store.mean_duration("generate") == 15 and store.mean_duration("generate", last=1) == 20
    assert store.mean_duration("evaluate") is None


# --- webhooks: deliveries written with the status change, secrets ---

HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["completed"]}


def test_a_delivery_is_written_with_each_status_change_its_webhook_hears_and_only_then(store, clock):
    import json

    plain, _ = store.create("alice", "generate", {"x": 0})
    hooked, _ = store.create("alice", "generate", {"x": 1, "webhook": HOOK})
    both, _ = store.create("alice", "generate", {"x": 2, "webhook": {**HOOK, "events": ["completed", "started"]}})
    assert store.lease("w", 60).id == plain.id
    lease = store.lease("w", 60)
    assert lease.id == hooked.id and store.deliveries(hooked.id) == []  # "started" is not among its events
    assert not store.finish(hooked.id, "not-the-token", Status.SUCCEEDED)
    assert store.deliveries(hooked.id) == []
    clock.advance(5)
    assert store.finish(hooked.id, lease.lease_token, Status.SUCCEEDED, result={"media_type": "video/mp4"})
    [delivery] = store.deliveries(hooked.id)
    assert (delivery.event, delivery.url, delivery.owner, delivery.status) == (
        "completed",
        HOOK["url"],
        "alice",
        "pending",
    )
    assert delivery.next_attempt_at == clock.now and delivery.attempts == 0 and delivery.id.startswith("msg_")
    body = json.loads(delivery.body)
    assert body["id"] == hooked.id and body["status"] == "succeeded" and body["spec"]["webhook"] == HOOK
    assert body["urls"]["self"] == f"/v1/jobs/{hooked.id}"

    lease = store.lease("w", 60)  # "started": heard by `both`, with the job as it is then (running)
    assert [(d.event, json.loads(d.body)["status"]) for d in store.deliveries(both.id)] == [("started", "running")]
    clock.advance(61)
    store.requeue_expired(max_attempts=1)  # its worker is lost: failed, a completion too
    assert [(d.event, json.loads(d.body)["status"]) for d in store.deliveries(both.id)] == [
        ("started", "running"), ("completed", "failed")]  # fmt: skip
    assert len({d.id for d in store.deliveries(both.id)}) == 2

    queued, _ = store.create("alice", "generate", {"x": 3, "webhook": HOOK})
    store.request_cancel("alice", queued.id)
    assert [json.loads(d.body)["status"] for d in store.deliveries(queued.id)] == ["canceled"]
    assert store.deliveries(plain.id) == []


def test_a_status_change_and_its_delivery_commit_together_or_not_at_all(store):
    job, _ = store.create("alice", "generate", {"webhook": HOOK})
    lease = store.lease("w", 60)
    db = sqlite3.connect(store.path)
    db.execute("CREATE TRIGGER no_deliveries BEFORE INSERT ON deliveries BEGIN SELECT RAISE(ABORT, 'refused'); END")
    db.commit()
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        store.finish(job.id, lease.lease_token, Status.SUCCEEDED)
    assert store.get("alice", job.id).status == Status.RUNNING  # the change went with the delivery
    assert [e.type for e in store.events_after(job.id)] == ["queued", "started"]
    db.execute("DROP TRIGGER no_deliveries")
    db.commit()
    db.close()
    assert store.finish(job.id, lease.lease_token, Status.SUCCEEDED)
    assert [d.event for d in store.deliveries(job.id)] == ["completed"]


def test_a_batch_webhook_hears_the_parent_not_its_children(store):
    import json

    batch, _ = store.create_batch("alice", [{"kind": "generate", "x": 1}, {"kind": "generate", "x": 2}], webhook=HOOK)
    assert store.get("alice", batch.id).spec == {"count": 2, "webhook": HOOK}
    again, created = store.create_batch("alice", [{"kind": "generate", "x": 1}], idempotency_key="k", webhook=HOOK)
    with pytest.raises(IdempotencyConflict):  # the webhook is part of the body
        store.create_batch("alice", [{"kind": "generate", "x": 1}], idempotency_key="k")
    store.request_cancel("alice", again.id)
    leases = [store.lease("w", 60), store.lease("w", 60)]
    store.finish(leases[0].id, leases[0].lease_token, Status.SUCCEEDED)
    assert store.deliveries(batch.id) == []
    store.finish(leases[1].id, leases[1].lease_token, Status.FAILED, error={"type": "x", "detail": "y"})
    [delivery] = store.deliveries(batch.id)
    body = json.loads(delivery.body)
    assert body["status"] == "succeeded" and body["children"] == {**dict.fromkeys(
        ("queued", "running", "canceled", "expired"), 0), "succeeded": 1, "failed": 1, "total": 2}  # fmt: skip
    assert all(store.deliveries(lease.id) == [] for lease in leases)


def test_claimed_deliveries_are_held_then_recorded_delivered_retried_or_failed(store, clock):
    for i in range(3):
        job, _ = store.create("alice", "generate", {"i": i, "webhook": HOOK})
        store.request_cancel("alice", job.id)
    clock.advance(1)
    claimed = store.claim_deliveries(limit=2, hold_seconds=30)
    assert len(claimed) == 2 and len(store.claim_deliveries(limit=5, hold_seconds=30)) == 1
    assert store.claim_deliveries(limit=5, hold_seconds=30) == []  # all held
    assert store.next_delivery_at() == clock.now + 30
    first, second = claimed
    assert store.record_attempt(first.id, delivered=True).status == "delivered"
    assert store.record_attempt(first.id, delivered=True) is None  # no longer pending
    retried = store.record_attempt(second.id, False, "HTTP 500", retry_at=clock.now + 5)
    assert (retried.status, retried.attempts, retried.last_error) == ("pending", 1, "HTTP 500")
    clock.advance(5)
    [again] = store.claim_deliveries(limit=5, hold_seconds=30)
    assert again.id == second.id and again.attempts == 1
    assert store.record_attempt(second.id, False, "HTTP 410").status == "failed"
    clock.advance(31)  # the third was claimed and never recorded (its sender died): due again
    assert len(store.claim_deliveries(limit=5, hold_seconds=30)) == 1


def test_webhook_secrets_are_per_owner_created_once_and_replaced_by_a_rotation(store):
    made = iter(["s1", "s2", "s3"])
    assert store.webhook_secret("alice", lambda: next(made)) == "s1"
    assert store.webhook_secret("alice", lambda: next(made)) == "s1"
    assert store.webhook_secret("bob", lambda: next(made)) == "s2"
    store.set_webhook_secret("alice", "s9")
    assert store.webhook_secret("alice", lambda: "unused") == "s9" and store.webhook_secret("bob", str) == "s2"


def test_a_version_1_file_gains_the_webhook_tables_in_place(tmp_path):
    path = tmp_path / "jobs.db"
    with JobStore(path) as store:
        job, _ = store.create("alice", "generate", {"x": 1})
    db = sqlite3.connect(path)  # as version 1 left it: no webhook tables
    db.executescript("DROP TABLE deliveries; DROP TABLE webhook_secrets; PRAGMA user_version = 1;")
    db.close()
    with JobStore(path) as store:
        assert store.get("alice", job.id).spec == {"x": 1}
        hooked, _ = store.create("alice", "generate", {"webhook": HOOK})
        store.request_cancel("alice", hooked.id)
        assert len(store.deliveries(hooked.id)) == 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
