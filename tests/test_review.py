"""Review findings on the service, each a test that failed on the code it guards against: one real `avgen serve
--workers 0` for the module (real HTTP, a real SQLite file, a job finished by hand as the pool would), and the
pool's own spec building over a real store and real files."""

from __future__ import annotations

import base64

import pytest
from test_api import assert_problem, client, serve

from api.store import JobStore

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
