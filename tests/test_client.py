"""The client commands (`avgen submit`, `avgen jobs`, `avgen batch`, `avgen eval --server`) as subprocesses
against one real `avgen serve` with a Ray worker pool and the small model (test_service's `service` fixture),
shared by the whole module. Clips are short (1 s) and few: each command pays the CLI's start (~3 s)."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
import test_service
from test_api import KEY_A, client, png_bytes
from test_service import sse_events

from avgen.cli import main
from avgen.client import Client
from avgen.media import read_mp4, write_mp4
from eval.drawn_face import drawn_talking_head
from eval.run import COLUMNS, EvalSettings, evaluate, summary_table

ROOT = Path(__file__).parents[1]
FPS, SAMPLES_PER_FRAME = 25, 640


service = test_service.service  # its module-scoped real `avgen serve --workers 1` with the small model


def command(service, *args: str, key: str = KEY_A, **env) -> list[str] | dict:
    """`python -m avgen ARGS` as a subprocess and its environment: the server and key from AVGEN_SERVER and
    AVGEN_API_KEY (unless given as options)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AVGEN_SERVER": service["url"], "AVGEN_API_KEY": key, **env}
    env.pop("AVGEN_DEBUG", None)
    return [sys.executable, "-m", "avgen", *args], env


def avgen(service, *args: str, key: str = KEY_A, **env) -> subprocess.CompletedProcess:
    cmd, env = command(service, *args, key=key, **env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, check=False)


def top_level_jobs(service, kind: str | None = None, key: str = KEY_A) -> list[dict]:
    with client(service, key) as c:
        return c.get("/v1/jobs", params={"limit": 100, **({"kind": kind} if kind else {})}).json()["jobs"]


