"""Evaluation runs: score many clips (files, folders, manifests) and write results a person can read.

DIR/results.json (one object per clip), DIR/results.csv (same columns), DIR/plots/<n>.png per clip
(sync distance against offset; flicker over time) and a summary table with means and 95%
confidence intervals. Runs resume: a clip is skipped only when the same file (size and mtime)
was already scored with the same backend, settings and weights. One bad clip becomes an `error`
in its row and the run goes on.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avgen.files import atomic_path, file_hash, write_text_atomic
from avgen.progress import Progress
from eval.protocol import SyncResult
from eval.speech import NEARLY_SILENT, speech_fraction

CLIP_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
MANIFEST_SUFFIXES = {".txt", ".lst", ".list", ".manifest"}
BACKENDS = ("landmarks", "syncnet", "learned")
SCORING_FPS = 25  # the SyncNet protocol's rate: other rates are resampled by presentation time
SCORING_SAMPLE_RATE = 16_000
MAX_SIDE = 512  # larger frames are downscaled while decoding (flow and detection run smaller still)
MAX_SECONDS = 300.0
MIN_FRAMES = 5  # one SyncNet window
COLUMNS = (
    "path", "backend", "av_offset_frames", "sync_confidence", "sync_distance", "temporal_flickering",
    "warping_error", "audio_flicker", "speech_fraction", "face", "error", "note", "frames", "seconds",
    "source_fps", "weights_hash", "settings",
)  # fmt: skip


@dataclass(frozen=True)
class EvalSettings:
    backend: str = "landmarks"
    face_crop: str = "reference"  # syncnet only: "reference" pipeline crop, or "none" for ready face tracks
    syncnet_weights: str | None = None
    learned_weights: str | None = None  # learned only: another weight file (default: the shipped one)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose from {', '.join(BACKENDS)}")
        if self.face_crop not in ("reference", "none"):
            raise ValueError(f"face crop must be 'reference' or 'none', not {self.face_crop!r}")
        if self.backend == "syncnet" and not self.syncnet_weights:
            raise ValueError("the syncnet backend needs --syncnet-weights PATH (the published syncnet_v2.model)")
        if self.learned_weights and self.backend != "learned":
            raise ValueError(f"--learned-weights is for --backend learned, not {self.backend}")

    def key(self) -> dict:
        """What makes two scores of one file comparable (paths of weights are not: their hash is)."""
        return {"backend": self.backend, "face_crop": self.face_crop if self.backend == "syncnet" else None,
                "fps": SCORING_FPS, "sample_rate": SCORING_SAMPLE_RATE, "max_side": MAX_SIDE}  # fmt: skip


class SyncScorer:
    """The chosen sync backend, loaded once per run."""

    def __init__(self, settings: EvalSettings):
        self.settings, self.weights_hash, self.unavailable = settings, None, None
        if settings.backend == "syncnet":
            from eval import syncnet

            self.net = syncnet.load_syncnet(settings.syncnet_weights)  # a bad file stops the run: every row would fail
            self.weights_hash = file_hash(settings.syncnet_weights)
        elif settings.backend == "learned":
            from eval import learned

            try:
                self.net = learned.load_learned(settings.learned_weights)
                self.weights_hash = learned.weights_hash(settings.learned_weights)
            except learned.LearnedWeightsError as e:  # no weights / a bad file: each row says why
                self.unavailable = str(e)

    def score(self, frames: np.ndarray, audio: np.ndarray) -> tuple[SyncResult, str]:
        backend = self.settings.backend
        if self.unavailable:
            raise ScoreError(self.unavailable)
        if backend == "landmarks":
            from eval.landmarks import score_landmarks

            return score_landmarks(frames, audio)
        if backend == "learned":
            from eval.learned import score_learned

            return score_learned(frames, audio, self.net)
        from eval.syncnet import score_syncnet

        return score_syncnet(frames, audio, self.net, face_crop_mode=self.settings.face_crop)


class ScoreError(ValueError):
    """A clip that cannot be scored (the message goes into its row's `error`)."""


def find_clips(paths: list[str]) -> list[str]:
    """Expand folders (video files inside, recursively, sorted) and manifests (one path a line,
    relative to the manifest, '#' comments); other paths are kept exactly as given."""
    clips: list[str] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            clips += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in CLIP_SUFFIXES and f.is_file())
        elif p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            for line in p.read_text(errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    clips.append(line if os.path.isabs(line) else str(p.parent / line))
        else:
            clips.append(given)
    return list(dict.fromkeys(clips))  # each clip once, first order kept


def _finite(value) -> float | None:
    """JSON has no NaN: a value that could not be computed is null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _file_identity(path: str) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def empty_row(path: str, settings: EvalSettings, weights_hash: str | None) -> dict:
    row = {c: None for c in COLUMNS}
    row.update(path=path, backend=settings.backend, weights_hash=weights_hash, settings=settings.key())
    row["file"], row["curves"] = _file_identity(path), {}
    return row


def score_clip(path: str, scorer: SyncScorer) -> dict:
    """Every metric for one clip; failures go into the row's `error`, never out as exceptions."""
    from avgen.media import MediaError, read_mp4
    from eval import flicker

    row = empty_row(path, scorer.settings, scorer.weights_hash)
    problems: list[str] = []
    try:
        clip = read_mp4(
            path, sample_rate=SCORING_SAMPLE_RATE, fps=SCORING_FPS, max_side=MAX_SIDE, max_seconds=MAX_SECONDS
        )
    except MediaError as e:
        row["error"] = str(e)
        return row
    frames, audio = clip.frames, clip.audio
    row.update(frames=len(frames), seconds=round(len(frames) / SCORING_FPS, 3), source_fps=_finite(clip.source_fps))
    notes = []
    if clip.variable_frame_rate or abs(clip.source_fps - SCORING_FPS) > 0.01:
        notes.append(
            f"video resampled from {'variable' if clip.variable_frame_rate else f'{clip.source_fps:g}'} fps to {SCORING_FPS} fps"
        )
    if clip.source_size != (frames.shape[2], frames.shape[1]):
        notes.append(
            f"frames downscaled from {clip.source_size[0]}x{clip.source_size[1]} to {frames.shape[2]}x{frames.shape[1]}"
        )
    if len(frames) < MIN_FRAMES:
        row["error"] = f"only {len(frames)} frames: scoring needs at least {MIN_FRAMES} (0.2 s)"
        return row

    row["temporal_flickering"] = _finite(flicker.temporal_flickering(frames))
    warping, warp_curve = flicker.warping_error_with_curve(frames, fps=SCORING_FPS)
    row["warping_error"] = _finite(warping)
    row["curves"].update(
        temporal_flickering_per_second=[_finite(v) for v in flicker.temporal_flickering_curve(frames, fps=SCORING_FPS)],
        warping_error_per_second=[_finite(v) for v in warp_curve],
    )
    if audio.size == 0:
        problems.append("no audio track: lip-sync and audio flicker need sound")
    elif not np.isfinite(audio).all():
        problems.append("the audio track has NaN or infinite samples: lip-sync and audio flicker need finite sound")
    else:
        try:
            audio_flicker = flicker.audio_flicker(audio, sample_rate=SCORING_SAMPLE_RATE)
            row["audio_flicker"] = _finite(audio_flicker.score)
            row["curves"]["audio_flicker_per_second"] = [_finite(v) for v in audio_flicker.curve]
            row["curves"]["audio_flicker_worst"] = [[_finite(t), _finite(v)] for t, v in audio_flicker.worst]
            fraction = speech_fraction(audio, len(frames))
            row["speech_fraction"] = round(fraction, 4)
            if fraction < NEARLY_SILENT:
                notes.append(
                    f"nearly silent (speech in {fraction:.0%} of frames): the sync scores carry little information"
                )
            result, face = scorer.score(frames, audio)
            row.update(
                av_offset_frames=int(result.av_offset_frames), sync_distance=_finite(result.sync_distance),
                sync_confidence=_finite(result.sync_confidence), face=face,
            )  # fmt: skip
            row["curves"]["sync_offsets"] = [int(o) for o in result.offsets]
            row["curves"]["sync_mean_distances"] = [_finite(v) for v in result.mean_distances]
        except (ScoreError, ValueError) as e:
            problems.append(str(e))
    row["note"] = "; ".join(notes) or None
    row["error"] = "; ".join(problems) or None
    return row


def _reusable(old: dict | None, path: str, scorer: SyncScorer) -> bool:
    return bool(
        old
        and old.get("error") is None
        and old.get("file") is not None
        and old.get("file") == _file_identity(path)
        and old.get("backend") == scorer.settings.backend
        and old.get("settings") == scorer.settings.key()
        and old.get("weights_hash") == scorer.weights_hash
    )


def load_previous(out_dir: Path) -> dict[str, dict]:
    try:
        rows = json.loads((out_dir / "results.json").read_text())
        return {row["path"]: row for row in rows if isinstance(row, dict) and "path" in row}
    except (OSError, ValueError, TypeError):
        return {}


def evaluate(
    paths: list[str], out_dir: str | Path, settings: EvalSettings, progress: Progress | None = None
) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = find_clips(paths)
    if not clips:
        raise ValueError("no clips found: give video files, folders with videos, or a manifest (.txt) listing them")
    scorer = SyncScorer(settings)
    previous = load_previous(out_dir)
    report = progress or (lambda fraction, message: None)
    rows = []
    for index, path in enumerate(clips):
        report(index / len(clips), f"{index}/{len(clips)} {os.path.basename(path)}")
        old = previous.get(path)
        if _reusable(old, path, scorer):
            rows.append(dict(old, skipped=True))
        else:
            try:
                rows.append(score_clip(path, scorer))
            except Exception as e:  # noqa: BLE001 (one bad clip never stops a run, whatever a metric raises)
                error = f"cannot score this clip ({type(e).__name__}: {' '.join(str(e).split())})"
                rows.append(empty_row(path, settings, scorer.weights_hash) | {"error": error})
        write_results(rows, out_dir)  # after every clip: an interrupted run resumes where it stopped
    report(1.0, f"{len(clips)} clips")
    write_plots(rows, out_dir)
    return rows


def write_results(rows: list[dict], out_dir: Path) -> None:
    stored = [{k: v for k, v in row.items() if k != "skipped"} for row in rows]
    write_text_atomic(out_dir / "results.json", json.dumps(stored, indent=1, allow_nan=False))
    with atomic_path(out_dir / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else json.dumps(row[c], sort_keys=True) if c == "settings" else row[c]
                             for c in COLUMNS])  # fmt: skip


