"""The worker pool across Ray nodes (ray.cluster_utils.Cluster: real raylets, one machine): a node that
leaves mid-job sends its job back to the queue, and an actor on another node finishes it exactly once.
Media and results travel through Ray, not through a disk the nodes share."""

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from test_pool import wait_for  # noqa: E402

from api.artifacts import Artifacts  # noqa: E402
from api.store import JobStore  # noqa: E402
from avgen.media import read_mp4  # noqa: E402
from workers.jobs import Status  # noqa: E402
from workers.pool import Pool  # noqa: E402


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
    finally:
        pool.stop(grace_seconds=1)
        store.close()
