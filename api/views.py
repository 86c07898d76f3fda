"""A job as the API shows it (GET /v1/jobs/{id}): one rendering, for the routes and for the webhook deliveries
that the store writes in the same transaction as the job's change (so it reads through the store's own
connection, seeing that change)."""

from __future__ import annotations

from api.store import BATCH, Job
from workers.jobs import Status


def urls(job_id: str, kind: str | None = None) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    links = {"self": base, "events": f"{base}/events", "result": f"{base}/result", "cancel": f"{base}/cancel"}
    if kind == BATCH:
        links |= {"archive": f"{base}/archive", "children": f"/v1/jobs?parent={job_id}"}
    return links


def estimated_start(job: Job, store, position: int | None, workers: int) -> float | None:
    """now + position / workers × the mean run time of the last succeeded jobs of its kind (for a batch: of its
    next child); None when not queued or without such history. An estimate: jobs vary, and so does the load."""
    if position is None:
        return None
    kind = job.kind
    if kind == BATCH:
        child = store.next_child(job.id)
        if child is None:
            return None
        kind = child.kind
    mean = store.mean_duration(kind)
    return None if mean is None else store.clock() + position / max(1, workers) * mean


def children_view(job: Job, store) -> dict | None:
    """A batch's children by status (every status) and their total; None for any other job."""
    if job.kind != BATCH:
        return None
    counts = {s.value: n for s, n in store.children_counts(job.id).items()}
    return {**counts, "total": sum(counts.values())}


def job_view(job: Job, store, workers: int = 1) -> dict:
    result = job.result or {}
    position = store.queue_position(job.id) if job.status == Status.QUEUED else None
    return {
        "id": job.id,
        "kind": job.kind,
        "parent": job.parent,
        "status": job.status.value,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "queue_position": position,
        "estimated_start_at": estimated_start(job, store, position, workers),
        "children": children_view(job, store),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "updated_at": job.updated_at,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "error": job.error,
        "result": {k: result[k] for k in ("media_type", "metadata") if k in result} or None,
        "scores": result.get("scores"),
        "spec": job.spec,
        "urls": urls(job.id, job.kind),
    }
