"""/v1/jobs: submit, read, list, cancel, follow (SSE) and fetch the result of jobs, and of batches of jobs.

A batch (`{"kind": "batch", "items": [...]}`) is a parent job and one child job per item (api/store.py, batches):
GET of the batch counts its children by status, GET /v1/jobs?parent=ID lists them (the plain listing shows
only top-level jobs), its result is a JSON manifest with a summary, and /archive is a zip of the children's
results, built once into the results folder.
"""

from __future__ import annotations

import asyncio
import json
import time
import zipfile
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from api.config import format_duration
from api.deps import Caller, Config, Files, OwnedJob, Store
from api.problems import ApiError, responses
from api.schemas import UPLOAD_FIELDS, BatchBody, EvaluateBody, GenerateBody, JobBody, JobId, JobList, JobView
from api.store import BATCH, MAX_SEQ, Conflict, IdempotencyConflict, Job, Quota, QuotaExceeded
from api.views import job_view, urls
from api.webhooks import url_problem
from avgen.config import Config as ModelConfig
from avgen.files import atomic_path
from avgen.pipeline import GenerationError, GenerationRequest, resolve
from eval.run import summary_stats
from workers.jobs import Status

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=responses(401, 422))

# the media a result or an archive may be, whole (200) or a Range of it (206)
FILE_ANSWERS = {"video/mp4": {}, "image/png": {}, "application/zip": {}}
FILE_RESPONSES = {
    200: {"content": {**FILE_ANSWERS, "application/json": {}}},
    206: {"description": "a Range of the file", "content": FILE_ANSWERS},
}

POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
RETRY_AFTER = {"owner": "10", "queue": "30"}  # seconds, by the quota that refused a submission


def worker_count(request: Request) -> int:
    """How many jobs run at once: the pool's slots, or 1 when this process has no pool (API only)."""
    pool = request.app.state.pool
    return len(pool.slots) if pool is not None else 1


Workers = Annotated[int, Depends(worker_count)]


def _at(where: str, field: str = "") -> str:
    """Where in the body a problem is, as a 422's detail starts: "reference_image", "items[3].reference_image"."""
    return ".".join(p for p in (where, field) if p)


def check_uploads(body, owner: str, files, where: str = "") -> None:
    for field, kinds in UPLOAD_FIELDS.items():
        upload_id = getattr(body, field, None)
        if upload_id is None:
            continue
        info = files.upload_info(owner, upload_id)
        if info is None:
            raise ApiError(
                422, "Unprocessable Content",
                f"{_at(where, field)}: no upload {upload_id!r}; POST the file to /v1/uploads first",
            )  # fmt: skip
        if info["kind"] not in kinds:
            raise ApiError(
                422, "Unprocessable Content",
                f"{_at(where, field)}: upload {upload_id} is {info['kind']}, not {' or '.join(kinds)}",
            )  # fmt: skip


def check_runnable(body: GenerateBody, where: str = "") -> None:
    """What the model would refuse, found now (no model loaded): the checks of avgen.pipeline.resolve."""
    if body.audio is not None:
        return  # the length and the phones come from the audio; the worker reads it
    request = GenerationRequest(text=body.text, seconds=body.seconds, steps=body.steps, guidance=body.cfg,
                                shift=body.shift, sampler=body.sampler, seed=body.seed)  # fmt: skip
    try:
        resolve(request, ModelConfig())
    except GenerationError as e:
        raise ApiError(422, "Unprocessable Content", f"{where}: {e}" if where else str(e)) from None


def check_source_job(body: EvaluateBody, owner: str, store, where: str = "") -> None:
    """An evaluate body's `job`: the caller's own generate job that has succeeded (its MP4 is what is scored)."""
    if body.job is None:
        return
    at = _at(where, "job")
    source = store.get(owner, body.job)
    if source is None:
        raise ApiError(422, "Unprocessable Content", f"{at}: no job {body.job!r} of yours (an item of a batch cannot "
                       "refer to another item of the same batch: evaluate it once the batch is done)")  # fmt: skip
    if source.kind != "generate":
        raise ApiError(422, "Unprocessable Content", f"{at}: job {body.job} is {_a(source.kind)} job; "
                       "only a generate job's MP4 can be evaluated")  # fmt: skip
    if source.status != Status.SUCCEEDED:
        raise ApiError(422, "Unprocessable Content", f"{at}: job {body.job} is {source.status}; "
                       "evaluate it once it has succeeded")  # fmt: skip


