"""The worker pool on a real local Ray, with the small model, a real SQLite job store and real result files:
events flow to the store per sampler step, each job finishes exactly once, cancel reaches the running actor,
a job whose actor dies or stops answering is run again by a fresh one."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

ray = pytest.importorskip("ray")

from api.artifacts import Artifacts  # noqa: E402
from api.store import JobStore  # noqa: E402
from avgen.media import read_mp4  # noqa: E402
from workers.jobs import Status  # noqa: E402
from workers.pool import Pool, worker_count  # noqa: E402

FINAL = {"succeeded", "failed", "canceled"}
LEASE = 6.0  # the pool's lease: a ping to a worker unanswered this long gets it killed


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(local_ray, small_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    store = JobStore(root / "jobs.db")
    pool = Pool(
        store, Artifacts(root / "artifacts"), small_checkpoint, workers=2, lease_seconds=LEASE, poll_seconds=0.05
    )
    wait_for(pool.ready, "an actor to load")
    yield pool
    pool.stop(grace_seconds=5)
    store.close()


def wait_for(condition, what, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def finished(pool, job_id):
    return wait_for(lambda: (j := pool.store.job(job_id)).status.is_terminal and j, f"job {job_id} to finish")


def event_types(pool, job_id):
    return [e.type for e in pool.store.events_after(job_id)]


def test_a_generate_job_succeeds_with_progress_per_step_and_a_result_that_decodes(pool, tmp_path):
    job, _ = pool.store.create("alice", "generate", {"text": "hello", "seconds": 1.4, "steps": 3, "score": False})
    done = finished(pool, job.id)
    assert (done.status, done.attempts, done.progress) == (Status.SUCCEEDED, 1, 1.0)
    events = pool.store.events_after(job.id)
    assert [e.type for e in events][:2] == ["queued", "started"] and [e.type for e in events][-1] == "succeeded"
    progress = [e for e in events if e.type == "progress"]
    assert len(progress) >= 6  # two 1-second chunks of 3 sampler steps each, each step an event
    assert [p.data["fraction"] for p in progress] == sorted(p.data["fraction"] for p in progress)
    assert done.result["media_type"] == "video/mp4" and done.result["metadata"]
    assert len(read_mp4(done.result["path"]).frames) == 35  # 1.4 s at 25 fps


def test_a_missing_upload_fails_the_job_as_invalid_without_running_it(pool):
    spec = {"text": "hi", "seconds": 0.4, "reference_image": "0" * 32, "score": False}
    job, _ = pool.store.create("alice", "generate", spec)
    done = finished(pool, job.id)
    assert done.status == Status.FAILED and done.error["type"] == "invalid-request"
    assert "not found" in done.error["detail"] and event_types(pool, job.id) == ["queued", "started", "failed"]


def test_six_jobs_on_two_actors_each_finish_exactly_once(pool):
    jobs = [pool.store.create(f"owner{i % 2}", "generate", {"seconds": 0.4, "seed": i, "score": False})[0]
            for i in range(6)]  # fmt: skip
    done = [finished(pool, j.id) for j in jobs]
    assert all(d.status == Status.SUCCEEDED and d.attempts == 1 for d in done)
    assert len({d.worker_id for d in done}) == 2  # both actors worked
    for d in done:
        assert [t for t in event_types(pool, d.id) if t in FINAL] == ["succeeded"]
        assert len(read_mp4(d.result["path"]).frames) == 10


def test_canceling_a_running_job_stops_its_actor_and_keeps_no_result(pool):
    job, _ = pool.store.create("bob", "generate", {"text": "long", "seconds": 4.0, "steps": 12, "score": False})
    wait_for(lambda: pool.store.job(job.id).progress > 0, "the job to make progress")
    pool.store.request_cancel("bob", job.id)
    done = finished(pool, job.id)
    assert done.status == Status.CANCELED and done.progress < 1.0
    assert event_types(pool, job.id)[-1] == "canceled"
    assert not pool.artifacts.result_path(job.id).exists()


def test_a_job_whose_actor_is_killed_is_run_again_by_a_new_actor(pool):
    job, _ = pool.store.create("carol", "generate", {"text": "again", "seconds": 4.0, "steps": 12, "score": False})
    wait_for(lambda: pool.store.job(job.id).progress > 0, "the job to make progress")
    (slot,) = [s for s in pool.slots if s.job is not None and s.job.id == job.id]
    ray.kill(slot.actor)
    done = finished(pool, job.id)
    assert (done.status, done.attempts) == (Status.SUCCEEDED, 2)
    types = event_types(pool, job.id)
    assert types.count("started") == 2 and [t for t in types if t in FINAL] == ["succeeded"]
    requeued = [e.data for e in pool.store.events_after(job.id) if e.type == "queued" and e.data.get("reason")]
    assert requeued == [{"status": "queued", "reason": "worker-died", "attempts": 1}]
    assert len(read_mp4(done.result["path"]).frames) == 100
    replaced = lambda: slot not in pool.slots and all(s.loaded and not s.dead for s in pool.slots)  # noqa: E731
    wait_for(replaced, "a new actor to take the killed one's place")


def pid_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


@pytest.mark.parametrize(
    "hang_seconds, noticed",
    [(None, "answered no ping for"), (1.0, "sent no event for")],  # the lease-long ping, or the silence backstop
    ids=["ping", "silence"],
)
def test_a_job_whose_actor_stops_answering_goes_back_to_the_queue_and_succeeds_on_a_new_actor(
    pool, caplog, hang_seconds, noticed
):
    job, _ = pool.store.create("gina", "generate", {"text": "frozen", "seconds": 4.0, "steps": 12, "score": False})
    wait_for(lambda: pool.store.job(job.id).progress > 0, "the job to make progress")
    (slot,) = [s for s in pool.slots if s.job is not None and s.job.id == job.id]
    pid = pid_of(slot.actor)
    default_hang, pool.hang_seconds = pool.hang_seconds, hang_seconds or pool.hang_seconds
    os.kill(pid, signal.SIGSTOP)  # alive to Ray, but it answers nothing (as if stuck in native code)
    try:
        requeued = lambda: [e.data for e in pool.store.events_after(job.id) if e.data.get("reason")]  # noqa: E731
        assert wait_for(requeued, "the hung job to go back to the queue", timeout=4 * LEASE) == [
            {"status": "queued", "reason": "worker-hung", "attempts": 1}
        ]
        done = finished(pool, job.id)
    finally:
        pool.hang_seconds = default_hang
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGCONT)
    warned = [r.getMessage() for r in caplog.records if "killing it" in r.getMessage()]
    assert len(warned) == 1 and noticed in warned[0], warned
    assert (done.status, done.attempts) == (Status.SUCCEEDED, 2) and done.worker_id != slot.worker_id
    assert [t for t in event_types(pool, job.id) if t in FINAL] == ["succeeded"]
    assert len(read_mp4(done.result["path"]).frames) == 100
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), "the stopped actor's process to be gone", timeout=30)
    replaced = lambda: slot not in pool.slots and all(s.loaded and not s.dead for s in pool.slots)  # noqa: E731
    wait_for(replaced, "a new actor to take the hung one's place")


def test_an_actor_that_dies_idle_is_replaced_before_a_job_is_given_to_it(pool):
    wait_for(lambda: all(s.loaded and s.job is None for s in pool.slots), "both actors to be idle")
    idle = pool.slots[-1]
    ray.kill(idle.actor)
    replaced = lambda: idle not in pool.slots and all(s.loaded and not s.dead for s in pool.slots)  # noqa: E731
    wait_for(replaced, "the dead idle actor to be replaced")
    jobs = [pool.store.create("hana", "generate", {"seconds": 0.4, "seed": i, "score": False})[0] for i in range(2)]
    assert [finished(pool, j.id).attempts for j in jobs] == [1, 1]  # no job spent an attempt on the dead actor


def open_files(path) -> int:
    """This process's open descriptors on the SQLite file (and its -wal)."""
    names, count = {str(path), f"{path}-wal"}, 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") in names
        except FileNotFoundError:  # closed meanwhile (the listing's own descriptor, too)
            pass
    return count


