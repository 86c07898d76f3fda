"""Batches, evaluate-a-job, idempotent retries past the quotas and the start estimate, through a real
`avgen serve --workers 0` (jobs stay queued). Where a test needs jobs to run, it plays the worker on the same
SQLite file with the real JobStore and Artifacts (lease, write the MP4, finish), as the pool does."""

from __future__ import annotations

import io
import json
import time
import zipfile

import httpx
import pytest
import test_api
from scipy import stats
from test_api import KEY_A, KEY_B, assert_problem, auth, client, parse_sse, serve, upload

from api.artifacts import Artifacts
from api.deps import owner_of_key
from api.store import JobStore

mp4_bytes = test_api.mp4_bytes  # the fixture: a real small MP4
STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "expired")


def item(i: int, **extra) -> dict:
    return {"kind": "generate", "text": f"item number {i}", "seconds": 1, "seed": i, **extra}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("batch")) as running:
        yield running


class Clock:
    """The worker's clock in the tests that play the worker: run times are then known exactly."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def submit_batch(c: httpx.Client, items: list[dict], **kw) -> httpx.Response:
    return c.post("/v1/jobs", json={"kind": "batch", "items": items}, **kw)


# --- submit, read, list ---


def test_a_batch_is_a_parent_with_a_child_per_item_its_counts_and_its_children_listed(api, mp4_bytes):
    with client(api) as c:
        video = upload(c, mp4_bytes).json()["id"]
        r = submit_batch(c, [item(0), item(1), {"kind": "evaluate", "upload": video, "backend": "landmarks"}])
        assert r.status_code == 202, r.text
        batch = r.json()
        assert r.headers["location"] == f"/v1/jobs/{batch['id']}" and batch["status"] == "queued"
        assert batch["urls"]["children"] == f"/v1/jobs?parent={batch['id']}"
        view = c.get(batch["urls"]["self"]).json()
        assert view["kind"] == "batch" and view["parent"] is None and view["spec"] == {"count": 3}
        assert view["children"] == {**dict.fromkeys(STATUSES, 0), "queued": 3, "total": 3}
        assert view["queue_position"] is not None and view["estimated_start_at"] is None  # no run history yet

        top = [j["id"] for j in c.get("/v1/jobs", params={"limit": 100}).json()["jobs"]]
        assert batch["id"] in top
        pages, cursor = [], None
        while True:
            page = c.get(
                "/v1/jobs", params={"parent": batch["id"], "limit": 2, **({"cursor": cursor} if cursor else {})}
            )
            pages.append(page.json()["jobs"])
            if (cursor := page.json()["next_cursor"]) is None:
                break
        children = [j for p in pages for j in p]
        assert len(pages) == 2 and len(children) == 3
        assert [j["kind"] for j in children] == ["evaluate", "generate", "generate"]  # newest first
        assert all(j["parent"] == batch["id"] and j["status"] == "queued" for j in children)
        assert not set(top) & {j["id"] for j in children}  # the plain listing shows top-level jobs only
        assert [j["id"] for j in c.get("/v1/jobs", params={"kind": "batch"}).json()["jobs"]][0] == batch["id"]
        assert "running" not in assert_problem(c.get(batch["urls"]["result"]), 409)["detail"]
        assert_problem(c.get(batch["urls"]["archive"]), 409)
    with client(api, KEY_B) as b:
        assert_problem(b.get(f"/v1/jobs/{batch['id']}"), 404)
        assert_problem(b.get("/v1/jobs", params={"parent": batch["id"]}), 404)


@pytest.mark.parametrize(
    "items, words",
    [
        ([item(0), item(1), item(2, seconds=0)], "items[2].seconds:"),
        ([item(0), item(1, reference_image="0" * 32)], "items[1].reference_image: no upload"),
        ([item(0), {"kind": "generate"}], "items[1]: nothing to generate"),
        ([item(0), item(1), item(2), {"kind": "evaluate", "job": "0" * 32}], "items[3].job: no job"),
        ([{"kind": "batch", "items": [item(0)]}], "items[0]: Input tag 'batch'"),
        ([], "items:"),
        ([item(i) for i in range(1001)], "at most 1000"),
    ],
)
def test_a_bad_item_is_a_422_naming_its_index_and_nothing_is_queued(api, items, words):
    with client(api, KEY_B) as c:
        before = c.get("/v1/jobs").json()["jobs"]
        assert words in assert_problem(submit_batch(c, items), 422)["detail"]
        assert c.get("/v1/jobs").json()["jobs"] == before


def test_an_idempotent_batch_is_created_once(api):
    with client(api) as c:
        items = [item(7), item(8)]
        first = submit_batch(c, items, headers={"Idempotency-Key": "batch-1"})
        again = submit_batch(c, items, headers={"Idempotency-Key": "batch-1"})
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert c.get(f"/v1/jobs/{first.json()['id']}").json()["children"]["total"] == 2
        other = submit_batch(c, items[:1], headers={"Idempotency-Key": "batch-1"})
        assert "idempotency key" in assert_problem(other, 422)["detail"]


def test_evaluate_needs_exactly_one_of_upload_and_job_and_the_job_must_be_the_callers_finished_generate(api):
    with client(api) as a, client(api, KEY_B) as b:
        queued = a.post("/v1/jobs", json=item(0)).json()["id"]
        for body, words in [
            ({"kind": "evaluate"}, "exactly one of upload"),
            ({"kind": "evaluate", "upload": "0" * 32, "job": queued}, "exactly one of upload"),
            ({"kind": "evaluate", "job": queued}, f"job: job {queued} is queued; evaluate it once it has succeeded"),
            ({"kind": "evaluate", "job": "0" * 32}, "job: no job"),
            ({"kind": "evaluate", "job": "not-an-id"}, "job:"),
        ]:
            assert words in assert_problem(a.post("/v1/jobs", json=body), 422)["detail"]
        assert "no job" in assert_problem(b.post("/v1/jobs", json={"kind": "evaluate", "job": queued}), 422)["detail"]


def test_cancel_a_queued_batch_and_a_child_alone(api):
    with client(api) as c:
        alone = submit_batch(c, [item(0), item(1)]).json()
        first, second = (j["id"] for j in c.get("/v1/jobs", params={"parent": alone["id"]}).json()["jobs"])
        assert c.post(f"/v1/jobs/{first}/cancel").json()["status"] == "canceled"
        assert c.get(alone["urls"]["self"]).json()["children"]["canceled"] == 1
        assert c.get(alone["urls"]["self"]).json()["status"] == "queued"  # the other child still waits

        batch = submit_batch(c, [item(2), item(3), item(4)]).json()
        r = c.post(batch["urls"]["cancel"])
        assert r.status_code == 200 and r.json()["status"] == "canceled"
        assert r.json()["children"] == {**dict.fromkeys(STATUSES, 0), "canceled": 3, "total": 3}
        events = parse_sse(c.get(batch["urls"]["events"]).text)  # the stream closes after the final event
        assert [e["event"] for e in events] == ["queued", "cancel-requested", "progress", "canceled"]
        manifest = c.get(batch["urls"]["result"]).json()  # a finished batch has its manifest, whatever its end
        assert [i["status"] for i in manifest["items"]] == ["canceled"] * 3
        assert manifest["summary"]["scored"] == 0 and manifest["summary"]["metrics"]["sync_confidence"]["n"] == 0


# --- batches that run: the worker played on the same SQLite file ---


def row(confidence: float, offset: int, flicker: float) -> dict:
    """The scores a worker attaches: an `avgen eval` row (the summary's metrics)."""
    return {"path": "result.mp4", "backend": "learned", "sync_confidence": confidence, "av_offset_frames": offset,
            "temporal_flickering": flicker, "error": None}  # fmt: skip


def test_a_finished_batch_has_a_manifest_with_the_eval_summary_a_zip_and_its_items_can_be_evaluated(
    tmp_path, mp4_bytes
):
    clock = Clock()
    with serve(tmp_path) as server, client(server) as c, JobStore(server["data"] / "jobs.sqlite3", clock) as store:
        batch = submit_batch(c, [item(0), item(1), item(2)]).json()
        leases = [store.lease("test-worker", 600) for _ in range(3)]
        assert [j.parent for j in leases] == [batch["id"]] * 3 and store.lease("test-worker", 600) is None
        waiting = [c.post("/v1/jobs", json=item(9 + i), headers=auth(KEY_B)).json() for i in range(3)]
        assert c.get(waiting[2]["urls"]["self"], headers=auth(KEY_B)).json()["estimated_start_at"] is None
        view = c.get(batch["urls"]["self"]).json()
        assert view["status"] == "running" and view["children"]["running"] == 3
        assert_problem(c.get(batch["urls"]["archive"]), 409)

        files = Artifacts(server["data"])
        clock.now += 30  # each child ran 30 s
        for lease, scores in zip(leases[:2], [row(2.0, 1, 0.01), row(4.0, -1, 0.03)]):
            files.save_result(lease.id, mp4_bytes, "video/mp4")
            result = {"media_type": "video/mp4", "metadata": {}, "scores": scores}
            assert store.finish(lease.id, lease.lease_token, "succeeded", result=result)
        assert c.get(batch["urls"]["self"]).json()["status"] == "running"
        store.finish(leases[2].id, leases[2].lease_token, "failed", error={"type": "internal", "detail": "boom"})

        done = c.get(batch["urls"]["self"]).json()
        assert done["status"] == "succeeded" and done["progress"] == 1.0
        assert done["children"] == {**dict.fromkeys(STATUSES, 0), "succeeded": 2, "failed": 1, "total": 3}
        events = parse_sse(c.get(batch["urls"]["events"]).text)
        assert [e["event"] for e in events] == ["queued", "started", "progress", "progress", "progress", "succeeded"]

        r = c.get(batch["urls"]["result"])
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        manifest = r.json()
        assert [(i["index"], i["id"], i["status"]) for i in manifest["items"]] == [
            (0, leases[0].id, "succeeded"), (1, leases[1].id, "succeeded"), (2, leases[2].id, "failed")
        ]  # fmt: skip
        assert manifest["items"][0]["result_url"] == f"/v1/jobs/{leases[0].id}/result"
        assert manifest["items"][2]["result_url"] is None and manifest["items"][2]["error"]["detail"] == "boom"
        assert manifest["items"][1]["scores"]["sync_confidence"] == 4.0
        summary = manifest["summary"]
        assert (summary["items"], summary["scored"], summary["counts"]["failed"]) == (3, 2, 1)
        t = stats.t.ppf(0.975, 1)  # two values: mean ± t(0.975, 1 dof) × their standard error
        assert summary["metrics"]["sync_confidence"] == {"mean": 3.0, "ci95": pytest.approx(t * 1.0), "n": 2}
        assert summary["metrics"]["av_offset_frames"] == {"mean": 0.0, "ci95": pytest.approx(t * 1.0), "n": 2}
        assert summary["metrics"]["temporal_flickering"]["mean"] == pytest.approx(0.02)
        assert summary["metrics"]["warping_error"] == {"mean": None, "ci95": None, "n": 0}

        archive = c.get(batch["urls"]["archive"])
        assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            names = sorted(z.namelist())
            assert names == sorted([f"0000-{leases[0].id}.mp4", f"0001-{leases[1].id}.mp4", "manifest.json"])
            assert z.read(names[0]) == mp4_bytes and json.loads(z.read("manifest.json")) == manifest
        again = c.get(batch["urls"]["archive"])  # built once, then served as a file: same ETag, Range works
        assert again.headers["etag"] == archive.headers["etag"] and again.content == archive.content
        assert c.get(batch["urls"]["archive"], headers={"Range": "bytes=0-3"}).content == b"PK\x03\x04"
        assert_problem(c.get(f"/v1/jobs/{leases[0].id}/archive"), 404)  # only a batch has one
        assert c.get(manifest["items"][0]["result_url"]).content == mp4_bytes

        # the start estimate: now + position / workers (1 without a pool) × the mean run time (30 s)
        before = time.time()
        estimate = c.get(waiting[2]["urls"]["self"], headers=auth(KEY_B)).json()
        after = time.time()
        assert estimate["queue_position"] == 2
        assert before + 2 * 30 <= estimate["estimated_start_at"] <= after + 2 * 30

        # an item's MP4 is a job's result: it can be evaluated; a failed item or the batch itself cannot
        ok = c.post("/v1/jobs", json={"kind": "evaluate", "job": leases[0].id, "backend": "landmarks"})
        assert ok.status_code == 202, ok.text
        assert ok.json()["id"] != leases[0].id
        failed = c.post("/v1/jobs", json={"kind": "evaluate", "job": leases[2].id})
        assert "is failed" in assert_problem(failed, 422)["detail"]
        whole = c.post("/v1/jobs", json={"kind": "evaluate", "job": batch["id"]})
        assert "is a batch job" in assert_problem(whole, 422)["detail"]
        second = c.post("/v1/jobs", json={"kind": "evaluate", "job": ok.json()["id"]})
        assert "is an evaluate job" in assert_problem(second, 422)["detail"]

        # once retention expired the batch, its archive is gone (410), not rebuilt from nothing
        assert store.expire_jobs([batch["id"]], "retention") == [batch["id"]]
        assert "expired" in assert_problem(c.get(batch["urls"]["archive"]), 410)["detail"]


def test_cancel_a_running_batch_ends_canceled_once_its_running_child_stopped(tmp_path):
    with serve(tmp_path) as server, client(server) as c, JobStore(server["data"] / "jobs.sqlite3") as store:
        batch = submit_batch(c, [item(0), item(1), item(2)]).json()
        running = store.lease("test-worker", 600)
        r = c.post(batch["urls"]["cancel"])
        assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["cancel_requested"]
        assert r.json()["children"] == {**dict.fromkeys(STATUSES, 0), "running": 1, "canceled": 2, "total": 3}
        assert c.get(f"/v1/jobs/{running.id}").json()["cancel_requested"]  # what the pool forwards to the worker
        assert_problem(c.get(batch["urls"]["result"]), 409)
        assert store.finish(running.id, running.lease_token, "canceled")  # the worker confirms it stopped
        done = c.get(batch["urls"]["self"]).json()
        assert done["status"] == "canceled" and done["children"]["canceled"] == 3
        events = [e["event"] for e in parse_sse(c.get(batch["urls"]["events"]).text)]
        assert events == ["queued", "started", "cancel-requested", "progress", "progress", "canceled"]
        assert "already canceled" not in c.post(batch["urls"]["cancel"]).text  # twice: a no-op, 200
        with zipfile.ZipFile(io.BytesIO(c.get(batch["urls"]["archive"]).content)) as z:
            assert z.namelist() == ["manifest.json"]  # no item succeeded: the manifest alone


def test_a_retry_gets_its_original_job_past_the_quotas_and_a_batch_counts_once_per_key_but_whole_in_the_queue(
    tmp_path,
):
    with serve(tmp_path, AVGEN_MAX_QUEUED_PER_KEY="2", AVGEN_MAX_QUEUE="6") as server, client(server) as a:
        single = a.post("/v1/jobs", json=item(0), headers={"Idempotency-Key": "one"})
        batch = submit_batch(a, [item(1), item(2), item(3)], headers={"Idempotency-Key": "many"})
        assert single.status_code == batch.status_code == 202  # a batch of 3 counts once: 2 jobs for this key
        over = a.post("/v1/jobs", json=item(4))
        assert "2 jobs" in assert_problem(over, 429)["detail"] and int(over.headers["retry-after"]) > 0
        with client(server, KEY_B) as b:
            full = submit_batch(b, [item(i) for i in range(3)])  # 4 queued + 3 > 6: refused whole
            assert "queue is full" in assert_problem(full, 429)["detail"] and full.headers["retry-after"]
            assert submit_batch(b, [item(i) for i in range(2)]).status_code == 202  # 4 + 2 = 6: fits
            assert "queue is full" in assert_problem(b.post("/v1/jobs", json=item(5)), 429)["detail"]
            too_big = submit_batch(b, [item(i) for i in range(7)])
            assert "split the batch" in assert_problem(too_big, 422)["detail"]
        for body, key, original in [(item(0), "one", single), ({"kind": "batch", "items": [item(1), item(2), item(3)]},
                                                                 "many", batch)]:  # fmt: skip
            again = a.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})  # at the key's cap, queue full
            assert again.status_code == 202, again.text
            assert again.json()["id"] == original.json()["id"] and again.headers["idempotent-replayed"] == "true"
        other = a.post("/v1/jobs", json=item(99), headers={"Idempotency-Key": "one"})
        assert "idempotency key" in assert_problem(other, 422)["detail"]
        with JobStore(server["data"] / "jobs.sqlite3") as store:
            assert store.queued_work() == 6 and store.active_top_level(owner_of_key(KEY_A)) == 2
