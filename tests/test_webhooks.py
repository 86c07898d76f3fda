"""Webhooks through a real `avgen serve --workers 0` and a real receiver (http.server on 127.0.0.1 in a thread):
signed deliveries (checked here with hmac by hand, as the Standard Webhooks spec says), retries with backoff
and a stable webhook-id, 410 and the attempt limit, refused URLs, per-key secrets, batches, and a pending
delivery that survives a server restart. The tests play the worker on the same SQLite file (lease, finish),
as tests/test_api.py does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_api import KEY_A, KEY_B, _free_port, assert_problem, client, serve

from api.deps import ANONYMOUS
from api.store import JobStore
from api.webhooks import MAX_WAIT_SECONDS, Secrets, backoff, sign, url_problem

BACKOFF = 0.3  # seconds: the first retry's wait (AVGEN_WEBHOOK_BACKOFF_SECONDS), small so that tests run fast
MAX_ATTEMPTS = 4


class Receiver:
    """A webhook receiver on 127.0.0.1: answers each POST with the next of `answers` (then 200s) and records
    (monotonic time, lower-cased headers, body bytes); with `hold`, it answers only once hold is set."""

    def __init__(self, answers=(), port: int = 0, hold: threading.Event | None = None):
        self.answers, self.received = list(answers), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
                if hold is not None:
                    hold.wait(30)
                self.send_response(outer.answers.pop(0) if outer.answers else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, seconds: float = 30) -> list:
        deadline = time.monotonic() + seconds
        while len(self.received) < n:
            assert time.monotonic() < deadline, f"{len(self.received)} of {n} deliveries arrived"
            time.sleep(0.05)
        return self.received

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(answers=(), port=0, hold=None):
        made.append(Receiver(answers, port, hold))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    env = {"AVGEN_WEBHOOK_BACKOFF_SECONDS": str(BACKOFF), "AVGEN_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}
    with serve(tmp_path_factory.mktemp("hooks"), **env) as running:
        with JobStore(running["data"] / "jobs.sqlite3") as worker:  # the worker's side of the same file
            running["worker"] = worker
            yield running


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """The receiver's check, written from the spec: HMAC-SHA256 keyed with the base64 after whsec_, over
    id.timestamp.body, base64, one of the space-separated v1 signatures."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")]
    return any(hmac.compare_digest(s, expected) for s in given)


