"""/v1/webhooks: the caller's webhook signing secret, to read and to rotate (api/webhooks.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from api.deps import Caller
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