def check_webhook(webhook, config, where: str = "") -> None:
    """A webhook URL must be http(s) with a host, and not this server itself (api/webhooks.py url_problem)."""
    if webhook is not None and (problem := url_problem(webhook.url, config.host, config.port)):
        raise ApiError(422, "Unprocessable Content", f"{_at(where, 'webhook.url')}: {problem}")


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def check_item(body: GenerateBody | EvaluateBody, owner: str, files, store, where: str = "") -> None:
    """Everything that would make the job fail later, checked at submit (422 naming where)."""
    check_uploads(body, owner, files, where)
    if isinstance(body, GenerateBody):
        check_runnable(body, where)
    else:
        check_source_job(body, owner, store, where)


@router.post("", status_code=202, responses=responses(400, 413, 429))
def submit(
    body: Annotated[JobBody, Body()],
    response: Response,
    store: Store,
    files: Files,
    config: Config,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
):
    """Queue a job: generate, evaluate (an upload or one of your succeeded generate jobs), or a batch of up to
    1000 generate/evaluate items (one parent job, a child job per item; every item is checked before anything is
    queued, and a 422 names the item: `items[3].seconds: ...`).

    Idempotency-Key: a retry with a key already used with the same body returns the original job (202,
    `Idempotent-Replayed: true`) before any check or quota, so it succeeds even when the key is at its cap now;
    the same key with another body is a 422.

    Quotas (429 with Retry-After): the per-key cap (AVGEN_MAX_QUEUED_PER_KEY) counts the key's queued and running
    top-level jobs, a batch counting as one whatever its size; the global cap (AVGEN_MAX_QUEUE) counts every
    queued job a worker can run, batch children included, so a batch that would take the queue past it is
    refused whole (a batch larger than the whole queue can never fit: 422).

    Webhook (`{"url": ..., "events": ["completed"]}`, on any job or batch): the job is POSTed there, signed, on those
    events (api/webhooks.py); a URL that is not http(s), has no host or points at this server is a 422."""
    if isinstance(body, BatchBody):
        webhook = None if body.webhook is None else body.webhook.model_dump()
        kind, items = BATCH, body.items
        spec = {"items": [{"kind": item.kind, **item.spec()} for item in items]} | (
            {"webhook": webhook} if webhook else {}
        )
    else:
        kind, spec, items = body.kind, body.spec(), [body]
    try:
        if idempotency_key is not None and (original := store.find_idempotent(caller, idempotency_key, kind, spec)):
            return accepted(response, original, replayed=True)
        check_webhook(body.webhook, config)
        for index, item in enumerate(items):
            where = f"items[{index}]" if kind == BATCH else ""
            check_item(item, caller, files, store, where)
            if kind == BATCH:
                check_webhook(item.webhook, config, where)
        if len(items) > config.max_queue:
            raise ApiError(422, "Unprocessable Content", f"items: {len(items)} items, but the queue holds at most "
                           f"{config.max_queue} jobs; split the batch")  # fmt: skip
        quota = Quota(per_owner=config.max_queued_per_key, queue=config.max_queue)
        if kind == BATCH:
            job, created = store.create_batch(caller, spec["items"], idempotency_key=idempotency_key, quota=quota,
                                              webhook=webhook)  # fmt: skip
        else:
            job, created = store.create(caller, kind, spec, idempotency_key=idempotency_key, quota=quota)
    except QuotaExceeded as e:
        raise ApiError(429, "Too Many Requests", str(e), {"Retry-After": RETRY_AFTER[e.scope]}) from None
    except IdempotencyConflict as e:
        raise ApiError(422, "Unprocessable Content", str(e)) from None
    return accepted(response, job, replayed=not created)


