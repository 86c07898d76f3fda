"""The worker pool, driver side (runs inside `avgen serve`): N WorkerActors fed from the job store.

    pool = start_pool(config, store, artifacts)   # ray.init (RAY_ADDRESS joins a cluster), starts the actors
    pool.ready()                                   # at least one actor has loaded its model
    pool.stop(grace_seconds=30)

Data flow. A dispatcher thread, every `poll_seconds`: requeue_expired; for each idle, loaded actor, lease a
job and start its consumer (on a pool of reused threads: each thread keeps a store connection open); for each
running job, heartbeat its lease and forward a requested cancel to its actor. The consumer builds the spec
(uploads read here, as bytes: nothing travels through a shared disk), iterates the actor's streaming generator,
one event per sampler step, and writes them to the store under the job's lease token: Progress → set_progress;
Succeeded → the DRIVER saves the result bytes (Artifacts) and finish(succeeded); Failed → finish(failed,
{"type", "detail"}); Canceled → finish(canceled).

Failure. Ray runs a task at least once; `finish` is a conditional UPDATE on the lease token, so a job
completes exactly once. An actor or node that dies mid-job surfaces as a Ray error in the consumer: the
job is given back under its token (store.requeue: queued again with its attempt count, or failed
worker-lost after max_attempts) and the dead actor is replaced. Heartbeats come from the dispatcher only
while the consumer runs, so a hung or dead driver lets the lease expire and requeue_expired brings the job
back. A lost lease (set_progress says False) cancels the actor's run, since its work can no longer count.

Hung workers. An actor can be alive to Ray yet never answer again (stuck in native code, deadlocked, its process
stopped): its job would stay running for ever, heartbeats and all. So the dispatcher pings each loaded actor
(`ready`, answered on another of the actor's threads) every lease_seconds/4, and kills the actor when a ping stays
unanswered for lease_seconds, or when its run sent no event for hang_seconds (a generous backstop for a run thread
stuck while the others answer). The consumer then sees the Ray error and gives the job back (reason worker-hung),
as for a death. The ping also finds an actor that died idle (its node left), before a job is leased to it.

Size. A number of workers is kept as given (a dead actor is replaced). "auto" (auto=True) re-reads the cluster's
resources every resize_seconds and keeps worker_count("auto", ...) actors: it grows when a node joins, and when one
leaves it does not replace the lost actors beyond what the cluster can now hold.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from api.artifacts import Artifacts
from api.store import Job, JobStore
from workers.actor import new_actor, start_run
from workers.jobs import INTERNAL, INVALID_REQUEST, Canceled, EvaluateSpec, Failed, GenerateSpec, Progress, Succeeded

log = logging.getLogger(__name__)

RELOAD_SECONDS = 10.0  # between attempts to start an actor whose model failed to load
RESIZE_SECONDS = 5.0  # how often a pool sized "auto" re-reads the cluster's resources
MAX_CONSUMERS = 1024  # threads streaming jobs' events (one a running job, reused after)
HANG_SECONDS = 600.0  # a run that sends no event (progress, result) for this long is taken for hung
SUFFIX_BY_KIND = {"video": ".mp4", "audio": ".wav", "image": ".png"}


class _BadInput(ValueError):
    """The stored spec cannot become a job (a missing upload, an unfinished parent job); message says why."""


@dataclass(eq=False)  # a slot is itself: compared by identity
class _Slot:
    actor: Any
    ready_ref: Any
    loaded: bool = False
    dead: bool = False
    job: Job | None = None
    run: Future | None = None  # the consumer of its latest job
    last_heartbeat: float = 0.0
    cancel_sent: bool = False
    last_event: float = 0.0  # monotonic time of the current run's latest event (or of its lease)
    ping_ref: Any = None  # the ping to this actor not answered yet, if any
    ping_sent: float = 0.0
    hung: bool = False  # the pool killed this actor for not answering
    retry_at: float = 0.0  # monotonic time before which a dead slot is not restarted (a model that fails to load)
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


class Pool:
    def __init__(
        self,
        store: JobStore,
        artifacts: Artifacts,
        checkpoint: str | Path | None,
        workers: int,
        device: str = "cpu",
        threads: int = 1,
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        poll_seconds: float = 0.2,
        auto: bool = False,
        hang_seconds: float = HANG_SECONDS,
        resize_seconds: float = RESIZE_SECONDS,
    ):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.store, self.artifacts = store, artifacts
        self.checkpoint, self.device, self.threads = checkpoint, device, threads
        self.lease_seconds, self.max_attempts, self.poll_seconds = lease_seconds, max_attempts, poll_seconds
        self.auto, self.hang_seconds, self.resize_seconds = auto, hang_seconds, resize_seconds
        self.target = workers  # how many actors to keep; "auto" updates it from the cluster's resources
        self._resized_at = time.monotonic()
        self.slots = [self._new_slot() for _ in range(workers)]
        self._stopping = threading.Event()
        self._consumers = ThreadPoolExecutor(MAX_CONSUMERS, thread_name_prefix="avgen-job")  # threads are reused
        self._dispatcher = threading.Thread(target=self._dispatch, name="avgen-pool", daemon=True)
        self._dispatcher.start()

    def _new_slot(self) -> _Slot:
        actor = new_actor(self.checkpoint, self.device, self.threads)
        return _Slot(actor, actor.ready.remote())

    def ready(self) -> bool:
        return not self._stopping.is_set() and any(s.loaded and not s.dead for s in self.slots)

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Lease no more jobs; let running ones finish for up to grace_seconds; give the rest back to the queue
        (queued again whatever their attempt count: a shutdown is not the job's fault) and end the actors."""
        self._stopping.set()
        self._dispatcher.join()
        runs = [slot.run for slot in self.slots if slot.run is not None]
        wait(runs, timeout=grace_seconds)
        for slot in self.slots:
            job = slot.job
            if job is not None:
                self.store.requeue(job.id, job.lease_token, "shutdown", max_attempts=job.attempts + 1)
            ray.kill(slot.actor)
        wait(runs, timeout=10.0)  # their actors are gone: they end at once, and touch the store no more
        self._consumers.shutdown(wait=False)

    # -- dispatcher thread ------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            try:
                self._tick()
            except Exception:  # noqa: BLE001 (the loop must outlive one bad tick; the store keeps the truth)
                log.exception("pool dispatcher tick failed")
            self._stopping.wait(self.poll_seconds)

    def _tick(self) -> None:
        self.store.requeue_expired(max_attempts=self.max_attempts)
        self._resize()
        for slot in self.slots:
            if not slot.loaded:
                done, _ = ray.wait([slot.ready_ref], timeout=0)
                if not done:
                    continue
                try:
                    slot.loaded = ray.get(done[0])
                except ray.exceptions.RayError:
                    log.exception("a worker actor failed to load; starting another in %s s", RELOAD_SECONDS)
                    slot.dead, slot.retry_at = True, time.monotonic() + RELOAD_SECONDS
                    continue
            self._watch(slot)
            job = slot.job
            if job is None:
                if not slot.dead and not self._stopping.is_set():
                    self._start(slot)
                continue
            if time.monotonic() - slot.last_heartbeat > self.lease_seconds / 4:
                slot.last_heartbeat = time.monotonic()
                self.store.heartbeat(job.id, job.lease_token, self.lease_seconds)
            if not slot.cancel_sent and (now := self.store.job(job.id)) is not None and now.cancel_requested:
                slot.cancel_sent = True
                slot.actor.cancel.remote(job.id)

    def _resize(self) -> None:
        """Drop the dead idle actors (after their retry delay), and with "auto" the loading ones beyond what the
        cluster now holds (re-read every resize_seconds); start new ones up to the target."""
        now = time.monotonic()
        if self.auto and now - self._resized_at >= self.resize_seconds:
            self._resized_at = now
            self.target = worker_count("auto", self.device, self.threads, ray.cluster_resources())
        gone = [s for s in self.slots if s.dead and s.job is None and now >= s.retry_at]
        loading = [s for s in reversed(self.slots) if not s.loaded and not s.dead]
        gone += loading[: max(0, len(self.slots) - len(gone) - self.target)]  # waiting for resources now gone
        if not gone and len(self.slots) >= self.target:
            return
        for slot in gone:
            ray.kill(slot.actor)
        kept = [s for s in self.slots if s not in gone]
        self.slots = kept + [self._new_slot() for _ in range(self.target - len(kept))]  # a new list (for readers)

    def _start(self, slot: _Slot) -> None:
        """Lease a job for an idle, loaded actor and start its consumer thread."""
        if not (job := self.store.lease(slot.worker_id, self.lease_seconds)):
            return
        now = time.monotonic()
        slot.job, slot.cancel_sent, slot.last_heartbeat, slot.last_event = job, False, now, now
        slot.ping_ref, slot.ping_sent = None, now
        try:
            slot.run = self._consumers.submit(self._consume, slot, job)
        except BaseException:  # no consumer (no thread could start): stop heartbeating, so that the lease expires
            slot.job = None
            raise
        slot.run.add_done_callback(_log_error)

    def _watch(self, slot: _Slot) -> None:
        """Ping a loaded actor every lease_seconds/4. One that died while idle is marked dead (a busy one's consumer
        sees its death). One whose ping stays unanswered for lease_seconds, or whose run sent no event for
        hang_seconds, is killed: a busy one's consumer then gives its job back, an idle one is marked dead."""
        now = time.monotonic()
        if slot.ping_ref is not None and ray.wait([slot.ping_ref], timeout=0)[0]:
            ref, slot.ping_ref = slot.ping_ref, None
            try:
                ray.get(ref)
            except ray.exceptions.RayError:  # it died (its node left): not worth a job's attempt to find out
                slot.dead = slot.dead or slot.job is None
                return
        if slot.ping_ref is None and now - slot.ping_sent >= self.lease_seconds / 4:
            slot.ping_ref, slot.ping_sent = slot.actor.ready.remote(), now
        if slot.ping_ref is not None and now - slot.ping_sent > self.lease_seconds:
            why = f"answered no ping for {now - slot.ping_sent:.0f} s"
        elif slot.job is not None and now - slot.last_event > self.hang_seconds:
            why = f"sent no event for {now - slot.last_event:.0f} s"
        else:
            return
        if not slot.hung:
            log.warning("a worker actor %s (job %s): killing it", why, slot.job.id if slot.job else None)
            slot.hung = True
            ray.kill(slot.actor)
        slot.dead = slot.dead or slot.job is None

    # -- one job, on its consumer thread ----------------------------------------------------------------------

    def _consume(self, slot: _Slot, job: Job) -> None:
        token = job.lease_token
        try:
            try:
                spec = self._spec(job)
            except _BadInput as e:
                self.store.finish(job.id, token, "failed", error={"type": INVALID_REQUEST, "detail": str(e)})
                return
            for ref in start_run(slot.actor, job.id, spec):
                event = ray.get(ref)
                slot.last_event = time.monotonic()
                if isinstance(event, Progress):
                    if not self.store.set_progress(job.id, token, min(1.0, max(0.0, event.fraction)), event.message):
                        slot.actor.cancel.remote(job.id)  # the lease is gone: this run can no longer count
                elif isinstance(event, Succeeded):
                    self._succeed(job, event)
                    return
                elif isinstance(event, Failed):
                    self.store.finish(job.id, token, "failed", error={"type": event.error_type, "detail": event.detail})
                    return
                elif isinstance(event, Canceled):
                    self.store.finish(job.id, token, "canceled")
                    return
            self.store.finish(
                job.id, token, "failed", error={"type": INTERNAL, "detail": "the run ended without a result"}
            )
        except ray.exceptions.RayError as e:  # the actor or its node died (or the object holding an event was lost)
            log.warning("job %s lost its worker (%s); giving it back to the queue", job.id, type(e).__name__)
            slot.dead = True
            if self._stopping.is_set():  # the shutdown took its worker (a SIGTERM to the whole process group
                # reaches Ray's processes too): not the job's fault, so it costs no attempt, as in stop()
                self.store.requeue(job.id, token, "shutdown", max_attempts=job.attempts + 1)
            else:
                self.store.requeue(job.id, token, "worker-hung" if slot.hung else "worker-died", self.max_attempts)
        except Exception as e:  # noqa: BLE001 (the job fails, the pool lives on)
            log.exception("job %s failed in the pool", job.id)
            detail = f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
            self.store.finish(job.id, token, "failed", error={"type": INTERNAL, "detail": detail})
        finally:
            slot.job = None

    def _succeed(self, job: Job, event: Succeeded) -> None:
        path = self.artifacts.save_result(job.id, event.result, event.media_type) if event.result else None
        result = {
            "media_type": event.media_type or None,
            "path": None if path is None else str(path),
            "metadata": event.metadata,
            "scores": event.scores,
        }
        self.store.finish(job.id, job.lease_token, "succeeded", result=result)

    def _spec(self, job: Job) -> GenerateSpec | EvaluateSpec:
        spec = job.spec
        if job.kind == "generate":
            return GenerateSpec(
                text=spec.get("text", ""), seconds=spec.get("seconds"), seed=spec.get("seed", 0),
                steps=spec.get("steps"), cfg=spec.get("cfg"), sampler=spec.get("sampler"), shift=spec.get("shift"),
                score=spec.get("score", True),
                reference_image=self._upload(job.owner, spec.get("reference_image"), "reference_image"),
                audio=self._upload(job.owner, spec.get("audio"), "audio"),
            )  # fmt: skip
        if job.kind == "evaluate":
            backend, plot = spec.get("backend", "learned"), spec.get("plot", True)
            if spec.get("job") is not None:
                parent = self.store.get(job.owner, spec["job"])
                media_type = (parent.result or {}).get("media_type") if parent is not None else None
                if parent is None or parent.status != "succeeded" or media_type is None:
                    raise _BadInput(f"job {spec['job']} has no finished result to evaluate")
                path = self.artifacts.result_path(parent.id, media_type)  # not the path stored: the data dir may move
                if not path.is_file():
                    raise _BadInput(f"the result of job {spec['job']} is no longer stored")
                return EvaluateSpec(clip=path.read_bytes(), backend=backend, name=path.name, plot=plot)
            info = self.artifacts.upload_info(job.owner, spec.get("upload"))
            clip = self._upload(job.owner, spec.get("upload"), "upload")
            name = f"{spec['upload']}{SUFFIX_BY_KIND.get(info['kind'], '.mp4')}"
            return EvaluateSpec(clip=clip, backend=backend, name=name, plot=plot)
        raise _BadInput(f"unknown job kind {job.kind!r}: generate or evaluate")

    def _upload(self, owner: str, upload_id: str | None, name: str) -> bytes | None:
        if upload_id is None:
            if name == "upload":
                raise _BadInput("an evaluate job needs an upload or a job")
            return None
        data = self.artifacts.upload_bytes(owner, upload_id)
        if data is None:
            raise _BadInput(f"{name}: upload {upload_id} not found (uploads are per owner and may have expired)")
        return data


