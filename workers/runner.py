"""JobRunner: a loaded model (and sync scorer) that runs jobs as streams of events. Ray-free and
HTTP-free: a Ray actor holds one and forwards `run`'s events; tests drive it directly.

    runner = JobRunner(checkpoint)
    for event in runner.run(GenerateSpec(text="hello", seconds=2), cancelled=lambda: flag.is_set()):
        ...  # Started, Progress..., then exactly one Succeeded / Failed / Canceled

Generation runs on a worker thread so that progress is yielded as the sampler steps; `cancelled`
is asked at every sampler step (from that thread) and before each event is handed on (from the
caller's): once it says True no more Progress is yielded, the sampler stops within one step,
nothing is kept, and `Canceled` comes last. Inputs and results are bytes; files exist only in a
private temporary folder that is always removed. One runner may run several jobs at once.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from avgen.media import MediaError, read_audio, read_image
from avgen.pipeline import GenerationError, GenerationRequest, GenerationStream, Generator, chunk_spans, write_stream
from eval.run import CLIP_SUFFIXES, EvalSettings, SyncScorer, score_clip, write_plots
from workers.jobs import (
    INTERNAL,
    INVALID_REQUEST,
    Canceled,
    EvaluateSpec,
    Event,
    Failed,
    GenerateSpec,
    Progress,
    Started,
    Succeeded,
)

log = logging.getLogger(__name__)

GENERATED_SCORER = "learned"  # the sync backend for generated clips (works on any face, no face detector)
SCORING_SHARE = 0.9  # of a scored generation's progress that sampling takes; scoring the rest
_PLOT_LOCK = threading.Lock()  # matplotlib's pyplot keeps global state: one plot at a time


class _Cancelled(Exception):
    """Raised from the progress callback to unwind the sampler when the job is cancelled."""


class _Invalid(ValueError):
    """Input rejected before any work; the message is the detail."""


class JobRunner:
    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu"):
        self.generator = Generator.load(checkpoint, device=device, warn=log.warning)
        self._scorers = {GENERATED_SCORER: SyncScorer(EvalSettings(backend=GENERATED_SCORER))}
        self._lock = threading.Lock()

    def scorer(self, backend: str) -> SyncScorer:
        """The sync scorer for `backend`, loaded once (ValueError for one this runner cannot load)."""
        with self._lock:
            if backend not in self._scorers:
                self._scorers[backend] = SyncScorer(EvalSettings(backend=backend))
            return self._scorers[backend]

    def run(self, spec: GenerateSpec | EvaluateSpec, cancelled: Callable[[], bool] = lambda: False) -> Iterator[Event]:
        """Started, Progress..., then exactly one Succeeded / Failed / Canceled. Bad input gives
        Failed(invalid-request) before Started; `cancelled` must be callable from any thread."""
        try:
            workdir = Path(tempfile.mkdtemp(prefix="avgen-job-"))
        except OSError as e:
            yield Failed(INTERNAL, f"no room for the job's temporary files: {_one_line(e, Path('/nonexistent'))}")
            return
        try:
            if cancelled():
                yield Canceled()
                return
            try:
                if isinstance(spec, GenerateSpec):
                    work = self._prepare_generate(spec, cancelled, workdir)
                elif isinstance(spec, EvaluateSpec):
                    work = self._prepare_evaluate(spec, workdir)
                else:
                    raise _Invalid(f"unknown job {type(spec).__name__}: give a GenerateSpec or an EvaluateSpec")
            except (GenerationError, MediaError, _Invalid) as e:
                yield Failed(INVALID_REQUEST, _one_line(e, workdir))
                return
            yield Started()
            yield from work
        except Exception as e:  # noqa: BLE001 (a job's failure is an event, never an exception or a traceback)
            log.exception("job failed")
            yield Failed(INTERNAL, f"{type(e).__name__}: {_one_line(e, workdir)}"[:500])
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    # --- generation ---

    def _prepare_generate(self, spec: GenerateSpec, cancelled: Callable[[], bool], workdir: Path) -> Iterator[Event]:
        request = GenerationRequest(
            text=spec.text, seconds=spec.seconds, steps=spec.steps, guidance=spec.cfg, shift=spec.shift,
            sampler=spec.sampler, seed=spec.seed,
            reference_image=None if spec.reference_image is None
            else read_image(_put(workdir, "reference_image", spec.reference_image)),
            audio=None if spec.audio is None else read_audio(_put(workdir, "audio", spec.audio)),
        )  # fmt: skip
        events: queue.SimpleQueue = queue.SimpleQueue()
        stop = threading.Event()
        share = SCORING_SHARE if spec.score else 1.0
        count = {"step": 0, "steps": 0}

        def progress(fraction: float, message: str) -> None:  # on the worker thread, at every sampler step
            if stop.is_set() or cancelled():
                raise _Cancelled
            count["step"] = min(count["step"] + 1, count["steps"])  # the last calls (vocoding, done) are not steps
            events.put(Progress(share * fraction, message, count["step"], count["steps"]))

        stream = self.generator.open(request, progress)  # validates: GenerationError
        cfg = self.generator.cfg
        passes = len(chunk_spans(stream.frames, cfg.chunk_frames, cfg.overlap_frames))
        passes += stream.metadata.get("avgen_reference") == "first-chunk"  # the first second is denoised alone first
        count["steps"] = passes * int(stream.metadata["avgen_steps"])
        return self._generate(spec, stream, events, stop, count["steps"], cancelled, workdir)

    def _generate(
        self,
        spec: GenerateSpec,
        stream: GenerationStream,
        events: queue.SimpleQueue,
        stop: threading.Event,
        steps: int,
        cancelled: Callable[[], bool],
        workdir: Path,
    ) -> Iterator[Event]:
        out = workdir / "result.mp4"
        done = object()

        def work() -> None:
            try:
                write_stream(stream, out)
                events.put(done)
            except BaseException as e:  # noqa: BLE001 (handed to the caller's thread)
                events.put(e)

        thread = threading.Thread(target=work, name="avgen-job", daemon=True)
        thread.start()
        try:
            while (item := events.get()) is not done:
                if isinstance(item, _Cancelled) or cancelled():
                    stop.set()
                    thread.join()  # the sampler stops within one step; then nothing runs
                    yield Canceled()
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # the caller stopped early (closed the iterator) or it failed: stop the sampler too
            thread.join()
        scores = None
        if spec.score:
            if cancelled():
                yield Canceled()
                return
            yield Progress(SCORING_SHARE, "scoring lip-sync and flicker", steps, steps)
            scores = _clean_row(score_clip(str(out), self._scorers[GENERATED_SCORER]), "result.mp4", workdir)
            yield Progress(1.0, "done", steps, steps)
        if cancelled():
            yield Canceled()
            return
        yield Succeeded(out.read_bytes(), "video/mp4", dict(stream.metadata), scores)

    # --- evaluation ---

    def _prepare_evaluate(self, spec: EvaluateSpec, workdir: Path) -> Iterator[Event]:
        try:
            scorer = self.scorer(spec.backend)
        except ValueError as e:
            raise _Invalid(str(e)) from e
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(spec.name).name)[-80:].lstrip(".")
        if Path(name).suffix.lower() not in CLIP_SUFFIXES:
            name += ".mp4"  # the suffix is the decoder's hint; messages then name the upload as its owner knows it
        clip = _put(workdir, name, spec.clip)
        return self._evaluate(spec, scorer, clip, workdir)

    def _evaluate(self, spec: EvaluateSpec, scorer: SyncScorer, clip: Path, workdir: Path) -> Iterator[Event]:
        yield Progress(0.0, f"scoring {spec.name} ({spec.backend})", 0, 0)
        row = _clean_row(score_clip(str(clip), scorer), spec.name, workdir)
        if row["frames"] is None or row["temporal_flickering"] is None:  # nothing could be measured: the clip's fault
            yield Failed(INVALID_REQUEST, row["error"] or "the clip could not be scored")
            return
        plot = b""
        if spec.plot:
            with _PLOT_LOCK:
                write_plots([row], workdir)
            plot = next((workdir / "plots").glob("*.png")).read_bytes()
        yield Progress(1.0, "done", 0, 0)
        yield Succeeded(plot, "image/png" if plot else "", {}, row)


def _put(workdir: Path, name: str, data: bytes) -> Path:
    path = workdir / name
    path.write_bytes(data)
    return path


def _one_line(e: BaseException, workdir: Path) -> str:
    """The message on one line, without our private folder's path (uploads are named by their field)."""
    return " ".join(str(e).replace(f"{workdir}/", "").split()) or type(e).__name__


def _clean_row(row: dict, name: str, workdir: Path) -> dict:
    """An eval row about an upload, not about our temporary file: its name as `path`, no file identity."""
    row = {k: v for k, v in row.items() if k != "file"}
    row["path"] = name
    if row.get("error"):
        row["error"] = row["error"].replace(f"{workdir}/", "")
    return row
