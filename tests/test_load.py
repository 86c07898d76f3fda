"""Many clients at once against a real `avgen serve --workers 0` (jobs stay queued): every submission is either
accepted (202) or refused with 429, none is lost or made twice, and what the API lists and counts agrees with
what the clients were told and with the SQLite file itself."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from test_api import KEY_A, KEY_B, KEY_C, client, serve

from api.deps import owner_of_key
from api.store import JobStore

CLIENTS, SUBMISSIONS_EACH, CAP = 20, 10, 40
KEYS = (KEY_A, KEY_B, KEY_C)


def _submit_all(server, n: int) -> list[dict]:
    """Client n: its submissions, each with its own Idempotency-Key; a few sent twice, as a client retrying
    after a lost answer would."""
    key = KEYS[n % len(KEYS)]
    rng = random.Random(n)
    outcomes = []
    with client(server, key) as c:
        for i in range(SUBMISSIONS_EACH):
            body = {"kind": "generate", "text": f"client {n} says {i}", "seconds": 1 + rng.random(), "seed": i}
            headers = {"Idempotency-Key": f"client-{n}-{i}"}
            r = c.post("/v1/jobs", json=body, headers=headers)
            outcome = {"key": key, "body": body, "headers": headers, "status": r.status_code, "json": r.json()}
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) > 0 and r.json()["detail"]
            if r.status_code == 202 and rng.random() < 0.3:
                again = c.post("/v1/jobs", json=body, headers=headers)
                assert again.status_code == 202, again.text
                assert again.json()["id"] == r.json()["id"] and again.headers["idempotent-replayed"] == "true"
            outcomes.append(outcome)
    return outcomes


def _listed(c: httpx.Client) -> list[dict]:
    jobs, cursor = [], None
    while True:
        page = c.get("/v1/jobs", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        jobs += page["jobs"]
        if not (cursor := page["next_cursor"]):
            return jobs


def test_200_submissions_from_20_clients_are_each_accepted_or_429_and_none_is_lost_or_doubled(tmp_path):
    with serve(tmp_path, AVGEN_MAX_QUEUED_PER_KEY=str(CAP)) as server:
        with ThreadPoolExecutor(CLIENTS) as pool:
            outcomes = [o for per_client in pool.map(lambda n: _submit_all(server, n), range(CLIENTS))
                        for o in per_client]  # fmt: skip
        assert len(outcomes) == CLIENTS * SUBMISSIONS_EACH
        assert {o["status"] for o in outcomes} <= {202, 429}, Counter(o["status"] for o in outcomes)
        accepted = {key: [o["json"]["id"] for o in outcomes if o["key"] == key and o["status"] == 202] for key in KEYS}
        for key in KEYS:
            submitted = sum(o["key"] == key for o in outcomes)
            assert len(accepted[key]) == min(CAP, submitted)  # the cap is exact: no more, and no refusal below it
            assert len(set(accepted[key])) == len(accepted[key])  # no two submissions answered with one job

        for key in KEYS:
            with client(server, key) as c:
                listed = _listed(c)
                assert sorted(j["id"] for j in listed) == sorted(accepted[key])
                assert all(j["status"] == "queued" for j in listed)
                by_id = {j["id"]: j for j in listed}
                for o in outcomes:
                    if o["key"] == key and o["status"] == 202:
                        assert by_id[o["json"]["id"]]["spec"]["text"] == o["body"]["text"]
                positions = sorted(j["queue_position"] for j in listed)
                assert len(set(positions)) == len(positions)  # a strict order: no two jobs share a place

        with JobStore(server["data"] / "jobs.sqlite3") as store:
            for key in KEYS:
                assert store.counts(owner_of_key(key))["queued"] == len(accepted[key])
            assert store.counts()["queued"] == sum(map(len, accepted.values()))
            for job_id in (i for ids in accepted.values() for i in ids):
                assert [e.type for e in store.events_after(job_id)] == ["queued"]  # one creation, one event