def _log_error(run: Future) -> None:
    if (error := run.exception()) is not None:  # the job's lease then expires, and it goes back to the queue
        log.error("a job's consumer failed", exc_info=error)


def start_pool(config: Any, store: JobStore, artifacts: Artifacts) -> Pool:
    """Join Ray (RAY_ADDRESS: a cluster's address; else a local one) and start the pool `config` describes:
    checkpoint, device (default: cuda when the cluster has GPUs), threads per CPU actor, workers (a number,
    or "auto": one per GPU, else one per `threads` CPUs, following the cluster as nodes join and leave),
    lease_seconds, max_attempts, hang_seconds."""
    if not ray.is_initialized():
        on_sigterm = signal.getsignal(signal.SIGTERM)
        # without RAY_ADDRESS a Ray of our own: "local", never None, which joins whatever cluster this machine
        # last started (another server's, a test's) and dies with it
        address = os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        if threading.current_thread() is threading.main_thread():  # ray.init took SIGTERM over (exit code 15):
            signal.signal(signal.SIGTERM, on_sigterm)  # give it back, so that serve ends the same with or without Ray
    cluster = ray.cluster_resources()
    device = getattr(config, "device", None) or ("cuda" if cluster.get("GPU", 0) else "cpu")
    threads = max(1, int(getattr(config, "threads", 1) or 1))
    workers = getattr(config, "workers", "auto")
    return Pool(
        store, artifacts, getattr(config, "checkpoint", None), worker_count(workers, device, threads, cluster),
        device=device, threads=threads, auto=workers == "auto",
        lease_seconds=float(getattr(config, "lease_seconds", 60.0)),
        max_attempts=int(getattr(config, "max_attempts", 3)),
        hang_seconds=float(getattr(config, "hang_seconds", HANG_SECONDS)),
    )  # fmt: skip


def worker_count(workers: int | str, device: str, threads: int, cluster: dict[str, float]) -> int:
    """How many actors: a number as given, or "auto": one per GPU of the cluster (device cuda), else one per
    `threads` CPUs (at least one)."""
    if workers != "auto":
        return int(workers)
    if str(device).startswith("cuda"):
        return max(1, int(cluster.get("GPU", 0)))
    return max(1, int(cluster.get("CPU", 1)) // max(1, threads))
