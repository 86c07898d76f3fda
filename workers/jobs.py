"""What a job is while it lives: its input, its status, and the events its run emits. Plain Python
(no Ray, no HTTP): the store, the workers and the API all speak it. Everything here pickles, since
inputs and results travel through Ray's object store (media as bytes, never a shared disk path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.EXPIRED})


# --- job input ---


@dataclass(frozen=True)
class GenerateSpec:
    """A generation job: the API body's fields, with uploads as the files' bytes."""

    text: str = ""
    seconds: float | None = None  # None: as long as the text (or the given audio) takes
    seed: int = 0
    steps: int | None = None  # None: the checkpoint's defaults, as for the rest
    cfg: float | None = None  # classifier-free guidance scale (GenerationRequest.guidance)
    sampler: str | None = None
    shift: float | None = None
    score: bool = True  # score lip-sync and flicker of the result
    reference_image: bytes | None = None  # an image file's bytes (PNG, JPEG, ...)
    audio: bytes | None = None  # an audio (or video) file's bytes: audio-driven, kept in the output


@dataclass(frozen=True)
class EvaluateSpec:
    """An evaluation job: one clip file's bytes, scored like a row of `avgen eval`."""

    clip: bytes
    backend: str = "learned"
    name: str = "clip.mp4"  # the upload's file name: the row's `path`, and its suffix a hint to the decoder
    plot: bool = True  # also return the row's plot (PNG)


# --- events a run yields: Started, Progress..., then exactly one of Succeeded / Failed / Canceled ---

INVALID_REQUEST = "invalid-request"  # Failed.error_type: the input cannot be run as given (detail says why)
INTERNAL = "internal"  # Failed.error_type: our fault; detail is one line, never a traceback


@dataclass(frozen=True)
class Started:
    """The input was valid and the work began (the job is running)."""


@dataclass(frozen=True)
class Progress:
    fraction: float  # of the whole job, in [0, 1], never decreasing
    message: str
    step: int  # sampler steps done so far, over all chunks (0 for evaluations)
    steps: int  # sampler steps in all (0 for evaluations)


@dataclass(frozen=True)
class Succeeded:
    result: bytes  # the MP4 (generate) or the plot PNG (evaluate; b"" without a plot)
    media_type: str  # of `result`: "video/mp4", "image/png", or "" when empty
    metadata: dict[str, str] = field(default_factory=dict)  # the MP4's tags (generate)
    scores: dict | None = None  # the `avgen eval` row (None when not asked to score)


@dataclass(frozen=True)
class Failed:
    error_type: str  # INVALID_REQUEST or INTERNAL
    detail: str  # one line a person can act on


@dataclass(frozen=True)
class Canceled:
    """Stopped on request; nothing was kept."""


Event = Started | Progress | Succeeded | Failed | Canceled
FINAL_EVENTS = (Succeeded, Failed, Canceled)
