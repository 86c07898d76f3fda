"""The worker pool across Ray nodes (ray.cluster_utils.Cluster: real raylets, one machine): a node that
leaves mid-job sends its job back to the queue, and an actor on another node finishes it exactly once; a pool
sized "auto" grows onto a node that joins and does not outgrow the cluster when one leaves.
Media and results travel through Ray, not through a disk the nodes share."""

from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from test_pool import wait_for  # noqa: E402

from api.artifacts import Artifacts  # noqa: E402
from api.store import JobStore  # noqa: E402
from avgen.media import read_mp4  # noqa: E402
from workers.jobs import Status  # noqa: E402
from workers.pool import Pool, start_pool  # noqa: E402


def node_of(actor) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


@pytest.fixture
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_a_node_that_leaves_mid_job_sends_the_job_to_an_actor_on_another_node(cluster, small_checkpoint, tmp_path):
    first = cluster.add_node(num_cpus=1)  # the head has no CPU: the pool's only actor starts here
    ray.init(address=cluster.address, log_to_driver=False)
    store = JobStore(tmp_path / "jobs.db")
    pool = Pool(store, Artifacts(tmp_path / "artifacts"), small_checkpoint, workers=1, poll_seconds=0.05)
    try:
        wait_for(pool.ready, "the actor to load", timeout=120)
        assert node_of(pool.slots[0].actor) == first.node_id
        second = cluster.add_node(num_cpus=1)  # now, so that it is up before the job ends
        job, _ = store.create("alice", "generate", {"text": "move", "seconds": 4.0, "steps": 12, "score": False})
        wait_for(lambda: store.job(job.id).progress > 0, "the job to make progress", timeout=120)
        cluster.remove_node(first)

        done = wait_for(lambda: (j := store.job(job.id)).status.is_terminal and j, "the job to finish", timeout=120)
        assert (done.status, done.attempts) == (Status.SUCCEEDED, 2)
        events = store.events_after(job.id)
        assert [e.type for e in events if e.type in ("succeeded", "failed", "canceled")] == ["succeeded"]
        assert [e.data.get("reason") for e in events if e.type == "queued"] == [None, "worker-died"]
        assert node_of(pool.slots[0].actor) == second.node_id
        assert len(read_mp4(done.result["path"]).frames) == 100
        assert len(pool.slots) == 1  # a fixed number stays as given, whatever joins
    finally:
        pool.stop(grace_seconds=1)
        store.close()


def test_an_auto_sized_pool_grows_onto_a_node_that_joins_and_shrinks_when_it_leaves(
    cluster, small_checkpoint, tmp_path
):
    first = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    store = JobStore(tmp_path / "jobs.db")
    config = SimpleNamespace(workers="auto", threads=1, checkpoint=small_checkpoint, lease_seconds=8)
    pool = start_pool(config, store, Artifacts(tmp_path / "artifacts"))
    loaded = lambda n: len(pool.slots) == n and all(s.loaded and not s.dead for s in pool.slots)  # noqa: E731
    try:
        wait_for(lambda: loaded(1), "one actor for the one CPU", timeout=120)
        second = cluster.add_node(num_cpus=1)
        wait_for(lambda: loaded(2), "a second actor on the node that joined", timeout=120)
        (grown,) = [s for s in pool.slots if node_of(s.actor) == second.node_id]
        body = {"seconds": 4.0, "steps": 12, "score": False}
        jobs = [store.create("alice", "generate", {**body, "seed": i})[0] for i in range(2)]
        running = lambda: (j := grown.job) is not None and store.job(j.id).progress > 0 and j  # noqa: E731
        moved = wait_for(running, "a job to run on the node that joined", timeout=120)

        cluster.remove_node(second)  # mid-job: its actor is not replaced, there is no room for it now
        wait_for(lambda: loaded(1) and grown not in pool.slots, "the pool to shrink back to one actor", timeout=120)
        done = [wait_for(lambda j=j: (d := store.job(j.id)).status.is_terminal and d, "a job", 120) for j in jobs]
        assert [d.status for d in done] == [Status.SUCCEEDED] * 2
        assert {d.id: d.attempts for d in done}[moved.id] == 2
        for d in done:
            assert [e.type for e in store.events_after(d.id) if e.type in ("succeeded", "failed")] == ["succeeded"]
        assert node_of(pool.slots[0].actor) == first.node_id
    finally:
        pool.stop(grace_seconds=1)
        store.close()
