"""Retention: results and uploads are deleted `retention_seconds` after their job finished / their upload, and
uploads + results are kept under `max_disk_bytes` by deleting the oldest first.

    swept = sweep(store, artifacts, retention_seconds=7 * 86400, max_disk_bytes=10 << 30, now=time.time())
    sweeper = Sweeper(store, artifacts, retention_seconds, max_disk_bytes); sweeper.start(); ...; sweeper.stop()   # a thread, in create_app

A result is deleted only after its job is `expired` in the store (status and `expired` event in one
transaction): only succeeded jobs expire, and a worker writes a result file (atomically) before it finishes the
job, never after, so the sweeper never races a job writing its result. Files of jobs that are expired, failed
or canceled are deleted on every sweep, so a sweep cut short (a crash between the store and the disk) is
finished by the next one; files of queued or running jobs are left alone. A queued job whose upload was
deleted fails when it runs, saying the upload may have expired.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from api.artifacts import Artifacts
from api.store import JobStore
from workers.jobs import Status

log = logging.getLogger(__name__)

SWEEP_SECONDS = 60.0  # between sweeps; less when the retention is shorter (a quarter of it, at least MIN_SWEEP)
MIN_SWEEP_SECONDS = 0.5
LEFTOVER_SECONDS = 3600.0  # a half-written file (a killed server's) this old is deleted; no write takes so long
_UNSERVED = (Status.EXPIRED, Status.FAILED, Status.CANCELED)  # terminal without a result to serve


@dataclass
class Swept:
    expired: list[str] = field(default_factory=list)  # jobs expired by this sweep (by age, then for disk)
    uploads: int = 0  # uploads deleted
    results: int = 0  # jobs whose result files were deleted
    freed_bytes: int = 0


def sweep(
    store: JobStore, artifacts: Artifacts, retention_seconds: float, max_disk_bytes: int | None = None, now=None
) -> Swept:
    """One pass: (a) succeeded jobs that finished before now - retention expire, and files a killed server left
    half-written go (Artifacts.leftovers, LEFTOVER_SECONDS old); (b) uploads older than the retention go; (c) while uploads + results exceed max_disk_bytes, the oldest of them go (a result by its job's finish
    time, expiring the job; an upload by its creation time); then the files of every job that has no result to
    serve are deleted."""
    now = store.clock() if now is None else now
    cutoff = now - retention_seconds
    swept = Swept(expired=store.expire_finished(before=cutoff, reason="retention"))
    for path in artifacts.leftovers(before=time.time() - LEFTOVER_SECONDS):  # file times are the real clock's
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError:  # gone meanwhile
            continue
        swept.freed_bytes += size

    uploads = artifacts.uploads()
    for upload in [u for u in uploads if u.created_at < cutoff]:
        artifacts.delete_upload(upload)
        swept.uploads += 1
        swept.freed_bytes += upload.bytes
    uploads = [u for u in uploads if u.created_at >= cutoff]

    results = artifacts.results()
    states = store.finish_states(list(results))
    unserved = [job_id for job_id in results if job_id in states and states[job_id][0] in _UNSERVED]
    if max_disk_bytes is not None:
        used = sum(artifacts.disk_bytes().values()) - sum(results[j] for j in unserved)
        candidates = [(finished or 0.0, "result", job_id) for job_id, (status, finished) in states.items()
                      if status == Status.SUCCEEDED]  # fmt: skip
        candidates += [(u.created_at, "upload", u) for u in uploads]
        evict_jobs = []
        for _, what, item in sorted(candidates, key=lambda c: c[0]):  # oldest first, results and uploads alike
            if used <= max_disk_bytes:
                break
            if what == "result":
                evict_jobs.append(item)
                used -= results[item]
            else:
                artifacts.delete_upload(item)
                swept.uploads += 1
                swept.freed_bytes += item.bytes
                used -= item.bytes
        expired = store.expire_jobs(evict_jobs, reason="max-disk")
        swept.expired += expired
        unserved += expired

    for job_id in unserved:
        artifacts.delete_result(job_id)
        swept.results += 1
        swept.freed_bytes += results[job_id]
    return swept


class Sweeper:
    """Runs `sweep` on a thread every SWEEP_SECONDS (a quarter of the retention when that is shorter)."""

    def __init__(self, store: JobStore, artifacts: Artifacts, retention_seconds: float, max_disk_bytes: int | None):
        self.store, self.artifacts = store, artifacts
        self.retention_seconds, self.max_disk_bytes = retention_seconds, max_disk_bytes
        self.interval = max(MIN_SWEEP_SECONDS, min(SWEEP_SECONDS, retention_seconds / 4))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="avgen-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                swept = sweep(self.store, self.artifacts, self.retention_seconds, self.max_disk_bytes)
                if swept.expired or swept.uploads or swept.results:
                    log.info(
                        "retention: %d jobs expired, %d uploads and %d results deleted, %d bytes freed",
                        len(swept.expired), swept.uploads, swept.results, swept.freed_bytes,
                    )  # fmt: skip
            except Exception:  # noqa: BLE001 (the sweeper must outlive one bad pass; the next one retries)
                log.exception("retention sweep failed")
            self._stopping.wait(self.interval)