def plot_name(index: int, path: str) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(path).stem)[:60]
    return f"{index:04d}_{stem}.png"


def write_plots(rows: list[dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out_dir / "plots"
    folder.mkdir(exist_ok=True)
    for index, row in enumerate(rows):
        curves = row.get("curves") or {}
        fig, (sync_ax, flicker_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
        fig.suptitle(f"{row['path']}  ({row['backend']})", fontsize=9)
        if curves.get("sync_offsets"):
            sync_ax.plot(curves["sync_offsets"], curves["sync_mean_distances"], marker=".")
            sync_ax.axvline(
                row["av_offset_frames"], color="red", linestyle="--", label=f"offset {row['av_offset_frames']}"
            )
            sync_ax.legend(fontsize=8)
        else:
            sync_ax.text(0.5, 0.5, "no sync score", ha="center", va="center", transform=sync_ax.transAxes)
        sync_ax.set(xlabel="offset (frames)", ylabel="mean distance", title="lip-sync")
        for name, label in (("temporal_flickering_per_second", "1 - temporal flickering"),
                            ("warping_error_per_second", "warping error"),
                            ("audio_flicker_per_second", "audio flicker")):  # fmt: skip
            values = curves.get(name)
            if values:
                ys = [None if v is None else (1 - v if name.startswith("temporal") else v) for v in values]
                flicker_ax.plot(
                    np.arange(len(ys)) + 0.5, [np.nan if y is None else y for y in ys], marker=".", label=label
                )
        flicker_ax.set(xlabel="time (s)", title="flicker per second (lower is steadier)")
        if flicker_ax.lines:
            flicker_ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / plot_name(index, row["path"]), dpi=80)
        plt.close(fig)


SUMMARY_METRICS = ("av_offset_frames", "sync_confidence", "sync_distance", "temporal_flickering", "warping_error",
                   "audio_flicker", "speech_fraction")  # fmt: skip


def mean_ci95(values: list[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and the half-width of its 95% confidence interval (Student t, scipy.stats.t.interval), and n.
    None values are left out; one value has no interval."""
    from scipy import stats

    values = [v for v in values if v is not None]
    n = len(values)
    if n == 0:
        return None, None, 0
    mean = float(np.mean(values))
    if n == 1:
        return mean, None, 1
    sem = float(stats.sem(values))
    if sem == 0:  # equal values: scipy wants a positive scale
        return mean, 0.0, n
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    return mean, float(high - low) / 2, n


def summary_stats(rows: list[dict]) -> dict[str, tuple[float | None, float | None, int]]:
    """Per summary metric: (mean, half-width of its 95% CI, n) over the rows that have it (`mean_ci95`)."""
    return {metric: mean_ci95([row.get(metric) for row in rows]) for metric in SUMMARY_METRICS}


def summary_table(rows: list[dict]) -> str:
    failed = sum(row.get("error") is not None for row in rows)
    lines = [f"{len(rows)} clips, {failed} with errors, backend {rows[0]['backend'] if rows else '-'}",
             f"{'metric':<22}{'mean':>12}{'95% CI +-':>12}{'n':>6}"]  # fmt: skip
    for metric, (mean, half, n) in summary_stats(rows).items():
        fmt = lambda v: "-" if v is None else f"{v:.4f}"
        lines.append(f"{metric:<22}{fmt(mean):>12}{fmt(half):>12}{n:>6}")
    return "\n".join(lines)
