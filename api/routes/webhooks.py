"""/v1/webhooks: the caller's webhook signing secret, to read and to rotate, and a job's deliveries (api/webhooks.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from api.deps import Caller, OwnedJob, Store
from api.problems import responses

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=responses(401))


class WebhookSecret(BaseModel):
    secret: str = Field(
        description="whsec_<base64>: the HMAC-SHA256 key (base64-decoded) of the webhook-signature of every "
        "webhook of this API key's jobs (Standard Webhooks, v1)"
    )


@router.get("/secret", response_model=WebhookSecret)
def read_secret(request: Request, response: Response, caller: Caller):
    """This API key's webhook signing secret (created on first use; no other key's is ever shown)."""
    response.headers["Cache-Control"] = "no-store"
    return {"secret": request.app.state.secrets.get(caller)}


@router.post("/secret/rotate", response_model=WebhookSecret)
def rotate_secret(request: Request, response: Response, caller: Caller):
    """Replace this API key's webhook signing secret with a new one, at once: every delivery from now on (retries
    of earlier ones too) is signed with the new secret."""
    response.headers["Cache-Control"] = "no-store"
    return {"secret": request.app.state.secrets.rotate(caller)}


class DeliveryView(BaseModel):
    id: str = Field(description="the webhook-id header of every attempt")
    job_id: str
    event: Literal["started", "completed"]
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: float | None = Field(description="pending: when the next attempt is due (epoch seconds)")
    last_error: str | None = Field(description="what the last failed attempt got")
    created_at: float
    updated_at: float


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView]


@router.get("/deliveries", response_model=DeliveryList, responses=responses(404, 422))
def deliveries(job: OwnedJob, store: Store):
    """The webhook deliveries of one of your jobs (`?job_id=`), oldest first: each event's status, attempts, and
    the last error, for finding out why a receiver did not hear from a job."""
    return {"deliveries": [{**asdict(d), "next_attempt_at": d.next_attempt_at if d.status == "pending" else None}
                           for d in store.deliveries(job.id)]}  # fmt: skip
