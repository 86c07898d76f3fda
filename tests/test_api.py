"""The HTTP API through a real `avgen serve --workers 0` process: real SQLite file, real HTTP, no worker pool
(jobs stay queued; a test leases and finishes one by hand, as the pool would)."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from api.deps import owner_of_key

KEY_A, KEY_B, KEY_C = "a" * 16 + "-key-one", "b" * 16 + "-key-two", "c" * 16 + "-key-three"
UPLOAD_CAP = 300_000
PROBLEM = "application/problem+json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(root: Path, workers: str = "0", args: tuple[str, ...] = (), **env_extra):
    """A real `avgen serve` on a free loopback port in its own process group, data in root/data, keys A, B, C;
    `args`: more command-line flags."""
    keys = root / "keys.txt"
    keys.write_text(f"# test keys\n{KEY_A}\n{KEY_B}\n{KEY_C}\n")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), **env_extra}
    env.pop("AVGEN_API_KEYS", None)
    log = open(root / "serve.log", "w")  # noqa: SIM115 - closed below
    cmd = [
        sys.executable,
        "-m",
        "avgen",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(root / "data"),
        "--workers",
        workers,
    ]
    cmd += ["--api-keys-file", str(keys), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"avgen serve did not start: {(root / 'serve.log').read_text()}")
            time.sleep(0.2)
        yield {"url": url, "root": root, "data": root / "data", "proc": proc}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("serve"), AVGEN_MAX_UPLOAD_BYTES=str(UPLOAD_CAP)) as running:
        yield running


def client(server, key=KEY_A) -> httpx.Client:
    return httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {key}"}, timeout=20)


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["detail"]
    return body


# --- media ---


def png_bytes(size=(64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A valid PNG start (IHDR, a small IDAT, IEND) whose header says width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


def wav_bytes() -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, 0.1 * np.sin(np.arange(16000) * 0.05).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def mp4_bytes(tmp_path_factory) -> bytes:
    from avgen.media import write_mp4

    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    frames = np.random.default_rng(1).integers(0, 255, (25, 64, 64, 3), dtype=np.uint8)
    write_mp4(path, frames, np.zeros(16000, dtype=np.float32))
    return path.read_bytes()


def upload(c: httpx.Client, data: bytes, name="file.bin") -> httpx.Response:
    return c.post("/v1/uploads", files={"file": (name, data, "application/octet-stream")})


# --- jobs ---


def test_submit_answers_202_with_location_and_the_job_is_readable(server):
    with client(server) as c:
        r = c.post("/v1/jobs", json={"kind": "generate", "text": "hello there", "seconds": 2, "steps": 4})
        assert r.status_code == 202, r.text
        body = r.json()
        assert r.headers["location"] == f"/v1/jobs/{body['id']}" == body["urls"]["self"]
        assert body["status"] == "queued"
        job = c.get(r.headers["location"]).json()
        assert job["status"] == "queued" and job["kind"] == "generate" and job["queue_position"] is not None
        assert job["spec"]["text"] == "hello there" and job["spec"]["steps"] == 4
        assert_problem(c.get(f"{body['urls']['result']}"), 409)  # not finished: no result yet


def test_idempotency_key_same_body_same_job_other_body_422_and_parallel_creates_one_job(server):
    body = {"kind": "generate", "text": "same request", "seconds": 1}
    with client(server) as c:
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        other = c.post("/v1/jobs", json={**body, "seed": 7}, headers={"Idempotency-Key": "k-1"})
        assert "idempotency key" in assert_problem(other, 422)["detail"]
        empty = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": ""})  # not a key: refused, not shared
        assert "idempotency-key" in assert_problem(empty, 422)["detail"].lower()

    def create(_):
        with client(server) as c:
            r = c.post("/v1/jobs", json={**body, "seed": 3}, headers={"Idempotency-Key": "k-parallel"})
            assert r.status_code == 202, r.text
            return r.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(create, range(8)))
    assert len(ids) == 1


@pytest.mark.parametrize(
    "body, words",
    [
        ({"kind": "generate", "text": "hi", "seconds": 0}, "seconds"),
        ({"kind": "generate", "text": "hi", "seconds": 601}, "seconds"),
        ({"kind": "generate", "text": "hi", "steps": 0}, "steps"),
        ({"kind": "generate", "text": "hi", "cfg": 31}, "cfg"),
        ({"kind": "generate", "text": "hi", "sampler": "ddim"}, "sampler"),
        ({"kind": "generate", "text": "hi", "colour": "red"}, "colour"),
        ({"kind": "generate"}, "nothing to generate"),
        ({"kind": "generate", "text": "x" * 20001}, "text"),
        ({"kind": "generate", "text": "hi", "reference_image": "0" * 32}, "no upload"),
        ({"kind": "paint"}, "kind"),
        ({"kind": "evaluate"}, "upload"),
        ({"kind": "evaluate", "upload": "0" * 32, "backend": "guess"}, "backend"),
        ([1, 2], "dictionary"),
    ],
)
def test_bad_job_bodies_are_422_problems_saying_what(server, body, words):
    with client(server) as c:
        assert words in assert_problem(c.post("/v1/jobs", json=body), 422)["detail"]


def test_text_the_model_cannot_fit_in_600_s_is_refused_at_submit(server):
    with client(server) as c:
        r = c.post("/v1/jobs", json={"kind": "generate", "text": "hello world " * 1600})
        assert "maximum is 600" in assert_problem(r, 422)["detail"]


def test_not_json_and_too_large_bodies_are_problems_not_500(server):
    with client(server) as c:
        r = c.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
        assert_problem(r, 422)
        assert_problem(c.post("/v1/jobs", json={"kind": "generate", "text": "x" * 2_000_000}), 413)
        assert_problem(c.get("/v1/nothing-here"), 404)
        assert_problem(c.delete("/v1/jobs"), 405)
        assert_problem(c.get("/v1/jobs", params={"cursor": "garbage"}), 422)
        assert_problem(c.get("/v1/jobs", params={"status": "sleeping"}), 422)


def test_auth_missing_or_invalid_key_401_and_other_keys_jobs_are_404(server):
    with httpx.Client(base_url=server["url"], timeout=20) as anonymous:
        assert_problem(anonymous.get("/v1/jobs"), 401)
        bad = anonymous.get("/v1/jobs", headers={"Authorization": f"Bearer {KEY_A}x"})
        assert_problem(bad, 401)
        assert_problem(anonymous.get("/v1/jobs", headers={"Authorization": f"Basic {KEY_A}"}), 401)
    with client(server, KEY_A) as a, client(server, KEY_B) as b:
        job_id = a.post("/v1/jobs", json={"kind": "generate", "text": "mine"}).json()["id"]
        upload_id = upload(a, png_bytes()).json()["id"]
        assert_problem(b.get(f"/v1/jobs/{job_id}"), 404)
        assert_problem(b.post(f"/v1/jobs/{job_id}/cancel"), 404)
        assert_problem(b.get(f"/v1/jobs/{job_id}/events"), 404)
        assert_problem(b.get(f"/v1/uploads/{upload_id}"), 404)
        assert job_id not in [j["id"] for j in b.get("/v1/jobs").json()["jobs"]]
        r = b.post("/v1/jobs", json={"kind": "generate", "text": "hi", "reference_image": upload_id})
        assert "no upload" in assert_problem(r, 422)["detail"]
        assert a.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


def test_cancel_a_queued_job_twice_and_follow_its_events(server):
    with client(server) as c:
        job = c.post("/v1/jobs", json={"kind": "generate", "text": "cancel me"}).json()
        first = c.post(job["urls"]["cancel"])
        assert first.status_code == 200 and first.json()["status"] == "canceled"
        second = c.post(job["urls"]["cancel"])
        assert second.status_code == 200 and second.json()["status"] == "canceled"
        assert "canceled" in assert_problem(c.get(job["urls"]["result"]), 409)["detail"]

        r = c.get(job["urls"]["events"])  # the job is finished: the stream closes after its final event
        assert r.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(r.text)
        assert [e["event"] for e in events] == ["queued", "canceled"]  # the second cancel added nothing
        assert int(events[0]["id"]) < int(events[1]["id"])
        resumed = parse_sse(c.get(job["urls"]["events"], headers={"Last-Event-ID": events[0]["id"]}).text)
        assert [(e["id"], e["event"]) for e in resumed] == [(events[1]["id"], "canceled")]
        assert_problem(c.get(job["urls"]["events"], headers={"Last-Event-ID": "x"}), 400)


def test_events_stream_live_until_the_final_event(server):
    with client(server) as c:
        job = c.post("/v1/jobs", json={"kind": "generate", "text": "watch me"}).json()
        seen = []
        # a read timeout under the 15 s keep-alive: a stream that does not close fails the test instead of hanging
        with c.stream("GET", job["urls"]["events"], timeout=httpx.Timeout(20, read=5)) as stream:
            for line in stream.iter_lines():  # ends only when the server closes the stream
                if line.startswith("event: "):
                    seen.append(line.removeprefix("event: "))
                    if seen == ["queued"]:
                        assert c.post(job["urls"]["cancel"]).status_code == 200  # while the stream is open
        assert seen == ["queued", "canceled"]


def parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            events.append(fields)
    return events


def test_list_pages_with_cursor_newest_first_and_filters(server):
    with client(server, KEY_C) as c:
        made = [c.post("/v1/jobs", json={"kind": "generate", "text": f"job {i}"}).json()["id"] for i in range(5)]
        c.post(f"/v1/jobs/{made[0]}/cancel")
        seen, cursor, pages = [], None, 0
        while True:
            page = c.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [j["id"] for j in page["jobs"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == made[::-1] and pages == 3
        canceled = c.get("/v1/jobs", params={"status": "canceled"}).json()["jobs"]
        assert [j["id"] for j in canceled] == [made[0]]
        assert c.get("/v1/jobs", params={"kind": "evaluate"}).json()["jobs"] == []


# --- uploads ---


def test_real_png_wav_mp4_are_accepted_with_their_kind_judged_from_content(server, mp4_bytes):
    with client(server) as c:
        for data, name, kind in [
            (png_bytes(), "a.mp4", "image"),
            (wav_bytes(), "b.png", "audio"),
            (mp4_bytes, "c.wav", "video"),
        ]:
            r = upload(c, data, name)
            assert r.status_code == 201, r.text
            assert r.json()["kind"] == kind and r.json()["bytes"] == len(data)
            assert c.get(f"/v1/uploads/{r.json()['id']}").json()["kind"] == kind
        image, audio, video = (upload(c, d).json()["id"] for d in (png_bytes(), wav_bytes(), mp4_bytes))
        ok = c.post("/v1/jobs", json={"kind": "generate", "text": "hi", "reference_image": image, "audio": video})
        assert ok.status_code == 202, ok.text
        assert c.post("/v1/jobs", json={"kind": "evaluate", "upload": video, "backend": "landmarks"}).status_code == 202
        wrong = c.post("/v1/jobs", json={"kind": "generate", "text": "hi", "reference_image": audio})
        assert "is audio, not image" in assert_problem(wrong, 422)["detail"]
        assert (
            "not video" in assert_problem(c.post("/v1/jobs", json={"kind": "evaluate", "upload": image}), 422)["detail"]
        )


def test_bad_uploads_are_clear_4xx_and_write_nothing_outside_the_data_dir(server, mp4_bytes):
    outside_before = sorted(p for p in server["root"].rglob("*") if server["data"] not in p.parents)
    uploads = server["data"] / "uploads"
    stored_before = sorted(uploads.rglob("*"))
    with client(server) as c:
        assert "empty" in assert_problem(upload(c, b""), 422)["detail"]
        assert_problem(upload(c, mp4_bytes[: len(mp4_bytes) // 3]), 415)  # truncated: no moov box
        assert_problem(upload(c, b"just some text, not a video\n" * 20, "clip.mp4"), 415)
        for side in (9000, 20000):  # under and over Pillow's own decompression-bomb limit
            assert "8192 pixels" in assert_problem(upload(c, png_header_claiming(side, side)), 422)["detail"]
        assert_problem(upload(c, png_bytes()[:200]), 422)  # a PNG cut short
        assert "larger than" in assert_problem(upload(c, b"\0" * (UPLOAD_CAP + 100_000)), 413)["detail"]
        assert_problem(c.post("/v1/uploads", content=png_bytes(), headers={"content-type": "image/png"}), 415)
        assert_problem(c.post("/v1/uploads", files={"other": ("a.png", png_bytes())}), 422)
        assert sorted(uploads.rglob("*")) == stored_before
        for name in ("../../escape.png", "a\0b.png", "/etc/passwd"):
            r = upload(c, png_bytes(), name)
            assert r.status_code in (201, 400), r.text
    outside_after = sorted(p for p in server["root"].rglob("*") if server["data"] not in p.parents)
    assert outside_after == outside_before
    assert not list(server["root"].parent.rglob("escape.png"))


# --- health and the command ---


def test_healthz_and_readyz(server):
    assert httpx.get(f"{server['url']}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server['url']}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["store"] == "ok"


def scrape(url: str) -> tuple[dict, str]:
    """GET /metrics without a key: {(sample name, sorted label pairs): value} and the text."""
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    families = text_string_to_metric_families(r.text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}, r.text


def test_metrics_agree_with_the_store_and_name_no_owner_or_job(server):
    from api.store import JobStore
    from workers.jobs import Status

    before, _ = scrape(server["url"])
    with client(server, KEY_C) as c:
        ids = [c.post("/v1/jobs", json={"kind": "generate", "text": f"metric {i}"}).json()["id"] for i in range(3)]
        assert c.post(f"/v1/jobs/{ids[0]}/cancel").status_code == 200
    after, text = scrape(server["url"])

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0)

    assert delta("avgen_queue_depth") == 2
    assert delta("avgen_jobs", kind="generate", status="queued") == 2
    assert delta("avgen_jobs", kind="generate", status="canceled") == 1
    with JobStore(server["data"] / "jobs.sqlite3") as store:
        counts = store.counts()
    assert after[("avgen_queue_depth", ())] == counts[Status.QUEUED]
    for status in Status:
        assert (
            sum(v for (n, labels), v in after.items() if n == "avgen_jobs" and ("status", status) in labels)
            == (counts[status])
        )
    assert [after[("avgen_workers", (("state", s),))] for s in ("loading", "idle", "busy", "dead")] == [0] * 4
    assert after[("avgen_worker_busy_ratio", ())] == 0  # --workers 0: no pool
    for area in ("uploads", "results"):
        stored = sum(p.stat().st_size for p in (server["data"] / area).rglob("*") if p.is_file())
        assert after[("avgen_disk_bytes", (("area", area),))] == stored
    assert after[("avgen_retention_seconds", ())] == 7 * 86400 and ("avgen_disk_limit_bytes", ()) not in after
    owners = [owner_of_key(k).removeprefix("key:") for k in (KEY_A, KEY_B, KEY_C)]
    assert not [word for word in [*ids, *owners, KEY_C] if word in text]


def test_an_expired_result_is_410_and_the_sweeper_deleted_its_files(tmp_path, mp4_bytes):
    """--retention 2s: the server's own sweeper expires a job that finished (by hand, as the pool does, on the
    same SQLite file) 58 s ago, deletes its result and, 2 s on, the upload."""
    from api.artifacts import Artifacts
    from api.store import JobStore

    with serve(tmp_path, args=("--retention", "2s", "--max-disk", "1G")) as server, client(server) as c:
        upload_id = upload(c, png_bytes(), "face.png").json()["id"]
        job = c.post("/v1/jobs", json={"kind": "generate", "text": "gone soon"}).json()
        now = [time.time() - 100]
        with JobStore(server["data"] / "jobs.sqlite3", clock=lambda: now[0]) as store:
            leased = store.lease("test-worker", 1000)
            Artifacts(server["data"]).save_result(job["id"], mp4_bytes, "video/mp4")
            now[0] += 42  # it ran for 42 s
            assert store.finish(job["id"], leased.lease_token, "succeeded", result={"media_type": "video/mp4"})

        deadline = time.monotonic() + 30
        while c.get(job["urls"]["self"]).json()["status"] != "expired" or c.get(f"/v1/uploads/{upload_id}").is_success:
            assert time.monotonic() < deadline, (server["root"] / "serve.log").read_text()
            time.sleep(0.2)
        gone = assert_problem(c.get(job["urls"]["result"]), 410)
        assert "has expired (results are kept for 2 seconds after their job finishes" in gone["detail"]
        assert [e["event"] for e in parse_sse(c.get(job["urls"]["events"]).text)][-2:] == ["succeeded", "expired"]
        assert c.post(job["urls"]["cancel"]).status_code == 409
        assert not list((server["data"] / "results").iterdir())
        assert not [p for p in (server["data"] / "uploads").rglob("*") if p.is_file()]

        metrics, _ = scrape(server["url"])
        assert metrics[("avgen_retention_seconds", ())] == 2 and metrics[("avgen_disk_limit_bytes", ())] == 1 << 30
        assert metrics[("avgen_jobs", (("kind", "generate"), ("status", "expired")))] == 1
        ran = (("kind", "generate"), ("status", "succeeded"))  # how it finished, though expired now
        assert metrics[("avgen_job_duration_seconds_count", ran)] == 1
        assert metrics[("avgen_job_duration_seconds_sum", ran)] == pytest.approx(42)
        assert metrics[("avgen_job_duration_seconds_bucket", (*ran[:1], ("le", "30.0"), *ran[1:]))] == 0
        assert metrics[("avgen_job_duration_seconds_bucket", (*ran[:1], ("le", "60.0"), *ran[1:]))] == 1
        assert metrics[("avgen_disk_bytes", (("area", "results"),))] == 0


def test_serve_refuses_a_public_host_without_keys(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("AVGEN_API_KEYS", None)
    r = subprocess.run(
        [sys.executable, "-m", "avgen", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "without API keys" in r.stderr


def test_sigterm_stops_serve_cleanly(tmp_path):
    with serve(tmp_path) as server, client(server) as c:
        r = c.post("/v1/jobs", json={"kind": "generate", "text": "kept"})
        assert r.status_code == 202, r.text
        os.killpg(server["proc"].pid, signal.SIGTERM)
        code = server["proc"].wait(20)
    log = (tmp_path / "serve.log").read_text()
    # uvicorn stops gracefully, then re-raises SIGTERM to avgen's handler, which unwinds: exit 128 + 15
    assert code == 128 + signal.SIGTERM and "Traceback" not in log, log
    from api.store import JobStore

    with JobStore(tmp_path / "data" / "jobs.sqlite3") as store:  # the job outlived the process
        assert store.get(owner_of_key(KEY_A), r.json()["id"]).status == "queued"


def test_a_finished_job_result_is_served_with_range_and_etag_and_the_quota_is_429(tmp_path, mp4_bytes):
    """The worker side done by hand on the same SQLite file, as the pool does: lease, write the file, finish."""
    from api.artifacts import Artifacts
    from api.store import JobStore

    with serve(tmp_path, AVGEN_MAX_QUEUED_PER_KEY="2") as server, client(server) as c:
        job = c.post("/v1/jobs", json={"kind": "generate", "text": "first"}).json()
        c.post("/v1/jobs", json={"kind": "generate", "text": "second"})
        over = assert_problem(c.post("/v1/jobs", json={"kind": "generate", "text": "third"}), 429)
        assert "2 jobs" in over["detail"]
        assert int(c.post("/v1/jobs", json={"kind": "generate", "text": "third"}).headers["retry-after"]) > 0
        assert c.post("/v1/jobs", json={"kind": "generate", "text": "b's"}, headers=auth(KEY_B)).status_code == 202

        with JobStore(server["data"] / "jobs.sqlite3") as store:
            leased = store.lease("test-worker", 60)
            assert leased.id == job["id"]  # the oldest job of the owner served first
            assert c.get(job["urls"]["self"]).json()["status"] == "running"
            assert "running" in assert_problem(c.get(job["urls"]["result"]), 409)["detail"]
            path = Artifacts(server["data"]).save_result(job["id"], mp4_bytes, "video/mp4")
            result = {"media_type": "video/mp4", "path": str(path.relative_to(server["data"])),
                      "metadata": {"seconds": "1"}, "scores": {"sync": 0.5}}  # fmt: skip
            assert store.finish(job["id"], leased.lease_token, "succeeded", result=result)

        done = c.get(job["urls"]["self"]).json()
        assert done["status"] == "succeeded" and done["scores"] == {"sync": 0.5}
        assert done["result"] == {"media_type": "video/mp4", "metadata": {"seconds": "1"}}
        whole = c.get(job["urls"]["result"])
        assert whole.status_code == 200 and whole.content == mp4_bytes
        assert whole.headers["content-type"] == "video/mp4" and whole.headers["etag"]
        part = c.get(job["urls"]["result"], headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == mp4_bytes[10:20]
        events = parse_sse(c.get(job["urls"]["events"]).text)
        assert [e["event"] for e in events] == ["queued", "started", "succeeded"]
        assert c.post(job["urls"]["cancel"]).status_code == 409
        assert c.post("/v1/jobs", json={"kind": "generate", "text": "third"}).status_code == 202  # room again


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}