def wait_finished(service, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    with client(service) as c:
        while (job := c.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed", "canceled"):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
    return job


def test_submit_uploads_waits_and_downloads_the_mp4_and_json_prints_the_job(service, tmp_path):
    face = tmp_path / "face.png"
    face.write_bytes(png_bytes())
    out = tmp_path / "clip.mp4"
    r = avgen(service, "submit", "--text", "Hello there", "--seconds", "1", "--seed", "3", "--no-score",
              "--reference-image", str(face), "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    clip = read_mp4(out)
    assert len(clip.frames) == FPS and len(clip.audio) == FPS * SAMPLES_PER_FRAME
    assert clip.metadata["avgen_seed"] == "3"
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left
    job = top_level_jobs(service)[0]
    assert job["status"] == "succeeded" and job["spec"]["seed"] == 3
    with client(service) as c:
        assert c.get(f"/v1/uploads/{job['spec']['reference_image']}").json()["kind"] == "image"

    r = avgen(service, "submit", "--text", "Hi", "--seconds", "1", "--no-score", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["kind"] == "generate" and job["spec"]["seconds"] == 1
    assert job["id"] == top_level_jobs(service)[0]["id"]  # one job made


def test_a_server_error_is_its_detail_on_one_line_with_exit_1(service, tmp_path):
    with client(service) as c:
        refused = c.post("/v1/jobs", json={"kind": "generate", "text": "Hi", "seconds": 9999, "seed": 0})
    assert refused.status_code == 422
    before = len(top_level_jobs(service))
    r = avgen(service, "submit", "--text", "Hi", "--seconds", "9999")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"avgen: error: {refused.json()['detail']}\n"
    assert len(top_level_jobs(service)) == before

    r = avgen(service, "jobs", key="not-a-key-of-this-server")
    unauthorized = httpx.get(f"{service['url']}/v1/jobs", headers={"Authorization": "Bearer not-a-key"})
    assert unauthorized.status_code == 401
    assert (r.returncode, r.stderr) == (1, f"avgen: error: {unauthorized.json()['detail']}\n")


def test_without_a_server_a_client_command_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("AVGEN_SERVER", raising=False)
    with pytest.raises(SystemExit) as exit:
        main(["jobs"])
    assert exit.value.code == 2
    assert capsys.readouterr().err == "avgen: error: avgen jobs needs --server URL (or AVGEN_SERVER) (see --help)\n"
    # eval is also a local command: only --server makes it remote, and --server alone needs AVGEN_SERVER
    assert main(["eval", "clips-that-are-not-read", "--server"]) == 1
    assert capsys.readouterr().err.strip() == "avgen: error: --server without a URL needs AVGEN_SERVER set"


def test_jobs_lists_in_a_table_and_as_json_and_cancel_cancels(service):
    r = avgen(service, "submit", "--text", "A long one to cancel", "--seconds", "120", "--steps", "50",
              "--no-score")  # fmt: skip
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert len(job_id) == 32

    r = avgen(service, "jobs", "--kind", "generate", "--limit", "3")
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["ID", "KIND", "STATUS", "PROGRESS", "CREATED"]
    assert 1 <= len(rows) <= 3 and rows[0].split()[:2] == [job_id, "generate"]
    assert rows[0].split()[2] in ("queued", "running")

    r = avgen(service, "jobs", "cancel", job_id)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == job_id
    assert wait_finished(service, job_id)["status"] == "canceled"

    r = avgen(service, "jobs", "--status", "canceled", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert job_id in [j["id"] for j in listed] and {j["status"] for j in listed} == {"canceled"}


@contextmanager
def cutting_proxy(url: str, cut_after: int):
    """A TCP proxy to the server whose first connection is dropped after `cut_after` bytes of the answer (a
    network failure in the middle of an event stream); later connections pass whole. Yields (its URL, the
    number of connections it took)."""
    host, port = url.removeprefix("http://").split(":")
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = [0]

    def pipe(src: socket.socket, dst: socket.socket, limit: int | None = None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((host, int(port)))
            limit = cut_after if accepted[0] == 0 else None
            accepted[0] += 1
            threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, conn, limit), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        listener.close()


def test_events_resume_after_a_dropped_connection_with_last_event_id_each_event_once(service):
    with client(service) as c:
        job = c.post("/v1/jobs", json={"kind": "generate", "text": "Hi", "seconds": 1, "score": False}).json()
        direct = sse_events(c, job["urls"]["events"])
        whole = c.get(job["urls"]["events"]).content
    assert len(direct) >= 4
    with cutting_proxy(service["url"], cut_after=len(whole) // 2) as (url, connections):
        with Client(url, KEY_A, retry_delays=(0.1, 0.1)) as remote:
            events = list(remote.events(job["id"]))
    assert connections[0] >= 2  # the first stream was cut, and the client reconnected
    assert [(e.id, e.type, e.data) for e in events] == [(e["id"], e["type"], e["data"]) for e in direct]


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_a_malformed_line_is_named_by_its_number_and_nothing_is_submitted(service, tmp_path):
    before = top_level_jobs(service)
    bad_json = write_jsonl(tmp_path / "bad.jsonl", [{"text": "one", "seconds": 1}, "", '{"text": "two", "seconds"'])
    r = avgen(service, "batch", str(bad_json), "--out", str(tmp_path / "out1"))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"avgen: error: {bad_json}: line 3: not JSON")

    # refused by the server (an upload id it does not have): its `items[1]` is the file's line 3
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{"text": "one", "seconds": 1}, "",
                                                        {"text": "two", "reference_image": "0" * 32}])  # fmt: skip
    r = avgen(service, "batch", str(unknown), "--out", str(tmp_path / "out2"))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("avgen: error: line 3: reference_image: no upload")
    assert top_level_jobs(service) == before


def batch_files(out: Path) -> list[Path]:
    return sorted(out.glob("[0-9][0-9][0-9][0-9]-*.mp4"))


def test_batch_downloads_each_mp4_writes_scores_and_summary_and_resumes_after_a_kill(service, tmp_path):
    lines = [{"text": "One little clip", "seconds": 1}, {"text": "Two", "seconds": 1, "seed": 2},
             {"kind": "generate", "text": "Three", "seconds": 1, "seed": 3}]  # fmt: skip
    jsonl, out = write_jsonl(tmp_path / "requests.jsonl", lines), tmp_path / "out"
    batches_before = len(top_level_jobs(service, "batch"))

    cmd, env = command(service, "batch", str(jsonl), "--out", str(out))
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not batch_files(out) and first.poll() is None:  # killed after its first download
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    batch_id = json.loads((out / ".avgen-batch.json").read_text())["batch"]

    r = avgen(service, "batch", str(jsonl), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"batch {batch_id}" in r.stderr and "resumed" in r.stderr
    assert len(top_level_jobs(service, "batch")) == batches_before + 1  # nothing submitted twice
    with client(service) as c:
        manifest = c.get(f"/v1/jobs/{batch_id}/result").json()
    files = batch_files(out)
    assert [f.name for f in files] == [f"{i['index']:04d}-{i['id']}.mp4" for i in manifest["items"]]  # each once
    for f in files:
        assert len(read_mp4(f).frames) == FPS
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["index"], r["line"], r["id"], r["status"], r["text"]) for r in rows] == [
        (str(i), str(i + 1), item["id"], "succeeded", line["text"]) for i, (item, line) in enumerate(zip(manifest["items"], lines))
    ]  # fmt: skip
    for row, item in zip(rows, manifest["items"]):
        assert float(row["sync_confidence"]) == item["scores"]["sync_confidence"]
        assert int(row["av_offset_frames"]) == item["scores"]["av_offset_frames"]
        assert float(row["temporal_flickering"]) == item["scores"]["temporal_flickering"]
    assert json.loads((out / "summary.json").read_text()) == manifest["summary"]
    assert r.stdout.splitlines()[0] == f"batch {batch_id} succeeded: 3 succeeded"
    assert summary_table([i["scores"] for i in manifest["items"]]) in r.stdout

    # its state lost and a file gone: the Idempotency-Key (the file's content hash) finds the same batch
    (out / ".avgen-batch.json").unlink()
    files[1].unlink()
    r = avgen(service, "batch", str(jsonl), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert batch_files(out) == files and len(top_level_jobs(service, "batch")) == batches_before + 1


def test_a_batch_line_may_name_a_file_it_is_uploaded_once_and_a_lost_state_is_refused_not_run_twice(service, tmp_path):
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "face.png").write_bytes(png_bytes())
    jsonl = write_jsonl(tmp_path / "face.jsonl", [{"text": "Face", "seconds": 1, "reference_image": "faces/face.png"}])
    out = tmp_path / "out"
    r = avgen(service, "batch", str(jsonl), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    batches = top_level_jobs(service, "batch")
    with client(service) as c:
        (child,) = c.get("/v1/jobs", params={"parent": batches[0]["id"]}).json()["jobs"]
        assert c.get(f"/v1/uploads/{child['spec']['reference_image']}").json()["kind"] == "image"
    assert len(batch_files(out)) == 1

    (out / ".avgen-batch.json").unlink()  # its upload ids are gone with it: the same key, another body
    r = avgen(service, "batch", str(jsonl), "--out", str(out), "--quiet")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "nothing was submitted twice" in r.stderr
    assert top_level_jobs(service, "batch") == batches


def close(a, b) -> bool:
    """Equal JSON values, floats to 1e-6 (the server's worker may sum in another order than this process)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return a == b


def test_eval_on_the_server_writes_what_local_eval_writes_and_a_rerun_uploads_only_new_clips(service, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_mp4(clips / "a.mp4", *drawn_talking_head(1.5, seed=1))
    write_mp4(clips / "b.mp4", *drawn_talking_head(1.5, seed=2, audio_delay_frames=3))
    out, local = tmp_path / "remote", tmp_path / "local"

    r = avgen(service, "eval", str(clips), "--server", service["url"], "--out", str(out), AVGEN_SERVER="")
    assert r.returncode == 0, r.stderr
    expected = evaluate([str(clips)], local, EvalSettings())  # the local run, same backend (landmarks)
    got = json.loads((out / "results.json").read_text())
    assert [row["path"] for row in got] == [str(clips / "a.mp4"), str(clips / "b.mp4")]
    assert close(got, json.loads((local / "results.json").read_text()))
    assert (out / "results.csv").read_text().splitlines()[0].split(",") == list(COLUMNS)
    with open(out / "results.csv") as f, open(local / "results.csv") as g:
        assert [r["path"] for r in csv.DictReader(f)] == [r["path"] for r in csv.DictReader(g)]
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(p.name for p in (local / "plots").iterdir())
    assert summary_table(expected) in r.stdout

    uploads = service["data"] / "uploads"
    stored, batches = sorted(uploads.rglob("*")), top_level_jobs(service, "batch")
    write_mp4(clips / "c.mp4", *drawn_talking_head(1.5, seed=3))
    r = avgen(service, "eval", str(clips), "--server", service["url"], "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(sorted(uploads.rglob("*"))) == len(stored) + 2  # c.mp4 and its metadata: a and b not again
    new = top_level_jobs(service, "batch")
    assert len(new) == len(batches) + 1 and new[0]["children"]["total"] == 1
    rows = json.loads((out / "results.json").read_text())
    assert [Path(row["path"]).name for row in rows] == ["a.mp4", "b.mp4", "c.mp4"] and rows[:2] == got
    assert all(row["error"] is None for row in rows)
