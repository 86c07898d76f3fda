"""Request bodies of the HTTP API: flat JSON, unknown fields refused, ranges checked here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from avgen.limits import MAX_SECONDS, MAX_STEPS, MAX_TEXT_CHARS

UploadId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="an id from POST /v1/uploads")]
JobId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="an id from POST /v1/jobs")]
MAX_BATCH_ITEMS = 1000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Webhook(_Body):
    """Where to POST the job, signed (Standard Webhooks), when one of these events happens to it."""

    url: str = Field(max_length=2000, description="an http or https URL, not this server's own")
    events: list[Literal["started", "completed"]] = Field(
        ["completed"], min_length=1, max_length=2, description="started; completed: succeeded, failed or canceled"
    )

    @model_validator(mode="after")
    def _once_each(self):
        self.events = sorted(set(self.events))
        return self


class _Job(_Body):
    webhook: Webhook | None = None

    def spec(self) -> dict:
        """The job's stored spec: the body without its kind, with the webhook only when there is one."""
        return self.model_dump(exclude={"kind", "webhook"}) | (
            {"webhook": self.webhook.model_dump()} if self.webhook is not None else {}
        )


class GenerateBody(_Job):
    kind: Literal["generate"]
    text: str = Field("", max_length=MAX_TEXT_CHARS)
    seconds: float | None = Field(None, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    seed: int = Field(0, ge=0, lt=2**63)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    cfg: float | None = Field(None, ge=0, le=30, allow_inf_nan=False)
    sampler: Literal["euler", "heun"] | None = None
    shift: float | None = Field(None, gt=0, le=100, allow_inf_nan=False)
    score: bool = True
    reference_image: UploadId | None = None  # an image upload
    audio: UploadId | None = None  # an audio or video upload: audio-driven, kept in the output


class EvaluateBody(_Job):
    kind: Literal["evaluate"]
    upload: UploadId | None = None  # a video upload, or:
    job: JobId | None = None  # a succeeded generate job of the caller's: its result MP4
    backend: Literal["landmarks", "learned"] = "learned"
    plot: bool = True

    @model_validator(mode="after")
    def _one_clip(self):
        if (self.upload is None) == (self.job is None):
            raise ValueError(
                "give exactly one of upload (a video upload id) or job (the id of your succeeded generate job)"
            )
        return self


ItemBody = Annotated[GenerateBody | EvaluateBody, Field(discriminator="kind")]


class BatchBody(_Job):
    """One parent job and a child job per item; the items run in parallel across the workers."""

    kind: Literal["batch"]
    items: list[ItemBody] = Field(min_length=1, max_length=MAX_BATCH_ITEMS, description="generate or evaluate bodies")


JobBody = Annotated[GenerateBody | EvaluateBody | BatchBody, Field(discriminator="kind")]
KINDS = ("generate", "evaluate", "batch")  # the `kind` tags of JobBody

# which upload kinds each upload field accepts
UPLOAD_FIELDS = {"reference_image": ("image",), "audio": ("audio", "video"), "upload": ("video",)}


# --- answers ---


class JobView(BaseModel):
    """A job as GET /v1/jobs/{id} shows it."""

    id: str
    kind: Literal["generate", "evaluate", "batch"]
    parent: str | None = Field(description="the batch this job is an item of")
    status: Literal["queued", "running", "succeeded", "failed", "canceled", "expired"]
    progress: float = Field(description="0..1; of a batch: the fraction of its items finished")
    progress_message: str | None
    queue_position: int | None = Field(description="queued: how many jobs are leased before this one (0: next)")
    estimated_start_at: float | None = Field(
        description="queued: an ESTIMATE of when it starts (epoch seconds): now + queue_position / workers x the "
        "mean run time of the last succeeded jobs of its kind; null without such history"
    )
    children: dict[str, int] | None = Field(description="a batch: its items counted by status, and their total")
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    attempts: int
    cancel_requested: bool
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    scores: dict[str, Any] | None
    spec: dict[str, Any]
    urls: dict[str, str]


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None
