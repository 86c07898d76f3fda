"""/v1/jobs: submit, read, list, cancel, follow (SSE) and fetch the result of jobs."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from api.deps import Caller, Config, Files, OwnedJob, Store
from api.problems import ApiError
from api.schemas import UPLOAD_FIELDS, GenerateBody, JobBody
from api.store import Conflict, IdempotencyConflict, Job
from avgen.config import Config as ModelConfig
from avgen.pipeline import GenerationError, GenerationRequest, resolve
from workers.jobs import Status

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0


def urls(job_id: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    return {"self": base, "events": f"{base}/events", "result": f"{base}/result", "cancel": f"{base}/cancel"}


def job_view(job: Job, store) -> dict:
    result = job.result or {}
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status.value,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "queue_position": store.queue_position(job.id) if job.status == Status.QUEUED else None,
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
        "urls": urls(job.id),
    }


def check_uploads(body, owner: str, files) -> None:
    for field, kinds in UPLOAD_FIELDS.items():
        upload_id = getattr(body, field, None)
        if upload_id is None:
            continue
        info = files.upload_info(owner, upload_id)
        if info is None:
            raise ApiError(
                422, "Unprocessable Content", f"{field}: no upload {upload_id!r}; POST the file to /v1/uploads first"
            )
        if info["kind"] not in kinds:
            raise ApiError(
                422, "Unprocessable Content", f"{field}: upload {upload_id} is {info['kind']}, not {' or '.join(kinds)}"
            )


def check_runnable(body: GenerateBody) -> None:
    """What the model would refuse, found now (no model loaded): the checks of avgen.pipeline.resolve."""
    if body.audio is not None:
        return  # the length and the phones come from the audio; the worker reads it
    request = GenerationRequest(text=body.text, seconds=body.seconds, steps=body.steps, guidance=body.cfg,
                                shift=body.shift, sampler=body.sampler, seed=body.seed)  # fmt: skip
    try:
        resolve(request, ModelConfig())
    except GenerationError as e:
        raise ApiError(422, "Unprocessable Content", str(e)) from None


@router.post("", status_code=202)
def submit(
    body: Annotated[JobBody, Body()],
    response: Response,
    store: Store,
    files: Files,
    config: Config,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
):
    check_uploads(body, caller, files)
    if isinstance(body, GenerateBody):
        check_runnable(body)
    counts = store.counts(caller)
    if counts[Status.QUEUED] + counts[Status.RUNNING] >= config.max_queued_per_key:
        raise ApiError(429, "Too Many Requests", f"this key already has {config.max_queued_per_key} jobs "
                       "queued or running; wait for one to finish", {"Retry-After": "10"})  # fmt: skip
    if store.counts()[Status.QUEUED] >= config.max_queue:
        raise ApiError(429, "Too Many Requests", "the queue is full; try again later", {"Retry-After": "30"})
    spec = body.model_dump(exclude={"kind"})
    try:
        job, created = store.create(caller, body.kind, spec, idempotency_key=idempotency_key)
    except IdempotencyConflict as e:
        raise ApiError(422, "Unprocessable Content", str(e)) from None
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return {"id": job.id, "status": job.status.value, "urls": urls(job.id)}


@router.get("")
def list_jobs(
    store: Store,
    caller: Caller,
    status: Status | None = None,
    kind: Literal["generate", "evaluate"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
):
    try:
        jobs, next_cursor = store.list(caller, status=status, kind=kind, limit=limit, cursor=cursor)
    except ValueError as e:
        raise ApiError(422, "Unprocessable Content", str(e)) from None
    return {"jobs": [job_view(j, store) for j in jobs], "next_cursor": next_cursor}


@router.get("/{job_id}")
def get_job(job: OwnedJob, store: Store):
    return job_view(job, store)


@router.post("/{job_id}/cancel")
def cancel(job: OwnedJob, store: Store, caller: Caller):
    try:
        job = store.request_cancel(caller, job.id)
    except Conflict as e:
        raise ApiError(409, "Conflict", str(e)) from None
    return job_view(job, store)


@router.get("/{job_id}/events")
async def events(job: OwnedJob, store: Store, request: Request, last_event_id: Annotated[str | None, Header()] = None):
    try:
        after = int(last_event_id) if last_event_id else 0
    except ValueError:
        raise ApiError(
            400, "Bad Request", f"Last-Event-ID must be an event id (an integer), not {last_event_id!r}"
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


@router.get("/{job_id}/result")
def result(job: OwnedJob, files: Files, config: Config):
    if job.status == Status.EXPIRED:
        from api.config import format_duration

        kept = f"results are kept for {format_duration(config.retention_seconds)} after their job finishes"
        if config.max_disk_bytes is not None:
            kept += ", the oldest less long when the server's disk cap is reached"
        raise ApiError(410, "Gone", f"the result of job {job.id} has expired ({kept}); submit the job again")
    if job.status != Status.SUCCEEDED:
        if job.status.is_terminal:
            raise ApiError(409, "Conflict", f"job {job.id} {job.status}; it has no result", error=job.error)
        raise ApiError(409, "Conflict", f"job {job.id} is {job.status}; the result is here once it succeeded",
                       {"Retry-After": "5"})  # fmt: skip
    media_type = (job.result or {}).get("media_type", "video/mp4")
    path = files.result_path(job.id, media_type)
    if not path.is_file():
        raise ApiError(404, "Not Found", f"the result of job {job.id} is no longer stored")
    suffix = path.suffix
    return FileResponse(path, media_type=media_type, filename=f"{job.id}{suffix}")
