"""What handlers get injected: the store, the artifacts, the config, and the caller (the owner of jobs/uploads)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from api.artifacts import Artifacts
from api.config import ServiceConfig
from api.problems import ApiError
from api.store import Job, JobStore

ANONYMOUS = "anonymous"


def get_config(request: Request) -> ServiceConfig:
    return request.app.state.config


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_artifacts(request: Request) -> Artifacts:
    return request.app.state.artifacts


def owner_of_key(key: str) -> str:
    """The owner a key stands for: a digest, so the key itself is never stored."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def get_caller(request: Request) -> str:
    keys = request.app.state.config.api_keys
    if not keys:
        return ANONYMOUS
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="avgen"'}
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "Unauthorized", "send the header 'Authorization: Bearer <API key>'", challenge)
    given_bytes = given.strip().encode()
    match = None
    for key in keys:  # compare with every key, so the time taken does not tell which one nearly matched
        if hmac.compare_digest(given_bytes, key.encode()):
            match = key
    if match is None:
        raise ApiError(401, "Unauthorized", "the API key is not valid", challenge)
    return owner_of_key(match)


Store = Annotated[JobStore, Depends(get_store)]
Files = Annotated[Artifacts, Depends(get_artifacts)]
Config = Annotated[ServiceConfig, Depends(get_config)]
Caller = Annotated[str, Depends(get_caller)]


def get_owned_job(job_id: str, store: Store, caller: Caller) -> Job:
    job = store.get(caller, job_id)
    if job is None:  # another owner's job is not told apart from a missing one
        raise ApiError(404, "Not Found", f"no job {job_id!r}")
    return job


OwnedJob = Annotated[Job, Depends(get_owned_job)]