def submit(c, url, events=None, **body) -> str:
    webhook = {"url": url} | ({"events": events} if events else {})
    r = c.post(
        "/v1/jobs", json={"kind": "generate", "text": "a webhook test", "seconds": 1, "webhook": webhook, **body}
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def run(worker: JobStore, job_id: str, status="succeeded", **outcome):
    """Lease the next job (it must be this one) and finish it, as the pool would."""
    lease = worker.lease("test-worker", 600)
    assert lease is not None and lease.id == job_id
    assert worker.finish(job_id, lease.lease_token, status, **outcome)


def settled(worker: JobStore, job_id: str, seconds: float = 30):
    """The job's deliveries once none is pending."""
    deadline = time.monotonic() + seconds
    while True:
        found = worker.deliveries(job_id)
        if found and all(d.status != "pending" for d in found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


# --- signing, backoff and URLs, without a server ---


def test_signatures_match_the_standard_webhooks_test_vector_and_the_check_written_here():
    secret, msg_id, timestamp, body = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'  # fmt: skip
    signature = sign(secret, msg_id, timestamp, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="  # the spec's published vector
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
    assert verify(secret, headers, body.encode())
    assert not verify(secret, headers, body.encode() + b" ")


def test_backoff_doubles_never_sooner_than_retry_after_and_at_most_an_hour_plus_jitter():
    for attempts in range(1, 6):
        waits = [backoff(attempts, 5.0) for _ in range(50)]
        assert all(5.0 * 2 ** (attempts - 1) <= w <= 1.25 * 5.0 * 2 ** (attempts - 1) for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert 120 <= backoff(1, 5.0, retry_after=120) <= 150
    assert MAX_WAIT_SECONDS <= backoff(40, 5.0) <= 1.25 * MAX_WAIT_SECONDS


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/x", "http://localhost:8000", "http://[::1]:8000/", "http://127.1:8000",
     "http://2130706433:8000", "http://[::ffff:127.0.0.1]:8000", "http://0.0.0.0:8000", "http://api.localhost:8000",
     "HTTP://LOCALHOST.:8000"],
)  # fmt: skip
def test_url_problem_refuses_the_server_itself_however_it_is_written(url):
    assert "this server itself" in url_problem(url, "127.0.0.1", 8000)


def test_url_problem_allows_other_ports_and_hosts_and_refuses_other_schemes():
    for url in ("http://127.0.0.1:8001/hook", "https://127.0.0.1/hook", "http://example.com:8000/hook"):
        assert url_problem(url, "127.0.0.1", 8000) is None, url
    assert "this server itself" in url_problem("http://10.1.2.3:80/", "10.1.2.3", 80)  # the bind address, port 80
    assert "this server itself" in url_problem(f"http://{socket.gethostname()}:8000/", "0.0.0.0", 8000)
    assert url_problem(f"http://{socket.gethostname()}:8000/", "127.0.0.1", 8000) is None
    assert "not ftp" in url_problem("ftp://example.com/x", "127.0.0.1", 8000)
    assert "no host" in url_problem("http:///x", "127.0.0.1", 8000)
    assert "not a URL" in url_problem("http://example.com:99999/", "127.0.0.1", 8000)
    assert "not a URL" in url_problem("http://example.com/\x7f", "127.0.0.1", 8000)


def test_without_api_keys_the_one_secret_is_a_0600_file_in_the_data_dir(tmp_path):
    with JobStore(tmp_path / "jobs.db") as store:
        secrets = Secrets(store, tmp_path)
        first = secrets.get(ANONYMOUS)
        path = tmp_path / "webhook-secret"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == first
        assert secrets.get(ANONYMOUS) == first and len(base64.b64decode(first.removeprefix("whsec_"))) == 32
        rotated = secrets.rotate(ANONYMOUS)
        assert rotated != first and path.read_text().strip() == rotated
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert secrets.get("key:someone") not in (first, rotated)  # a key's own, in the store
        assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.db", "jobs.db-shm", "jobs.db-wal", "webhook-secret"]


# --- through the server ---


def test_a_failing_receiver_gets_the_job_three_times_signed_with_one_id_and_growing_waits(api, receiver):
    hook = receiver(answers=[500, 500])
    with client(api) as c:
        job_id = submit(c, hook.url)
        run(api["worker"], job_id, result={"media_type": "video/mp4", "scores": {"sync": 1.5}})
        received = hook.wait(3)
        secret = c.get("/v1/webhooks/secret").json()["secret"]
        job = c.get(f"/v1/jobs/{job_id}").json()
    [delivery] = settled(api["worker"], job_id)
    assert (delivery.status, delivery.attempts, delivery.event) == ("delivered", 3, "completed")
    assert len(hook.received) == 3
    assert {headers["webhook-id"] for _, headers, _ in received} == {delivery.id}
    for _, headers, body in received:
        assert verify(secret, headers, body), headers
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == job  # the job as GET shows it
    assert job["status"] == "succeeded" and job["scores"] == {"sync": 1.5}
    times = [t for t, _, _ in received]
    waits = [b - a for a, b in zip(times, times[1:])]
    assert waits[0] >= BACKOFF and waits[1] >= 2 * BACKOFF, waits  # the schedule's waits, doubling


def test_started_and_completed_events_each_bring_the_job_as_it_was_then(api, receiver):
    hook = receiver()
    with client(api) as c:
        job_id = submit(c, hook.url, events=["started", "completed"])
        run(api["worker"], job_id, "failed", error={"type": "internal", "detail": "boom"})
        received = hook.wait(2)
    bodies = {h["webhook-id"]: json.loads(b) for _, h, b in received}
    deliveries = {d.event: d for d in settled(api["worker"], job_id)}
    assert bodies[deliveries["started"].id]["status"] == "running"
    assert bodies[deliveries["completed"].id]["status"] == "failed"
    assert bodies[deliveries["completed"].id]["error"] == {"type": "internal", "detail": "boom"}


def test_a_410_stops_the_retries_and_other_failures_stop_at_the_attempt_limit(api, receiver):
    gone, failing = receiver(answers=[410, 500, 500]), receiver(answers=[500] * 10)
    with client(api) as c:
        gone_id, failing_id = submit(c, gone.url), submit(c, failing.url)
        run(api["worker"], gone_id)
        run(api["worker"], failing_id)
    [delivery] = settled(api["worker"], gone_id)
    assert (delivery.status, delivery.attempts) == ("failed", 1) and "410" in delivery.last_error
    [delivery] = settled(api["worker"], failing_id)
    assert (delivery.status, delivery.attempts) == ("failed", MAX_ATTEMPTS)
    assert delivery.last_error == f"gave up after {MAX_ATTEMPTS} attempts; the last: HTTP 500"
    assert len(gone.received) == 1 and len(failing.received) == MAX_ATTEMPTS
    with client(api) as c, client(api, KEY_B) as b:
        [listed] = c.get("/v1/webhooks/deliveries", params={"job_id": failing_id}).json()["deliveries"]
        assert (listed["status"], listed["attempts"], listed["next_attempt_at"]) == ("failed", MAX_ATTEMPTS, None)
        assert listed["last_error"] == delivery.last_error and listed["url"] == failing.url
        assert_problem(b.get("/v1/webhooks/deliveries", params={"job_id": failing_id}), 404)  # not B's job


def test_a_receiver_that_does_not_answer_holds_up_neither_other_deliveries_nor_the_queue(api, receiver):
    release = threading.Event()
    slow, fast = receiver(hold=release), receiver()
    try:
        with client(api) as c:
            slow_id = submit(c, slow.url)
            run(api["worker"], slow_id)
            slow.wait(1)  # it has the request and does not answer
            fast_id = submit(c, fast.url)  # the API and the store go on
            run(api["worker"], fast_id)
            fast.wait(1)
            # the slow one's first attempt is still under way (none recorded), and the fast one is delivered
            assert [(d.status, d.attempts) for d in api["worker"].deliveries(slow_id)] == [("pending", 0)]
            assert [d.status for d in settled(api["worker"], fast_id)] == ["delivered"]
    finally:
        release.set()
    assert [(d.status, d.attempts) for d in settled(api["worker"], slow_id)] == [("delivered", 1)]


def test_webhook_urls_at_the_server_itself_or_not_http_are_refused_with_a_422(api, receiver):
    port = api["url"].rsplit(":", 1)[1]
    refused = [f"http://127.0.0.1:{port}/v1/jobs", f"http://localhost:{port}/", f"http://[::1]:{port}/",
               "file:///etc/passwd", "ftp://example.com/hook", "http:///hook", "https://", "gopher://x/"]  # fmt: skip
    with client(api) as c:
        for url in refused:
            r = c.post("/v1/jobs", json={"kind": "generate", "text": "hi", "webhook": {"url": url}})
            detail = assert_problem(r, 422)["detail"]
            assert detail.startswith("webhook.url: "), detail
            assert ("only http and https" if "://" in url and not url.startswith("http") else "webhook.url") in detail
        item = {"kind": "generate", "text": "hi"}
        r = c.post("/v1/jobs", json={"kind": "batch", "items": [item], "webhook": {"url": refused[0]}})
        assert assert_problem(r, 422)["detail"].startswith("webhook.url: ")
        r = c.post("/v1/jobs", json={"kind": "batch", "items": [item, {**item, "webhook": {"url": refused[1]}}]})
        assert assert_problem(r, 422)["detail"].startswith("items[1].webhook.url: ")
        r = c.post("/v1/jobs", json={**item, "webhook": {"url": receiver().url, "events": ["finished"]}})
        assert "webhook.events" in assert_problem(r, 422)["detail"]
        assert c.get("/v1/jobs?status=queued").json()["jobs"] == []  # nothing was queued
        hook = receiver()  # 127.0.0.1 at another port is another server: allowed
        job_id = submit(c, hook.url)
        assert c.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "canceled"
        assert json.loads(hook.wait(1)[0][2])["status"] == "canceled"


def test_each_key_reads_and_rotates_its_own_secret_and_deliveries_are_signed_with_the_current_one(api, receiver):
    with client(api, KEY_A) as a, client(api, KEY_B) as b:
        first = a.get("/v1/webhooks/secret")
        assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
        secret_a = first.json()["secret"]
        assert secret_a.startswith("whsec_") and len(base64.b64decode(secret_a[6:])) == 32
        assert a.get("/v1/webhooks/secret").json()["secret"] == secret_a
        secret_b = b.get("/v1/webhooks/secret").json()["secret"]
        rotated = a.post("/v1/webhooks/secret/rotate").json()["secret"]
        assert len({secret_a, secret_b, rotated}) == 3
        assert a.get("/v1/webhooks/secret").json()["secret"] == rotated
        assert b.get("/v1/webhooks/secret").json()["secret"] == secret_b  # untouched, and never A's
        assert_problem(a.get("/v1/webhooks/secret", headers={"Authorization": "Bearer wrong-key-wrong-key"}), 401)

        hook = receiver()
        job_id = submit(a, hook.url)
        a.post(f"/v1/jobs/{job_id}/cancel")
        _, headers, body = hook.wait(1)[0]
        assert verify(rotated, headers, body) and not verify(secret_a, headers, body)
        assert not verify(secret_b, headers, body)


def test_a_batch_webhook_is_told_once_when_the_whole_batch_has_finished(api, receiver):
    hook = receiver()
    items = [{"kind": "generate", "text": f"item {i}", "seconds": 1} for i in range(2)]
    with client(api) as c:
        body, key = {"kind": "batch", "items": items, "webhook": {"url": hook.url}}, {"Idempotency-Key": "hooked"}
        r = c.post("/v1/jobs", json=body, headers=key)
        assert r.status_code == 202, r.text
        batch_id = r.json()["id"]
        again = c.post("/v1/jobs", json=body, headers=key)  # a retry: the same batch, the webhook part of its body
        assert again.json()["id"] == batch_id and again.headers["idempotent-replayed"] == "true"
        other = c.post("/v1/jobs", json={**body, "webhook": {"url": hook.url + "2"}}, headers=key)
        assert "already used" in assert_problem(other, 422)["detail"]
        children = [j["id"] for j in c.get(f"/v1/jobs?parent={batch_id}").json()["jobs"]][::-1]
        run(api["worker"], children[0])
        assert api["worker"].deliveries(batch_id) == []
        run(api["worker"], children[1], "failed", error={"type": "internal", "detail": "boom"})
        [(_, headers, body)] = hook.wait(1)
        batch = json.loads(body)
        assert (
            batch["kind"] == "batch"
            and batch["status"] == "succeeded"
            and batch == c.get(f"/v1/jobs/{batch_id}").json()
        )
        assert (batch["children"]["succeeded"], batch["children"]["failed"], batch["children"]["total"]) == (1, 1, 2)
    assert all(api["worker"].deliveries(child) == [] for child in children)
    assert len(hook.received) == 1


def test_a_pending_delivery_survives_a_server_restart_and_arrives_once_the_receiver_is_up(tmp_path, receiver):
    port = _free_port()  # nothing listens there yet: every attempt is refused
    env = {"AVGEN_WEBHOOK_BACKOFF_SECONDS": "0.5", "AVGEN_WEBHOOK_MAX_ATTEMPTS": "20"}
    with serve(tmp_path, **env) as first, JobStore(first["data"] / "jobs.sqlite3") as worker:
        with client(first) as c:
            job_id = submit(c, f"http://127.0.0.1:{port}/hook")
        run(worker, job_id)
        deadline = time.monotonic() + 30
        while not (found := worker.deliveries(job_id)) or found[0].attempts < 1:
            assert time.monotonic() < deadline, found
            time.sleep(0.05)
    with JobStore(tmp_path / "data" / "jobs.sqlite3") as stopped:  # as the first server left it
        [before] = stopped.deliveries(job_id)
    assert before.status == "pending" and "ConnectError" in before.last_error
    hook = receiver(port=port)
    with serve(tmp_path, **env) as second, JobStore(second["data"] / "jobs.sqlite3") as worker:
        [(_, headers, body)] = hook.wait(1)
        [after] = settled(worker, job_id)
        with client(second) as c:
            assert verify(c.get("/v1/webhooks/secret").json()["secret"], headers, body)
    assert headers["webhook-id"] == before.id == after.id and after.status == "delivered"
    assert after.attempts == before.attempts + 1 and json.loads(body)["id"] == job_id
