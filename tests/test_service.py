"""The whole service: a real `avgen serve` process with its Ray worker pool, real HTTP, a real SQLite
file, the small model, a job from submission to the decoded MP4."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
import zipfile

import httpx
import pytest
from test_api import client, scrape, serve

from avgen.media import read_mp4


def sse_events(c: httpx.Client, url: str, timeout: float = 240) -> list[dict]:
    """Every event of a job's stream until the server closes it after the final event."""
    events, current = [], {}
    with c.stream("GET", url, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(":")
                current[key] = value.strip()
            elif not line and current:
                events.append({"id": int(current["id"]), "type": current["event"], "data": json.loads(current["data"])})
                current = {}
    return events


@pytest.fixture(scope="module")
def service(tmp_path_factory, small_checkpoint):
    root = tmp_path_factory.mktemp("service")
    weights = root / "weights"
    weights.mkdir()
    shutil.copy(small_checkpoint, weights / "tiny.safetensors")
    with serve(root, workers="1", AVGEN_WEIGHTS_DIR=str(weights)) as running:
        deadline = time.monotonic() + 240
        while httpx.get(f"{running['url']}/readyz", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                pytest.fail(f"the worker pool never became ready: {(root / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield running


def test_a_generate_job_runs_on_the_ray_pool_and_its_mp4_downloads(service, tmp_path):
    with client(service) as c:
        r = c.post(
            "/v1/jobs", json={"kind": "generate", "text": "Hello there", "seconds": 1.2, "seed": 3, "score": False}
        )
        assert r.status_code == 202, r.text
        job = r.json()
        events = sse_events(c, job["urls"]["events"])
        types = [e["type"] for e in events]
        assert types[0] == "queued" and "started" in types and types[-1] == "succeeded", types
        assert [e["id"] for e in events] == sorted({e["id"] for e in events})  # unique, increasing
        fractions = [e["data"]["fraction"] for e in events if e["type"] == "progress"]
        assert fractions and fractions == sorted(fractions)
        done = c.get(job["urls"]["self"]).json()
        assert done["status"] == "succeeded" and done["attempts"] == 1
        result = c.get(job["urls"]["result"])
        assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
        (tmp_path / "result.mp4").write_bytes(result.content)
        clip = read_mp4(tmp_path / "result.mp4")
        assert len(clip.frames) == 30 and len(clip.audio) == 30 * 640
        assert clip.metadata["avgen_seed"] == "3"


def test_a_running_job_is_canceled_and_leaves_no_result(service):
    with client(service) as c:
        job = c.post(
            "/v1/jobs", json={"kind": "generate", "text": "A longer one", "seconds": 20, "score": False}
        ).json()
        deadline = time.monotonic() + 120
        while c.get(job["urls"]["self"]).json()["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        workers = {}  # /metrics: the pool's one actor is busy (the slot takes the job just after the store lease)
        while workers.get("busy") != 1:
            assert time.monotonic() < deadline, workers
            metrics, _ = scrape(service["url"])
            workers = {s: metrics[("avgen_workers", (("state", s),))] for s in ("loading", "idle", "busy", "dead")}
        assert workers == {"loading": 0, "idle": 0, "busy": 1, "dead": 0}
        assert metrics[("avgen_worker_busy_ratio", ())] == 1.0
        assert c.post(job["urls"]["cancel"]).status_code in (200, 202)
        events = sse_events(c, job["urls"]["events"])
        assert events[-1]["type"] == "canceled", [e["type"] for e in events]
        assert c.get(job["urls"]["self"]).json()["status"] == "canceled"
        assert c.get(job["urls"]["result"]).status_code == 409


def session_processes(sid: int) -> list[str]:
    """The live processes of a session, from /proc: a serve started with start_new_session leads its own, Ray's too."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _, _, session = f.read().rsplit(")", 1)[1].split()[:4]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:  # ended meanwhile
            continue
        if session == str(sid) and state != "Z":
            alive.append(f"{pid} {command}")
    return alive


def test_sigterm_finishes_or_gives_back_the_running_job_leaves_no_process_and_a_restart_finishes_it_once(
    tmp_path, small_checkpoint
):
    from api.store import JobStore

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(small_checkpoint, weights / "tiny.safetensors")
    env = {"AVGEN_WEIGHTS_DIR": str(weights)}
    with serve(tmp_path, workers="1", **env) as first, client(first) as c:
        job = c.post("/v1/jobs", json={"kind": "generate", "text": "Stop and go", "seconds": 4, "score": False}).json()
        deadline = time.monotonic() + 240
        while c.get(job["urls"]["self"]).json()["progress"] <= 0:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        os.killpg(first["proc"].pid, signal.SIGTERM)  # the whole group, as Ctrl-C or systemd would: Ray's too
        code = first["proc"].wait(30 + 60)  # the pool's grace (30 s unless --grace-seconds) and Ray's shutdown
    log = (tmp_path / "serve.log").read_text()
    assert code == 128 + signal.SIGTERM and "Traceback" not in log, log[-3000:]  # as without a pool
    deadline = time.monotonic() + 30
    while left := session_processes(first["proc"].pid):
        assert time.monotonic() < deadline, f"serve left processes behind: {left}"
        time.sleep(0.5)
    with JobStore(first["data"] / "jobs.sqlite3") as store:
        after = store.job(job["id"])
        last = store.events_after(job["id"])[-1]
    if after.status == "queued":  # given back: the grace ran out, or the group's SIGTERM ended its actor first
        assert (last.type, after.lease_token) == ("queued", None)
        assert last.data.get("reason") in ("shutdown", "worker-died"), last.data
    else:
        assert (after.status, last.type) == ("succeeded", "succeeded")  # finished within the grace

    with serve(tmp_path, workers="1", **env) as second, client(second) as c:
        deadline = time.monotonic() + 240
        while c.get(job["urls"]["self"]).json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "the job never finished"
            time.sleep(0.5)
        finals = [e["type"] for e in sse_events(c, job["urls"]["events"]) if e["type"] in ("succeeded", "failed")]
        assert finals == ["succeeded"] and c.get(job["urls"]["result"]).status_code == 200


def test_a_killed_server_restarted_on_its_data_finishes_every_job_exactly_once(tmp_path, small_checkpoint):
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(small_checkpoint, weights / "tiny.safetensors")
    env = {"AVGEN_WEIGHTS_DIR": str(weights), "AVGEN_LEASE_SECONDS": "4"}
    body = {"kind": "generate", "text": "Again and again", "seconds": 4, "score": False}
    with serve(tmp_path, workers="1", **env) as first, client(first) as c:
        ids = [c.post("/v1/jobs", json={**body, "seed": i}).json()["id"] for i in range(3)]
        deadline = time.monotonic() + 240
        while not any(c.get(f"/v1/jobs/{i}").json()["status"] == "running" for i in ids):
            assert time.monotonic() < deadline, "no job ever started"
            time.sleep(0.2)
        os.killpg(first["proc"].pid, signal.SIGKILL)  # the whole server, mid-job, no chance to clean up
        first["proc"].wait()
    with serve(tmp_path, workers="1", **env) as second, client(second) as c:
        deadline = time.monotonic() + 300
        while not all(c.get(f"/v1/jobs/{i}").json()["status"] == "succeeded" for i in ids):
            assert time.monotonic() < deadline, [c.get(f"/v1/jobs/{i}").json()["status"] for i in ids]
            time.sleep(0.5)
        for i in ids:
            finals = [
                e for e in sse_events(c, f"/v1/jobs/{i}/events") if e["type"] in ("succeeded", "failed", "canceled")
            ]
            assert [e["type"] for e in finals] == ["succeeded"], i
            assert c.get(f"/v1/jobs/{i}/result").status_code == 200
        assert max(c.get(f"/v1/jobs/{i}").json()["attempts"] for i in ids) == 2  # the one killed mid-job ran again


def test_a_batch_runs_its_items_on_the_pool_and_its_manifest_and_zip_hold_their_scored_mp4s(service, tmp_path):
    items = [{"kind": "generate", "text": "Hi there", "seconds": 1.2, "seed": seed, "steps": 2} for seed in (1, 2)]
    with client(service) as c:
        r = c.post("/v1/jobs", json={"kind": "batch", "items": items})
        assert r.status_code == 202, r.text
        batch = r.json()
        events = sse_events(c, batch["urls"]["events"])
        types = [e["type"] for e in events]
        assert types[:2] == ["queued", "started"] and types[-1] == "succeeded", types
        assert [e["data"]["fraction"] for e in events if e["type"] == "progress"] == [0.5, 1.0]
        manifest = c.get(batch["urls"]["result"]).json()
        assert [i["status"] for i in manifest["items"]] == ["succeeded", "succeeded"]
        flicker = [i["scores"]["temporal_flickering"] for i in manifest["items"]]  # scored: score defaults to true
        assert None not in flicker
        summary = manifest["summary"]["metrics"]["temporal_flickering"]
        assert summary["n"] == 2 and summary["mean"] == pytest.approx(sum(flicker) / 2)
        archive = c.get(batch["urls"]["archive"])
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            for index, item in enumerate(manifest["items"]):
                path = tmp_path / f"{index}.mp4"
                path.write_bytes(z.read(f"{index:04d}-{item['id']}.mp4"))
                clip = read_mp4(path)
                assert len(clip.frames) == 30 and clip.metadata["avgen_seed"] == str(items[index]["seed"])
