"""The clips: load the checkpoints, write ground truth and generated MP4s (and the mismatched-audio controls), score them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from avgen.timeline import FPS
from results.common import LABELS, LOG_OBJECTIVE, ClipScores, System, finite, fmt, say
from results.training_log import read_training_log, wall_at


def generation_request(sample, seed: int, **settings):
    """The request that regenerates a corpus sample: its transcript and length, its identity's reference
    frame, `seed`; `settings` (steps, guidance, shift, sampler) left None take the checkpoint's defaults."""
    from avgen.data.corpus import reference_frame
    from avgen.pipeline import GenerationRequest

    return GenerationRequest(text=sample.text, seconds=len(sample.frames) / FPS, seed=seed,
                             reference_image=reference_frame(sample), **settings)  # fmt: skip


def load_system(key: str, checkpoint: str | None, logs: Path | None, work: Path) -> System:
    from avgen.checkpoint import CheckpointError, file_hash, read_metadata

    system = System(key, LABELS[key], checkpoint)
    objective = LOG_OBJECTIVE[key]
    if checkpoint is None:
        system.available, system.reason = False, "no checkpoint given"
    elif not Path(checkpoint).is_file():
        system.available, system.reason = False, f"checkpoint {checkpoint} does not exist"
    else:
        copy = work / "checkpoints" / f"{key}.safetensors"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, copy)
        try:
            system.metadata = read_metadata(copy)
        except CheckpointError as e:
            system.available, system.reason = False, str(e)
        else:
            system.checkpoint_hash = file_hash(copy)
            system.steps = int(system.metadata["steps"]) if str(system.metadata.get("steps", "")).isdigit() else None
            system.objective = system.metadata.get("objective")
            objective = system.objective or objective
            system.checkpoint = str(checkpoint)
            system.metadata["_copy"] = str(copy)
    if logs is not None:
        log_path = logs / f"model-{objective}.log.jsonl"
        system.log_path = str(log_path)
        system.log_rows = read_training_log(log_path)
    if system.steps is not None and system.log_rows:
        system.train_seconds, system.train_seconds_note = wall_at(system.log_rows, system.steps)
    return system


def tiled(audio: np.ndarray, length: int) -> np.ndarray:
    audio = np.asarray(audio, np.float32)
    if audio.size == 0:
        return np.zeros(length, np.float32)
    return np.tile(audio, -(-length // audio.size))[:length]


def produce_clips(systems: dict[str, System], samples, args, work: Path) -> None:
    """Write every system's MP4s (and the mismatched-audio MP4s) under work/<system>/."""
    from avgen.media import write_mp4
    from avgen.pipeline import Generator, write_result
    from avgen.timeline import SAMPLES_PER_FRAME

    n = len(samples)
    for key, system in systems.items():
        if not system.available:
            say(f"{system.label}: not available ({system.reason})")
            continue
        folder = work / key
        folder.mkdir(parents=True, exist_ok=True)
        pairs = []
        if key == "gt":
            for i, sample in enumerate(samples):
                path = folder / f"clip{i:03d}.mp4"
                write_mp4(path, sample.frames, sample.audio, fps=FPS)
                system.clips.append(ClipScores(i, str(path)))
                pairs.append((sample.frames, sample.audio))
        else:
            generator = Generator.load(system.metadata["_copy"])
            cfg = generator.cfg
            system.sampler = {"steps": args.steps or cfg.steps, "cfg": cfg.guidance if args.cfg is None else args.cfg,
                              "sampler": cfg.sampler, "shift": cfg.shift if args.shift is None else args.shift}  # fmt: skip
            for i, sample in enumerate(samples):
                began = time.monotonic()
                request = generation_request(
                    sample, args.seed + i, steps=args.steps, guidance=args.cfg, shift=args.shift
                )
                result = generator.generate(request)
                path = folder / f"clip{i:03d}.mp4"
                write_result(result, path)
                clip = ClipScores(i, str(path), generation_seconds=time.monotonic() - began)
                system.clips.append(clip)
                pairs.append((result.frames, result.audio))
                say(f"{system.label}: generated clip {i + 1}/{n} ({len(result.frames)} frames, "
                    f"{clip.generation_seconds:.1f} s)")  # fmt: skip
            del generator
        for i, (frames, _) in enumerate(pairs):
            other = pairs[(i + 1) % n][1]
            path = folder / f"clip{i:03d}-audio-of-clip{(i + 1) % n:03d}.mp4"
            write_mp4(path, frames, tiled(other, len(frames) * SAMPLES_PER_FRAME), fps=FPS)
            system.clips[i].mismatch = {"path": str(path)}
        say(f"{system.label}: {n} clips and {n} mismatched-audio clips written")


def score_all(systems: dict[str, System], keep_frames: int) -> None:
    from avgen.media import MediaError, read_mp4
    from eval.landmarks import mouth_signal
    from eval.run import EvalSettings, SyncScorer, score_clip

    learned = SyncScorer(EvalSettings(backend="learned"))
    landmarks = SyncScorer(EvalSettings(backend="landmarks"))
    if learned.unavailable:
        say(f"learned scorer unavailable: {learned.unavailable}")
    for system in systems.values():
        for clip in system.clips:
            clip.learned = score_clip(clip.path, learned)
            clip.landmarks = score_clip(clip.path, landmarks)
            clip.mismatch = score_clip(clip.mismatch["path"], learned)
            try:
                frames = read_mp4(clip.path, fps=FPS, sample_rate=16_000).frames
                signal, _ = mouth_signal(frames)
                clip.mouth_signal = signal
                clip.mouth_motion = finite(np.mean(np.abs(np.diff(signal)))) if len(signal) > 1 else None
                if clip.index < keep_frames:
                    clip.frames = frames
            except (MediaError, ValueError) as e:
                say(f"{system.label} clip {clip.index}: no mouth motion ({e})")
            for name, row in (("learned", clip.learned), ("landmarks", clip.landmarks), ("mismatch", clip.mismatch)):
                if row.get("error"):
                    say(f"{system.label} clip {clip.index} {name}: {row['error']}")
            say(f"{system.label}: scored clip {clip.index + 1}/{len(system.clips)} "
                f"(learned offset {clip.learned.get('av_offset_frames')}, conf {fmt(clip.learned.get('sync_confidence'), 2)}; "
                f"mismatched conf {fmt(clip.mismatch.get('sync_confidence'), 2)})")  # fmt: skip