def accepted(response: Response, job: Job, replayed: bool) -> dict:
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return {"id": job.id, "status": job.status.value, "urls": urls(job.id, job.kind)}


@router.get("", response_model=JobList, responses=responses(404))
def list_jobs(
    store: Store,
    caller: Caller,
    workers: Workers,
    status: Status | None = None,
    kind: Literal["generate", "evaluate", "batch"] | None = None,
    parent: Annotated[JobId | None, Query(description="a batch's id: list its children")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
):
    """The caller's jobs, newest first: top-level jobs (batches, not their children), or with `parent` the
    children of that batch."""
    if parent is not None and store.get(caller, parent) is None:
        raise ApiError(404, "Not Found", f"no job {parent!r}")
    try:
        jobs, next_cursor = store.list(caller, status=status, kind=kind, limit=limit, cursor=cursor, parent=parent,
                                       top_level=parent is None)  # fmt: skip
    except ValueError as e:
        raise ApiError(422, "Unprocessable Content", str(e)) from None
    return {"jobs": [job_view(j, store, workers) for j in jobs], "next_cursor": next_cursor}


@router.get("/{job_id}", response_model=JobView, responses=responses(404))
def get_job(job: OwnedJob, store: Store, workers: Workers):
    """The job. A queued job has `queue_position` (jobs leased before it) and `estimated_start_at` (epoch
    seconds, an estimate: now + position / workers × the mean run time of recent succeeded jobs of its kind;
    null without such history). A batch has `children`: its children's counts by status and `total`."""
    return job_view(job, store, workers)


@router.post("/{job_id}/cancel", response_model=JobView, responses=responses(404, 409))
def cancel(job: OwnedJob, store: Store, caller: Caller, workers: Workers):
    """Cancel a job; a batch: every unfinished child (queued ones at once, running ones once their worker
    stops), the batch ending canceled once all are finished. One child of a batch can be canceled alone."""
    try:
        job = store.request_cancel(caller, job.id)
    except Conflict as e:
        raise ApiError(409, "Conflict", str(e)) from None
    return job_view(job, store, workers)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **responses(400, 404)},
)
async def events(job: OwnedJob, store: Store, request: Request, last_event_id: Annotated[str | None, Header()] = None):
    try:
        after = int(last_event_id) if last_event_id else 0
        if not 0 <= after <= MAX_SEQ:
            raise ValueError
    except ValueError:
        raise ApiError(
            400, "Bad Request", f"Last-Event-ID must be an event id (an integer from 0), not {last_event_id!r}"
        ) from None

    async def stream():
        seen, quiet_since = after, time.monotonic()
        yield "retry: 1000\n\n"
        while True:
            batch = await asyncio.to_thread(store.events_after, job.id, seen)
            for e in batch:
                seen = e.seq
                yield f"id: {e.seq}\nevent: {e.type}\ndata: {json.dumps({**e.data, 'at': e.at})}\n\n"
            if batch:
                quiet_since = time.monotonic()
            current = await asyncio.to_thread(store.job, job.id)
            if current.status.is_terminal and not await asyncio.to_thread(store.events_after, job.id, seen):
                return  # the final event is sent; nothing follows it
            if await request.is_disconnected():
                return
            if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/{job_id}/result", response_class=FileResponse, responses={**FILE_RESPONSES, **responses(404, 409, 410)})
