"""The durable job store: jobs, their events and idempotency keys in one SQLite file. All SQL lives here.

Life of a job: `create` (queued) → `lease` by a worker (running, with a lease token and expiry; the worker
`heartbeat`s and `set_progress`es with that token) → `finish` (succeeded / failed / canceled). A worker that
dies stops heartbeating; `requeue_expired` puts its job back in the queue, or fails it (error type
`worker-lost`) after its last attempt, so no job stays running forever. Ray runs a task at least once;
`finish` is a conditional UPDATE (status running and the token matches), so completion happens exactly once.

Invariants:
- Every status change appends its event (queued, started, succeeded, failed, canceled, ...) in the same
  transaction, and events carry one global sequence id (AUTOINCREMENT never reuses a value), so an SSE
  client resuming after `Last-Event-ID` sees each later event exactly once, across restarts. Writers are
  serialized, so events commit in seq order: a reader never sees seq n+1 while seq n is still to come.
- Idempotency (IETF Idempotency-Key draft): UNIQUE(owner, idempotency_key) decides races, not a check
  before the insert; the body hash (canonical JSON of kind, spec, parent) tells a retry from a misuse.
  Keys are kept as long as their job.
- Fair order: round-robin across owners, FIFO within an owner. The next job leased belongs to the owner
  whose last lease is the oldest (an owner never leased comes first; ties go to the owner with the older
  queued job), and is that owner's oldest queued job. One owner's 1000 queued jobs then delay another
  owner's single job by at most one lease per owner. `queue_position` computes the same order.
- Batches: a parent job (kind batch) is never leased, its children are ordinary jobs; the parent's status,
  progress and events are settled in the same transaction as each change of a child (`_settle`).
- Webhooks: a job whose spec has a `webhook` ({"url", "events"}) gets a row in `deliveries` for each of those
  events (started; completed = succeeded, failed or canceled), written by `_event` in the same transaction
  as the status change, its body the job as the API shows it then; api/webhooks.py sends them. Signing
  secrets per owner live in `webhook_secrets` (see "webhooks" below).
- Times are UTC epoch seconds (float) from the injectable `clock`.

Threading: one connection per thread (threading.local), each in autocommit mode with explicit
`BEGIN IMMEDIATE` for every write, so that separate processes (API and worker pool) are ordered by SQLite's
lock and readers never wait for writers (WAL). Within one process, writers first queue on a Python lock:
SQLite's busy handler makes a waiting writer sleep with growing sleeps, and 50 threads creating at once had a
p99 of 1.3-3.3 s that way, 0.08-0.26 s behind the lock (`benchmarks/service.py --only store`). The lock only
orders whole transactions; the rules are still the schema's and the SQL's. Connections are closed by `close()`; the thread pools of a server
reuse their threads, so the number of connections stays bounded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.jobs import Status

SCHEMA_VERSION = 2  # 2: deliveries and webhook_secrets (_WEBHOOK_SCHEMA); a version-1 file gains them when opened
BATCH = "batch"  # the kind of a batch's parent job: never leased, its status follows its children
BUSY_TIMEOUT_MS = 10_000
MAX_SEQ = 2**63 - 1  # the largest INTEGER SQLite holds: event seqs and job nums are at most this

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    num              INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order
    id               TEXT NOT NULL UNIQUE,
    owner            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    spec             TEXT NOT NULL,
    parent           TEXT REFERENCES jobs(id),
    status           TEXT NOT NULL,
    idempotency_key  TEXT,
    body_hash        TEXT NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_token      TEXT,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         REAL NOT NULL DEFAULT 0,
    progress_message TEXT,
    result           TEXT,
    error            TEXT,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, owner, num);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, num);
CREATE INDEX IF NOT EXISTS jobs_parent ON jobs (parent, num);
CREATE TABLE IF NOT EXISTS owners (
    owner      TEXT PRIMARY KEY,
    last_lease INTEGER NOT NULL  -- a lease counter, not a time: fair even when the clock stands still
);
CREATE TABLE IF NOT EXISTS events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    type   TEXT NOT NULL,
    data   TEXT NOT NULL,
    at     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
"""

# webhooks (api/webhooks.py): what is still to be sent, and the secrets that sign it
_WEBHOOK_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id              TEXT PRIMARY KEY,  -- the webhook-id header: the same on every attempt, for de-duplication
    job_id          TEXT NOT NULL REFERENCES jobs(id),
    owner           TEXT NOT NULL,     -- whose secret signs it
    event           TEXT NOT NULL,     -- started | completed
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,     -- the job as GET /v1/jobs/{id} showed it when the event happened (JSON)
    status          TEXT NOT NULL,     -- pending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_job ON deliveries (job_id);