def test_jobs_one_after_another_leave_no_store_connection_behind(pool):
    def one_job(i):
        job, _ = pool.store.create("ines", "generate", {"seconds": 0.4, "seed": i, "score": False})
        assert finished(pool, job.id).status == Status.SUCCEEDED

    one_job(0)
    before = open_files(pool.store.path)
    for i in range(1, 4):
        one_job(i)
    assert open_files(pool.store.path) == before  # a consumer thread (and its connection) per job would add two each


def test_a_job_whose_consumer_cannot_start_is_not_held_and_its_lease_brings_it_back(pool):
    consumers, pool._consumers = pool._consumers, ThreadPoolExecutor(1)
    pool._consumers.shutdown()  # a real executor that refuses work, as one that can start no thread would
    try:
        job, _ = pool.store.create("jack", "generate", {"seconds": 0.4, "score": False})
        wait_for(lambda: pool.store.job(job.id).status == Status.RUNNING, "the job to be leased")
        wait_for(lambda: all(s.job is None for s in pool.slots), "the slot to let the job go")
    finally:
        pool._consumers = consumers
    done = finished(pool, job.id)
    assert (done.status, done.attempts) == (Status.SUCCEEDED, 2)
    assert [e.data.get("reason") for e in pool.store.events_after(job.id) if e.type == "queued"] == [
        None,
        "lease-expired",
    ]