def result(job: OwnedJob, files: Files, store: Store, config: Config):
    """The result: the MP4 (generate) or the plot PNG (evaluate), with Range and ETag; for a finished batch a
    JSON manifest (each item's id, status, result URL, scores and error) with a summary of the scores."""
    if job.kind == BATCH:
        require_finished(job)
        return JSONResponse(manifest(job, store))
    refuse_expired(job, config)
    if job.status != Status.SUCCEEDED:
        if job.status.is_terminal:
            raise ApiError(409, "Conflict", f"job {job.id} {job.status}; it has no result", error=job.error)
        raise ApiError(409, "Conflict", f"job {job.id} is {job.status}; the result is here once it succeeded",
                       {"Retry-After": "5"})  # fmt: skip
    media_type = (job.result or {}).get("media_type", "video/mp4")
    if media_type is None:  # an evaluate job run with plot false: its scores are all there is
        raise ApiError(404, "Not Found", f"job {job.id} has no result file (no plot was asked for); its scores are "
                       f"in GET /v1/jobs/{job.id}")  # fmt: skip
    path = files.result_path(job.id, media_type)
    if not path.is_file():
        raise ApiError(404, "Not Found", f"the result of job {job.id} is no longer stored")
    suffix = path.suffix
    return FileResponse(path, media_type=media_type, filename=f"{job.id}{suffix}")


@router.get("/{job_id}/archive", response_class=FileResponse, responses={**FILE_RESPONSES, **responses(404, 409, 410)})
def archive(job: OwnedJob, files: Files, store: Store, config: Config):
    """A finished batch's results in one zip: NNNN-<child id>.mp4 per succeeded item (an evaluate item: its plot,
    .png) and manifest.json (the result's manifest). Built once, into the results folder; Range and ETag."""
    if job.kind != BATCH:
        raise ApiError(404, "Not Found", f"job {job.id} is {_a(job.kind)} job; only a batch has an archive")
    refuse_expired(job, config)
    require_finished(job)
    path = files.result_path(job.id, "application/zip")
    if not path.is_file():
        build_archive(job, store, files, path)
    return FileResponse(path, media_type="application/zip", filename=f"batch-{job.id}.zip")


def refuse_expired(job: Job, config) -> None:
    if job.status == Status.EXPIRED:
        kept = f"results are kept for {format_duration(config.retention_seconds)} after their job finishes"
        if config.max_disk_bytes is not None:
            kept += ", the oldest less long when the server's disk cap is reached"
        raise ApiError(410, "Gone", f"the result of job {job.id} has expired ({kept}); submit the job again")


def require_finished(batch: Job) -> None:
    if not batch.status.is_terminal:
        raise ApiError(409, "Conflict", f"batch {batch.id} is {batch.status}; its manifest and archive are here once "
                       "every item has finished", {"Retry-After": "5"})  # fmt: skip


def manifest(batch: Job, store) -> dict:
    """Each item in order (index, id, status, result_url, scores, error) and a summary: per metric of the `avgen
    eval` rows, the mean, the half-width of its 95% confidence interval (mean ± ci95) and n, over the scored
    items, computed as `avgen eval` computes its summary (eval.run.summary_stats)."""
    items = []
    for index, child in enumerate(store.children(batch.id)):
        succeeded = child.status == Status.SUCCEEDED
        items.append({
            "index": index, "id": child.id, "kind": child.kind, "status": child.status.value,
            "result_url": f"/v1/jobs/{child.id}/result" if succeeded and (child.result or {}).get("media_type")
            else None,
            "scores": (child.result or {}).get("scores"), "error": child.error,
        })  # fmt: skip
    rows = [item["scores"] for item in items if item["scores"]]
    metrics = {metric: {"mean": mean, "ci95": half, "n": n} for metric, (mean, half, n) in summary_stats(rows).items()}
    counts = {s.value: sum(item["status"] == s for item in items) for s in Status}
    return {"id": batch.id, "status": batch.status.value, "items": items,
            "summary": {"items": len(items), "scored": len(rows), "counts": counts, "metrics": metrics}}  # fmt: skip


def build_archive(batch: Job, store, files, path) -> None:
    listing = manifest(batch, store)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:  # MP4s are compressed
        for item in listing["items"]:
            if item["result_url"] is None:
                continue
            child = store.job(item["id"])
            source = files.result_path(child.id, child.result["media_type"])
            if source.is_file():
                z.write(source, f"{item['index']:04d}-{child.id}{source.suffix}")
        z.writestr("manifest.json", json.dumps(listing, indent=1), zipfile.ZIP_DEFLATED)
