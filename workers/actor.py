"""WorkerActor: the thin Ray shell around a JobRunner (one loaded model per actor).

    actor = new_actor(checkpoint, device="cpu", threads=1)
    events = actor.run.remote(job_id, spec)          # a Ray streaming generator of ObjectRefs
    for ref in events: event = ray.get(ref)          # Started, Progress per sampler step, ..., one final event
    actor.cancel.remote(job_id)                      # the runner's `cancelled` says True from now on

Each event is yielded as the runner yields it, so the driver sees progress per sampler step, wherever the
actor runs (another node too): inputs and results are bytes inside the specs and events, never file paths.
The actor is threaded (max_concurrency 3) so that `cancel` and `ready` are answered while `run` works;
the pool gives it one job at a time, and pings it with `ready` to tell a busy actor from a hung one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import ray

from workers.jobs import EvaluateSpec, Event, GenerateSpec
from workers.runner import JobRunner

MAX_CONCURRENCY = 3  # run + cancel + ready (the pool's ping)


class WorkerActor:
    def __init__(self, checkpoint: str | Path | None, device: str = "cpu", threads: int = 1):
        import torch

        torch.set_num_threads(max(1, threads))
        self.runner = JobRunner(checkpoint, device=device)
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def ready(self) -> bool:
        return True

    def run(self, job_id: str, spec: GenerateSpec | EvaluateSpec) -> Iterator[Event]:
        with self._lock:
            flag = self._cancel.setdefault(job_id, threading.Event())  # a cancel may arrive before the run
        try:
            yield from self.runner.run(spec, cancelled=flag.is_set)
        finally:
            with self._lock:
                self._cancel.pop(job_id, None)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancel.setdefault(job_id, threading.Event()).set()


RemoteWorkerActor = ray.remote(WorkerActor)


def new_actor(
    checkpoint: str | Path | None,
    device: str = "cpu",
    threads: int = 1,
    resources: dict[str, float] | None = None,
):
    """Start one actor: a whole GPU when device is cuda, else `threads` CPUs; `resources` pins it (tests)."""
    gpu = str(device).startswith("cuda")
    options = {"num_gpus": 1, "num_cpus": 0} if gpu else {"num_cpus": threads}
    options.update({"max_concurrency": MAX_CONCURRENCY, "max_restarts": 0, "resources": resources or {}})
    return RemoteWorkerActor.options(**options).remote(str(checkpoint) if checkpoint else None, device, threads)


def start_run(actor, job_id: str, spec: GenerateSpec | EvaluateSpec):
    """The job's events as a Ray ObjectRefGenerator (each `next` is the ref of the next event)."""
    return actor.run.options(num_returns="streaming").remote(job_id, spec)