def test_an_evaluate_job_scores_an_upload_or_a_finished_jobs_result(pool):
    generated, _ = pool.store.create("dave", "generate", {"text": "score me", "seconds": 0.8, "score": False})
    generated = finished(pool, generated.id)
    upload = pool.artifacts.save_upload("dave", pool.artifacts.result_path(generated.id).read_bytes(), "video")
    by_upload, _ = pool.store.create("dave", "evaluate", {"upload": upload, "backend": "learned"})
    by_job, _ = pool.store.create("dave", "evaluate", {"job": generated.id, "backend": "learned"})
    not_mine, _ = pool.store.create("erin", "evaluate", {"job": generated.id, "backend": "learned"})
    for job in (by_upload, by_job):
        done = finished(pool, job.id)
        assert done.status == Status.SUCCEEDED, done.error
        assert done.result["scores"]["frames"] == 20 and done.result["media_type"] == "image/png"
        assert pool.artifacts.result_path(job.id, "image/png").read_bytes().startswith(b"\x89PNG")
    refused = finished(pool, not_mine.id)
    assert refused.status == Status.FAILED and refused.error["type"] == "invalid-request"


def test_stop_gives_a_running_job_back_to_the_queue_and_ends_the_actors(pool):  # the last test using the pool
    job, _ = pool.store.create("frank", "generate", {"text": "stop", "seconds": 4.0, "steps": 12, "score": False})
    wait_for(lambda: pool.store.job(job.id).progress > 0, "the job to make progress")
    actors = [s.actor for s in pool.slots]
    pool.stop(grace_seconds=0)
    back = pool.store.job(job.id)
    assert (back.status, back.attempts, back.lease_token) == (Status.QUEUED, 1, None)
    assert pool.store.events_after(job.id)[-1].data == {"status": "queued", "reason": "shutdown", "attempts": 1}
    assert not pool.ready()
    for actor in actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.ready.remote())
    time.sleep(0.3)
    assert pool.store.job(job.id).status == Status.QUEUED  # nothing leases after stop


def test_auto_workers_is_one_per_gpu_else_one_per_threads_cpus():
    assert worker_count("auto", "cuda", 4, {"CPU": 32, "GPU": 3}) == 3
    assert worker_count("auto", "cpu", 4, {"CPU": 10}) == 2
    assert worker_count("auto", "cpu", 4, {"CPU": 2}) == 1
    assert worker_count(5, "cpu", 1, {"CPU": 2}) == 5