CREATE TABLE IF NOT EXISTS webhook_secrets (
    owner      TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
# which status events a webhook hears, by the name a webhook subscribes to
WEBHOOK_EVENTS = {"started": "started", "succeeded": "completed", "failed": "completed", "canceled": "completed"}


class StoreError(Exception):
    """A request the store refuses; the message says why."""


class IdempotencyConflict(StoreError):
    """The idempotency key was already used by this owner with another body (HTTP 422)."""


class QuotaExceeded(StoreError):
    """Creating the job would pass a quota (HTTP 429); `scope` says which: "owner" or "queue"."""

    def __init__(self, message: str, scope: str):
        super().__init__(message)
        self.scope = scope


@dataclass(frozen=True)
class Quota:
    """Checked in the creating transaction, so that concurrent creates cannot pass it together."""

    per_owner: int  # queued + running top-level jobs of one owner (a batch counts once)
    queue: int  # queued jobs a worker can run, of all owners (batch children counted, parents not)


class Conflict(StoreError):
    """The job's state forbids the request, e.g. canceling a finished job (HTTP 409)."""


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    kind: str
    spec: dict
    parent: str | None
    status: Status
    idempotency_key: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    worker_id: str | None
    lease_token: str | None
    lease_expires_at: float | None
    cancel_requested: bool
    progress: float
    progress_message: str | None
    result: Any
    error: Any


@dataclass(frozen=True)
class Event:
    seq: int
    job_id: str
    type: str
    data: dict
    at: float


@dataclass(frozen=True)
class Delivery:
    """One webhook event of one job, to be POSTed to url (api/webhooks.py)."""

    id: str
    job_id: str
    owner: str
    event: str
    url: str
    body: str
    status: str  # pending | delivered | failed
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    updated_at: float


_JOB_COLUMNS = ", ".join(Job.__dataclass_fields__)
_DELIVERY_COLUMNS = ", ".join(Delivery.__dataclass_fields__)


def _job(row: sqlite3.Row | None) -> Job | None:
    if row is None:
        return None
    d = dict(row)
    return Job(
        **{
            **d,
            "spec": json.loads(d["spec"]),
            "status": Status(d["status"]),
            "cancel_requested": bool(d["cancel_requested"]),
            "result": None if d["result"] is None else json.loads(d["result"]),
            "error": None if d["error"] is None else json.loads(d["error"]),
        }
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _body_hash(kind: str, spec: dict, parent: str | None) -> str:
    """What tells an idempotent retry from a misuse of its key (the same formula as `JobStore.create`)."""
    return hashlib.sha256(_canonical({"kind": kind, "spec": spec, "parent": parent}).encode()).hexdigest()


def _encode_cursor(num: int) -> str:
    return base64.urlsafe_b64encode(f"before:{num}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, num = text.split(":")
        if prefix != "before" or not 0 <= int(num) <= MAX_SEQ:
            raise ValueError
        return int(num)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValueError(f"cursor {cursor!r} was not given out by this store; pass the next_cursor of a list") from None


class JobStore:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()  # this process's writers, in turn (module docstring)
        self.deliveries_waiting = threading.Event()  # set when a write of this process queued a webhook delivery
        self._closed = False
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has job-store schema version {version}, newer than this code's {SCHEMA_VERSION}; "
                    "upgrade avgen"
                )
            if version < SCHEMA_VERSION:  # new, or older: every table is CREATE ... IF NOT EXISTS
                for statement in (_SCHEMA + _WEBHOOK_SCHEMA).split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections and transactions ------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the job store {self.path} is closed")
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # a committed job survives power loss, not only a crash
            db.execute("PRAGMA foreign_keys = ON")
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with the write lock up front (BEGIN IMMEDIATE) so that a read inside it
        cannot be overtaken by another writer."""
        db = self._db()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT too (disk full, busy) may leave it open, holding the lock
                    db.execute("ROLLBACK")
                self._local.queued_delivery = False
                raise
            if getattr(self._local, "queued_delivery", False):  # the deliverer need not wait for its next look
                self._local.queued_delivery = False
                self.deliveries_waiting.set()

    def close(self) -> None:
        self._closed = True
        with self._connections_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- jobs ------------------------------------------------------------------------------------------------

    def create(
        self,
        owner: str,
        kind: str,
        spec: dict,
        idempotency_key: str | None = None,
        parent: str | None = None,
        quota: Quota | None = None,
    ) -> tuple[Job, bool]:
        """Queue a job; committed before it returns. With an idempotency key already used by this owner:
        the same body returns the original job and created=False (whatever the quota), another body raises
        IdempotencyConflict. Past the quota: QuotaExceeded, nothing created."""
        if not isinstance(spec, dict):
            raise TypeError(f"spec must be a dict, not {type(spec).__name__}")
        body_hash = _body_hash(kind, spec, parent)
        now = self.clock()
        job_id = uuid.uuid4().hex
        with self._write() as db:
            if parent is not None and self._get(db, owner, parent) is None:
                raise StoreError(f"parent job {parent!r} not found for this owner")
            if idempotency_key is not None and (original := self._replay(db, owner, idempotency_key, body_hash)):
                return original, False
            self._check_quota(db, owner, quota, 1)
            db.execute(
                "INSERT INTO jobs (id, owner, kind, spec, parent, status, idempotency_key, body_hash, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, owner, kind, _canonical(spec), parent, Status.QUEUED, idempotency_key, body_hash, now, now),
            )
            self._event(db, job_id, "queued", {"status": Status.QUEUED}, now)
            return self._job(db, job_id), True

    def get(self, owner: str, job_id: str) -> Job | None:
        """The job if it exists and belongs to owner; None otherwise (another owner's job is not told apart)."""
        return self._get(self._db(), owner, job_id)

    def job(self, job_id: str) -> Job | None:
        """The job whoever owns it: for workers and the pool, never for answering a caller."""
        return self._job(self._db(), job_id)

    def list(
        self,
        owner: str,
        status: Status | str | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        parent: str | None = None,
        top_level: bool = False,
    ) -> tuple[list[Job], str | None]:
        """The owner's jobs, newest first, and the cursor of the next page (None on the last page). parent: only
        that batch's children; top_level: only jobs that are no batch's children."""
        if not 1 <= limit <= 1000:
            raise ValueError(f"limit must be between 1 and 1000, not {limit}")
        where, args = ["owner = ?"], [owner]
        if status is not None:
            where.append("status = ?")
            args.append(Status(status))
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if parent is not None:
            where.append("parent = ?")
            args.append(parent)
        if top_level:
            where.append("parent IS NULL")
        if cursor is not None:
            where.append("num < ?")
            args.append(_decode_cursor(cursor))
        rows = (
            self._db()
            .execute(
                f"SELECT {_JOB_COLUMNS}, num FROM jobs WHERE {' AND '.join(where)} ORDER BY num DESC LIMIT ?",
                (*args, limit + 1),
            )
            .fetchall()
        )
        jobs = [_job({k: r[k] for k in Job.__dataclass_fields__}) for r in rows[:limit]]
        return jobs, (_encode_cursor(rows[limit - 1]["num"]) if len(rows) > limit else None)

    def counts(self, owner: str | None = None) -> dict[Status, int]:
        """How many jobs are in each status (every status present), of one owner or of all."""
        sql = (
            "SELECT status, COUNT(*) FROM jobs" + (" WHERE owner = ?" if owner is not None else "") + " GROUP BY status"
        )
        found = dict(self._db().execute(sql, () if owner is None else (owner,)).fetchall())
        return {s: found.get(s.value, 0) for s in Status}

    # -- the queue -------------------------------------------------------------------------------------------

    def queue_position(self, job_id: str) -> int | None:
        """How many queued jobs `lease` will hand out before this one (0: it is next); None if not queued.

        Round-robin serves owners in a fixed order (see `_NEXT_OWNER`), one job each per round, so the job that is
        the r-th of its owner comes after min(n, r) jobs of every owner with n queued jobs, plus one more job of
        each owner served before its own owner in a round that still has an r-th job. Batch parents are not
        counted (never leased); a queued batch's own position is then that of its next queued child."""
        db = self._db()
        me = db.execute("SELECT owner, num, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if me is None or me["status"] != Status.QUEUED:
            return None
        rank = db.execute(
            f"SELECT COUNT(*) FROM jobs WHERE owner = ? AND status = ? AND num < ? AND kind != '{BATCH}'",
            (me["owner"], Status.QUEUED, me["num"]),
        ).fetchone()[0]
        ahead, before_me = 0, True
        for owner, n in db.execute(_OWNER_ORDER, (Status.QUEUED,)).fetchall():
            if owner == me["owner"]:
                before_me = False
            ahead += min(n, rank) + (1 if before_me and n > rank else 0)
        return ahead

    def lease(self, worker_id: str, lease_seconds: float) -> Job | None:
        """Take the next queued job (fair order, module docstring) for worker_id: running, a fresh lease token,
        attempts + 1, a lease expiring lease_seconds from now. None when nothing is queued. Atomic: two workers
        never lease the same job."""
        now = self.clock()
        if not self._any(f"status = '{Status.QUEUED}' AND kind != '{BATCH}'"):
            return None  # a read: an idle pool polling an empty queue takes no write lock
        with self._write() as db:
            row = db.execute(_OWNER_ORDER + " LIMIT 1", (Status.QUEUED,)).fetchone()
            if row is None:
                return None
            owner = row[0]
            job_id = db.execute(
                f"SELECT id FROM jobs WHERE owner = ? AND status = ? AND kind != '{BATCH}' ORDER BY num LIMIT 1",
                (owner, Status.QUEUED),
            ).fetchone()[0]
            db.execute(
                "UPDATE jobs SET status = ?, worker_id = ?, lease_token = ?, lease_expires_at = ?, attempts = attempts + 1,"
                " started_at = COALESCE(started_at, ?), updated_at = ? WHERE id = ? AND status = ?",
                (Status.RUNNING, worker_id, uuid.uuid4().hex, now + lease_seconds, now, now, job_id, Status.QUEUED),
            )
            db.execute(
                "INSERT INTO owners (owner, last_lease) VALUES (?, (SELECT COALESCE(MAX(last_lease), 0) + 1 FROM owners))"
                " ON CONFLICT (owner) DO UPDATE SET last_lease = excluded.last_lease",
                (owner,),
            )
            job = self._job(db, job_id)
            self._event(
                db, job_id, "started", {"status": Status.RUNNING, "attempt": job.attempts, "worker": worker_id}, now
            )
            self._settle_parent_of(db, job_id, now)
            return job

    def heartbeat(self, job_id: str, token: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the lease is no longer this token's (expired and requeued, finished)."""
        now = self.clock()
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_expires_at = ?, updated_at = ? WHERE id = ? AND status = ? AND lease_token = ?",
                (now + lease_seconds, now, job_id, Status.RUNNING, token),
            )
            return cur.rowcount == 1

    def set_progress(self, job_id: str, token: str, fraction: float, message: str | None = None) -> bool:
        """Record progress (0..1) under the lease token, with its event; False when the lease is not held."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within 0..1, not {fraction}")
        now = self.clock()
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET progress = ?, progress_message = ?, updated_at = ?"
                " WHERE id = ? AND status = ? AND lease_token = ?",
                (fraction, message, now, job_id, Status.RUNNING, token),
            )
            if cur.rowcount != 1:
                return False
            self._event(db, job_id, "progress", {"fraction": fraction, "message": message}, now)
            return True

    def requeue_expired(self, now: float | None = None, max_attempts: int = 3) -> list[Job]:
        """Running jobs whose lease has expired: back to queued, or failed (error type worker-lost) once they
        have had max_attempts, or canceled if a cancel was requested. Returns them as they are now."""
        now = self.clock() if now is None else now
        changed = []
        if not self._any(f"status = '{Status.RUNNING}' AND lease_expires_at < {float(now)!r}"):
            return changed  # a read first: the pool calls this every tick
        with self._write() as db:
            rows = db.execute(
                "SELECT id, attempts, cancel_requested FROM jobs WHERE status = ? AND lease_expires_at < ?",
                (Status.RUNNING, now),
            ).fetchall()
            for job_id, attempts, cancel_requested in rows:
                changed.append(
                    self._requeue(db, job_id, attempts, cancel_requested, max_attempts, "lease-expired", now)
                )
        return changed

    def requeue(self, job_id: str, token: str, reason: str, max_attempts: int = 3) -> Job | None:
        """Give back a running job whose worker is known to be gone (its actor or node died), as if its lease
        had expired now: queued again, failed (worker-lost) after max_attempts, or canceled if a cancel was
        requested. None (nothing changed) when the job is not running under this token."""
        now = self.clock()
        with self._write() as db:
            row = db.execute(
                "SELECT attempts, cancel_requested FROM jobs WHERE id = ? AND status = ? AND lease_token = ?",
                (job_id, Status.RUNNING, token),
            ).fetchone()
            if row is None:
                return None
            return self._requeue(db, job_id, row[0], row[1], max_attempts, reason, now)

    def _requeue(
        self, db: sqlite3.Connection, job_id: str, attempts: int, cancel_requested: int, max_attempts: int,
        reason: str, now: float,
    ) -> Job:  # fmt: skip
        if cancel_requested:
            status, error = Status.CANCELED, None
        elif attempts >= max_attempts:
            status = Status.FAILED
            error = {"type": "worker-lost", "detail": f"the worker stopped answering on each of {attempts} attempts"}
        else:
            status, error = Status.QUEUED, None
        db.execute(
            "UPDATE jobs SET status = ?, error = ?, worker_id = NULL, lease_token = NULL, lease_expires_at = NULL,"
            " finished_at = ?, updated_at = ? WHERE id = ?",
            (
                status,
                None if error is None else _canonical(error),
                None if status == Status.QUEUED else now,
                now,
                job_id,
            ),
        )
        data = {"status": status, "reason": reason, "attempts": attempts}
        self._event(db, job_id, status.value, data if error is None else {**data, "error": error}, now)
        self._settle_parent_of(db, job_id, now)
        return self._job(db, job_id)

    def finish(self, job_id: str, token: str, status: Status | str, result: Any = None, error: Any = None) -> bool:
        """Complete a running job, exactly once: True for the call that did it; False (nothing changed) when the
        job is not running under this token, e.g. a retried duplicate or a worker whose lease was requeued."""
        status = Status(status)
        if status not in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED):
            raise ValueError(f"a worker finishes a job as succeeded, failed or canceled, not {status}")
        now = self.clock()
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ?, updated_at = ?, lease_token = NULL,"
                " lease_expires_at = NULL, progress = CASE WHEN ? THEN 1.0 ELSE progress END"
                " WHERE id = ? AND status = ? AND lease_token = ?",
                (
                    status,
                    None if result is None else _canonical(result),
                    None if error is None else _canonical(error),
                    now,
                    now,
                    status == Status.SUCCEEDED,
                    job_id,
                    Status.RUNNING,
                    token,
                ),
            )
            if cur.rowcount != 1:
                return False
            data = {"status": status} | ({"error": error} if error is not None else {})
            self._event(db, job_id, status.value, data, now)
            self._settle_parent_of(db, job_id, now)
            return True

    def request_cancel(self, owner: str, job_id: str) -> Job | None:
        """Cancel the owner's job: a queued one is canceled at once (it never runs); a running one gets
        cancel_requested and its worker confirms with finish(..., canceled); canceling a canceled job changes
        nothing. Raises Conflict for a job that already succeeded, failed or expired. None if no such job."""
        now = self.clock()
        with self._write() as db:
            job = self._get(db, owner, job_id)
            if job is None or job.status == Status.CANCELED:
                return job
            if job.status.is_terminal:
                raise Conflict(f"job {job_id} already {job.status}; only a queued or running job can be canceled")
            if job.kind == BATCH:
                return self._cancel_batch(db, job, now)
            if job.status == Status.QUEUED:
                db.execute(
                    "UPDATE jobs SET status = ?, finished_at = ?, updated_at = ? WHERE id = ?",
                    (Status.CANCELED, now, now, job_id),
                )
                self._event(db, job_id, "canceled", {"status": Status.CANCELED}, now)
            elif not job.cancel_requested:
                db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
                self._event(db, job_id, "cancel-requested", {}, now)
            self._settle_parent_of(db, job_id, now)
            return self._job(db, job_id)

    # -- batches, idempotent replay, quotas and estimates ------------------------------------------------------
    #
    # A batch is one parent job (kind "batch", never leased) and one ordinary queued child job per item (column
    # `parent`), created in one transaction. The parent's status follows its children, settled in the same
    # transaction as each child's change (`_settle`): queued until a child starts, then running; progress is
    # the fraction of children finished; once every child is terminal: canceled if the batch was canceled,
    # else succeeded if at least one child succeeded, else failed.

    def create_batch(
        self,
        owner: str,
        items: list[dict],
        idempotency_key: str | None = None,
        quota: Quota | None = None,
        webhook: dict | None = None,
    ) -> tuple[Job, bool]:
        """Queue a batch: its parent job and one child per item ({"kind": ..., **spec}, in order), committed
        together. Idempotency and quota as for `create`: the key's body is the whole list of items (and the
        webhook), and the batch counts once for its owner and once per item in the queue. webhook: the parent's
        ({"url", "events"}, kept in its spec)."""
        if not items or not all(isinstance(i, dict) and i.get("kind") not in (None, BATCH) for i in items):
            raise ValueError("a batch needs at least one item, each a dict with a kind that is not batch")
        hooked = {"webhook": webhook} if webhook is not None else {}
        body_hash = _body_hash(BATCH, {"items": items, **hooked}, None)
        now = self.clock()
        parent_id = uuid.uuid4().hex
        insert = (
            "INSERT INTO jobs (id, owner, kind, spec, parent, status, idempotency_key, body_hash, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        with self._write() as db:
            if idempotency_key is not None and (original := self._replay(db, owner, idempotency_key, body_hash)):
                return original, False
            self._check_quota(db, owner, quota, len(items))
            db.execute(insert, (parent_id, owner, BATCH, _canonical({"count": len(items), **hooked}), None,
                                Status.QUEUED, idempotency_key, body_hash, now, now))  # fmt: skip
            self._event(db, parent_id, "queued", {"status": Status.QUEUED, "count": len(items)}, now)
            for item in items:
                kind, spec = item["kind"], {k: v for k, v in item.items() if k != "kind"}
                child_id = uuid.uuid4().hex
                db.execute(insert, (child_id, owner, kind, _canonical(spec), parent_id, Status.QUEUED, None,
                                    _body_hash(kind, spec, parent_id), now, now))  # fmt: skip
                self._event(db, child_id, "queued", {"status": Status.QUEUED}, now)
            return self._job(db, parent_id), True

    def find_idempotent(self, owner: str, idempotency_key: str, kind: str, spec: dict) -> Job | None:
        """The job this owner already created with this key (None if none), checked before any quota so that a
        retry gets its original job even when the owner is at its cap. Another body raises IdempotencyConflict.
        For a batch, spec is {"items": [...]} (and "webhook" when given), as `create_batch` hashes it."""
        return self._replay(self._db(), owner, idempotency_key, _body_hash(kind, spec, None))

    def children(self, parent_id: str) -> list[Job]:
        """A batch's child jobs in item order."""
        rows = self._db().execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE parent = ? ORDER BY num", (parent_id,))
        return [_job(r) for r in rows]

    def children_counts(self, parent_id: str) -> dict[Status, int]:
        """How many of a batch's children are in each status (every status present)."""
        return self._children_counts(self._db(), parent_id)

    def active_top_level(self, owner: str) -> int:
        """The owner's queued or running jobs that are not a batch's children (a batch counts once): the per-key
        quota."""
        return self._active_top_level(self._db(), owner)

    def queued_work(self) -> int:
        """Queued jobs a worker can lease, of all owners (batch children included, batch parents not): the global
        queue cap."""
        return self._queued_work(self._db())

    @staticmethod
    def _active_top_level(db: sqlite3.Connection, owner: str) -> int:
        return db.execute(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND parent IS NULL AND status IN (?, ?)",
            (owner, Status.QUEUED, Status.RUNNING),
        ).fetchone()[0]

    @staticmethod
    def _queued_work(db: sqlite3.Connection) -> int:
        return db.execute(
            f"SELECT COUNT(*) FROM jobs WHERE status = ? AND kind != '{BATCH}'", (Status.QUEUED,)
        ).fetchone()[0]

    def _check_quota(self, db: sqlite3.Connection, owner: str, quota: Quota | None, jobs: int) -> None:
        if quota is None:
            return
        if self._active_top_level(db, owner) >= quota.per_owner:
            raise QuotaExceeded(
                f"this key already has {quota.per_owner} jobs queued or running; wait for one to finish", "owner"
            )
        if self._queued_work(db) + jobs > quota.queue:
            raise QuotaExceeded("the queue is full; try again later", "queue")

    def mean_duration(self, kind: str, last: int = 20) -> float | None:
        """Mean seconds from first start to finish of the `last` most recently succeeded jobs of this kind; None
        without any."""
        return (
            self._db()
            .execute(
                "SELECT AVG(d) FROM (SELECT finished_at - started_at AS d FROM jobs WHERE kind = ? AND status = ?"
                " AND started_at IS NOT NULL AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?)",
                (kind, Status.SUCCEEDED, last),
            )
            .fetchone()[0]
        )

    def next_child(self, parent_id: str) -> Job | None:
        """A batch's next child to be leased (its oldest queued one), or None."""
        child_id = self._next_child(self._db(), parent_id)
        return None if child_id is None else self.job(child_id)

    # inside a transaction

    def _any(self, where: str) -> bool:
        """Whether any job matches `where` (our own SQL, never a client's), read without the write lock."""
        return self._db().execute(f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {where})").fetchone()[0] == 1

    def _replay(self, db: sqlite3.Connection, owner: str, idempotency_key: str, body_hash: str) -> Job | None:
        row = db.execute(
            f"SELECT {_JOB_COLUMNS}, body_hash FROM jobs WHERE owner = ? AND idempotency_key = ?",
            (owner, idempotency_key),
        ).fetchone()
        if row is None:
            return None
        if row["body_hash"] != body_hash:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was already used with another request body; "
                "use a new key for a new request"
            )
        return _job({k: row[k] for k in Job.__dataclass_fields__})

    @staticmethod
    def _next_child(db: sqlite3.Connection, parent_id: str) -> str | None:
        row = db.execute(
            "SELECT id FROM jobs WHERE parent = ? AND status = ? ORDER BY num LIMIT 1", (parent_id, Status.QUEUED)
        ).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _children_counts(db: sqlite3.Connection, parent_id: str) -> dict[Status, int]:
        found = dict(db.execute("SELECT status, COUNT(*) FROM jobs WHERE parent = ? GROUP BY status", (parent_id,)))
        return {s: found.get(s.value, 0) for s in Status}

    def _cancel_batch(self, db: sqlite3.Connection, batch: Job, now: float) -> Job:
        """Cancel every child that is not finished (queued ones at once, running ones through cancel_requested);
        the batch ends canceled once all its children are terminal."""
        if not batch.cancel_requested:
            db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, batch.id))
            self._event(db, batch.id, "cancel-requested", {}, now)
        rows = db.execute(
            "SELECT id, status FROM jobs WHERE parent = ? AND (status = ? OR (status = ? AND cancel_requested = 0))",
            (batch.id, Status.QUEUED, Status.RUNNING),
        ).fetchall()
        for child_id, status in rows:
            if status == Status.QUEUED:
                db.execute(
                    "UPDATE jobs SET status = ?, finished_at = ?, updated_at = ? WHERE id = ?",
                    (Status.CANCELED, now, now, child_id),
                )
                self._event(db, child_id, "canceled", {"status": Status.CANCELED}, now)
            else:
                db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, child_id))
                self._event(db, child_id, "cancel-requested", {}, now)
        self._settle(db, batch.id, now)
        return self._job(db, batch.id)

    def _settle_parent_of(self, db: sqlite3.Connection, job_id: str, now: float) -> None:
        row = db.execute("SELECT parent FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is not None and row[0] is not None:
            self._settle(db, row[0], now)

    def _settle(self, db: sqlite3.Connection, batch_id: str, now: float) -> None:
        """Bring a batch's status, progress and events in line with its children (module docstring, batches)."""
        batch = self._job(db, batch_id)
        if batch is None or batch.kind != BATCH or batch.status.is_terminal:
            return
        counts = self._children_counts(db, batch_id)
        total = sum(counts.values())
        done = sum(n for s, n in counts.items() if s.is_terminal)
        if total == 0:
            return
        started = db.execute(
            "SELECT 1 FROM jobs WHERE parent = ? AND started_at IS NOT NULL LIMIT 1", (batch_id,)
        ).fetchone()
        if batch.status == Status.QUEUED and started is not None:
            db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, updated_at = ? WHERE id = ?",
                (Status.RUNNING, now, now, batch_id),
            )
            self._event(db, batch_id, "started", {"status": Status.RUNNING}, now)
        fraction = done / total
        if fraction != batch.progress:
            message = f"{done} of {total} items finished"
            db.execute(
                "UPDATE jobs SET progress = ?, progress_message = ?, updated_at = ? WHERE id = ?",
                (fraction, message, now, batch_id),
            )
            self._event(db, batch_id, "progress", {"fraction": fraction, "message": message}, now)
        if done < total:
            return
        error = None
        if batch.cancel_requested:
            status = Status.CANCELED
        elif counts[Status.SUCCEEDED]:
            status = Status.SUCCEEDED
        else:
            status = Status.FAILED
            others = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != Status.FAILED)
            error = {
                "type": "batch-failed",
                "detail": f"none of the {total} items succeeded: {counts[Status.FAILED]} failed"
                + (f", {others}" if others else ""),
            }
        db.execute(
            "UPDATE jobs SET status = ?, error = ?, finished_at = ?, updated_at = ? WHERE id = ?",
            (status, None if error is None else _canonical(error), now, now, batch_id),
        )
        data = {"status": status, "children": {s.value: n for s, n in counts.items()}}
        self._event(db, batch_id, status.value, data if error is None else {**data, "error": error}, now)

    # -- events ----------------------------------------------------------------------------------------------

    def append_event(self, job_id: str, type: str, data: dict) -> int:
        """Append an event to a job's stream; returns its sequence id (global, increasing, never reused)."""
        with self._write() as db:
            return self._event(db, job_id, type, data, self.clock())

    def events_after(self, job_id: str, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        """The job's events with seq > after_seq, in order (after_seq: the SSE Last-Event-ID)."""
        rows = self._db().execute(
            "SELECT seq, job_id, type, data, at FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, -1 if limit is None else limit),
        )
        return [Event(seq, jid, type_, json.loads(data), at) for seq, jid, type_, data, at in rows]

    # -- retention and metrics --------------------------------------------------------------------------------

    CHUNK = 500  # jobs per statement (SQLite limits the variables of one) and per expiring transaction

    def expire_finished(self, before: float, reason: str = "retention") -> list[str]:
        """Succeeded jobs that finished before `before` become expired, each with its `expired` event in the same
        transaction; returns their ids, oldest first. Only succeeded jobs expire: a terminal job's result is
        written before it succeeds and never after, so deleting an expired job's files races no worker.
        A transaction per CHUNK jobs, so that a backlog (a first sweep) never holds the write lock for long."""
        ids = self._db().execute(
            "SELECT id FROM jobs WHERE status = ? AND finished_at < ? ORDER BY finished_at, num",
            (Status.SUCCEEDED, before),
        )
        return self.expire_jobs([row[0] for row in ids], reason)

    def expire_jobs(self, job_ids: list[str], reason: str) -> list[str]:
        """Those of these jobs that are still succeeded become expired (as expire_finished); returns their ids."""
        expired = []
        for i in range(0, len(job_ids), self.CHUNK):
            expired += self._expire(job_ids[i : i + self.CHUNK], reason)
        return expired

    def _expire(self, job_ids: list[str], reason: str) -> list[str]:
        """One transaction: those of these jobs (CHUNK at most) still succeeded become expired."""
        now = self.clock()
        with self._write() as db:
            rows = db.execute(  # by id alone: with `status = ?` too, SQLite scans every succeeded job (jobs_queue)
                f"SELECT id, status FROM jobs WHERE id IN ({', '.join('?' * len(job_ids))}) ORDER BY finished_at, num",
                job_ids,
            )
            ids = [job_id for job_id, status in rows if status == Status.SUCCEEDED]
            for job_id in ids:
                db.execute("UPDATE jobs SET status = ?, updated_at = ? WHERE id = ?", (Status.EXPIRED, now, job_id))
                self._event(db, job_id, "expired", {"status": Status.EXPIRED, "reason": reason}, now)
        return ids

    def finish_states(self, job_ids: list[str]) -> dict[str, tuple[Status, float | None]]:
        """Status and finished_at of each of these jobs that exists (for the sweeper: which stored results count)."""
        found = {}
        for i in range(0, len(job_ids), self.CHUNK):
            chunk = job_ids[i : i + self.CHUNK]
            rows = self._db().execute(
                f"SELECT id, status, finished_at FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            )
            found.update({job_id: (Status(status), finished_at) for job_id, status, finished_at in rows})
        return found

    def kind_counts(self) -> dict[tuple[str, Status], int]:
        """How many jobs of each (kind, status) there are, for kinds present (one query; for /metrics)."""
        rows = self._db().execute("SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status")
        return {(kind, Status(status)): n for kind, status, n in rows}

    def duration_histogram(self, bounds: list[float]) -> dict[tuple[str, str], tuple[list[int], int, float]]:
        """Run time (first start to finish) of the finished jobs that ran, by (kind, final status): per bound the
        count of jobs that took at most that long, the count, the sum of seconds (one query; for /metrics).
        An expired job counts as succeeded, how it finished, so the counts never go down."""
        buckets = "".join(", SUM(finished_at - started_at <= ?)" for _ in bounds)
        rows = self._db().execute(
            "SELECT kind, CASE status WHEN ? THEN ? ELSE status END AS final, COUNT(*), SUM(finished_at - started_at)"
            f"{buckets} FROM jobs WHERE finished_at IS NOT NULL AND started_at IS NOT NULL GROUP BY kind, final",
            (Status.EXPIRED, Status.SUCCEEDED, *bounds),
        )
        return {(row[0], row[1]): (list(row[4:]), row[2], row[3]) for row in rows}

    # -- webhooks ----------------------------------------------------------------------------------------------
    #
    # A delivery is queued by `_event` (below) in the transaction of the job's status change, so that no change
    # of status is missed and none is told twice. The deliverer (api/webhooks.py) claims due deliveries, sends
    # them off the write lock and records each attempt. A claim moves next_attempt_at on by `hold_seconds`: a
    # deliverer that dies mid-send lets its deliveries fall due again (at least once, also across restarts).

    def claim_deliveries(self, limit: int, hold_seconds: float) -> list[Delivery]:
        """Up to `limit` pending deliveries that are due, the longest due first, held for hold_seconds."""
        now = self.clock()
        due = "SELECT {} FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at"
        if self._db().execute(due.format("1") + " LIMIT 1", (now,)).fetchone() is None:
            return []  # a read first: the deliverer polls
        with self._write() as db:
            rows = db.execute(due.format(_DELIVERY_COLUMNS) + " LIMIT ?", (now, limit)).fetchall()
            db.executemany(
                "UPDATE deliveries SET next_attempt_at = ? WHERE id = ?", [(now + hold_seconds, r["id"]) for r in rows]
            )
        return [Delivery(**dict(r)) for r in rows]

    def next_delivery_at(self) -> float | None:
        """When the next pending delivery falls due (None: nothing pending)."""
        return self._db().execute("SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'").fetchone()[0]

    def record_attempt(
        self, delivery_id: str, delivered: bool, error: str | None = None, retry_at: float | None = None
    ) -> Delivery | None:
        """One attempt was made: delivered; or not, to be tried again at retry_at, or (retry_at None) given up
        as failed. None when the delivery is not pending (nothing changed)."""
        status = "delivered" if delivered else "pending" if retry_at is not None else "failed"
        now = self.clock()
        with self._write() as db:
            cur = db.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = COALESCE(?, next_attempt_at),"
                " last_error = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
                (status, retry_at, error, now, delivery_id),
            )
            if cur.rowcount != 1:
                return None
            return Delivery(**dict(db.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?",
                                              (delivery_id,)).fetchone()))  # fmt: skip

    def deliveries(self, job_id: str) -> list[Delivery]:
        """A job's deliveries, oldest first."""
        rows = self._db().execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE job_id = ? ORDER BY rowid", (job_id,)
        )
        return [Delivery(**dict(r)) for r in rows]

    def webhook_secret(self, owner: str, new: Callable[[], str]) -> str:
        """The owner's signing secret; the first call stores new() as it."""
        find = "SELECT secret FROM webhook_secrets WHERE owner = ?"
        if (row := self._db().execute(find, (owner,)).fetchone()) is not None:
            return row[0]
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO webhook_secrets (owner, secret, created_at) VALUES (?, ?, ?)",
                (owner, new(), self.clock()),
            )
            return db.execute(find, (owner,)).fetchone()[0]

    def set_webhook_secret(self, owner: str, secret: str) -> None:
        """Replace the owner's signing secret (rotation): deliveries from now on, retries too, are signed with it."""
        with self._write() as db:
            db.execute(
                "INSERT INTO webhook_secrets (owner, secret, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (owner) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at",
                (owner, secret, self.clock()),
            )

    def _queue_delivery(self, db: sqlite3.Connection, job_id: str, event: str, at: float) -> None:
        row = db.execute("SELECT owner, json_extract(spec, '$.webhook') FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row[1] is None:
            return
        owner, webhook = row[0], json.loads(row[1])
        if not isinstance(webhook, dict) or not webhook.get("url") or event not in webhook.get("events", ["completed"]):
            return  # a malformed webhook (the API never stores one) must not stop the job's change
        from api.views import job_view  # the API's rendering of a job (api.views imports this module)

        body = _canonical(job_view(self._job(db, job_id), self))  # read through this transaction's connection
        db.execute(
            "INSERT INTO deliveries (id, job_id, owner, event, url, body, status, next_attempt_at, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (f"msg_{uuid.uuid4().hex}", job_id, owner, event, webhook["url"], body, at, at, at),
        )
        self._local.queued_delivery = True  # `_write` wakes the deliverer once this commits

    # -- inside a transaction ---------------------------------------------------------------------------------

    def _event(self, db: sqlite3.Connection, job_id: str, type: str, data: dict, at: float) -> int:
        """Append the event; a status event that the job's webhook hears also queues its delivery (same transaction)."""
        seq = db.execute(
            "INSERT INTO events (job_id, type, data, at) VALUES (?, ?, ?, ?)", (job_id, type, _canonical(data), at)
        ).lastrowid
        if type in WEBHOOK_EVENTS:
            self._queue_delivery(db, job_id, WEBHOOK_EVENTS[type], at)
        return seq

    @staticmethod
    def _job(db: sqlite3.Connection, job_id: str) -> Job | None:
        return _job(db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone())

    @staticmethod
    def _get(db: sqlite3.Connection, owner: str, job_id: str) -> Job | None:
        return _job(
            db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
        )


# Owners with queued jobs, in the order lease serves them: the least recently leased first (never leased: 0),
# ties to the owner whose oldest queued job is older.
_OWNER_ORDER = (
    "SELECT q.owner, q.n FROM (SELECT owner, COUNT(*) AS n, MIN(num) AS first FROM jobs WHERE status = ?"
    f" AND kind != '{BATCH}' GROUP BY owner) q"
    " LEFT JOIN owners o ON o.owner = q.owner ORDER BY COALESCE(o.last_lease, 0), q.first"
)
