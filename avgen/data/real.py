"""Real talking-head clips: a folder of MP4s (optional transcripts beside them) as training windows.

`RealClips(root)` serves the same `Sample`s as the synthetic corpus (avgen.data.corpus), so the
training code that consumes `make_sample` can consume `RealClips.sample` instead:

    data = RealClips("clips/", split="train", seconds=2.0, size=64)
    len(data)          # number of windows
    data.sample(i)     # Sample: frames (T, 64, 64, 3) uint8, audio (T * 640,) float32, phones, ...
    data.skipped       # [(path, reason)] for clips that could not be used

Per clip, in order:

1. Find: every *.mp4 (also .m4v/.mov/.mkv/.webm) under `root`, recursively, in sorted order of the
   path relative to `root`; hidden files and folders (".name") are ignored. A clip's number in that
   order is its `identity` and `sentence` (so both are unique per clip, and stable across splits).
2. Split by clip: a clip is held out when a SHA-256 of its relative path (POSIX form) is 0 mod 10
   (`clip_split`), so about 10 % of the clips are held out, always the same ones, whatever the
   machine, process or other files in the folder. Only the requested split's clips are decoded.
3. Transcript: `clip.txt` (its text) or else `clip.json` ({"text": ...}; "transcript", as written
   by `avgen corpus`, works too). None: the clip trains with NULL_PHONE everywhere (like CFG dropout).
4. Decode with avgen.media.read_mp4 at 25 fps (constant rate, by presentation time) and 16 kHz
   mono (any source rate is resampled), downscaled while decoding to a long side of
   max(320, 8 * size) pixels, which leaves the face crop larger than `size`.
5. Face: avgen.face_landmarks' Haar detector (`haar_face`: the largest face, found on a copy at most
   160 px on the long side, so a face under about a fifth of a 16:9 frame's height is missed) on
   every 5th frame and the last. A missed keyframe takes its nearest detection in time and a 3-tap
   median removes one-off false hits (`keyframe_face_boxes`); then, so the crop doesn't
   jitter, the box centre is averaged over 1 s of keyframes and its size over 2 s, and the result
   is interpolated to every frame.
6. Crop: a square of (1 + 2 * margin) times the face box (margin 0.15 by default: the drawn faces
   of the synthetic corpus have a Haar box about 0.8 of their frame, so real and synthetic clips are
   framed alike), its centre 5 % of the box below the box's (Haar boxes sit high: brows to lower
   lip), shifted to stay inside the frame (and shrunk to the frame's short side if larger), then
   resized to `size` x `size`.
7. Windows: `seconds` long (T = round(25 * seconds) frames, T * 640 samples exactly), every `hop`
   seconds (hop = seconds by default: back to back), from the clip's start; a tail shorter than a
   window is dropped.

Phones: the transcript's phone timeline (avgen.phones.phone_timeline) fitted to the whole clip's
length, then cut to each window and shifted to start at 0. Without forced alignment this is only
approximate: it assumes the speech fills the clip evenly (apart from edge silences), so on real
speech with pauses or rate changes a window's phones can be off by tens to hundreds of ms, more
towards a long clip's middle. Short clips (one sentence each) keep the error small; a forced
aligner (e.g. Montreal Forced Aligner) writing `clip.json` phones would be the real fix. A
window's `text` is the transcript's (normalised) words whose phones are centred in the window,
approximate in the same way; the whole transcript is `data.clips[k].text`.

Bad clips never stop the dataset: unreadable or corrupt files, no audio track, silent audio, an
unreadable transcript file, clips shorter than one window, longer than `max_clip_seconds`, or with a
face in fewer than half of the keyframes are skipped; each lands in `skipped` as (path, reason),
and one warning says how many were skipped.

Caching: nothing is decoded when the dataset is made. The first `len()`, `sample()`, `clips` or
`skipped` decodes and crops every clip of the split once (one process; a progress callback can
follow it) and keeps the cropped clips in memory: size * size * 3 bytes per frame plus 2.5 KB of
audio, e.g. about 1.3 GB per hour of video at 64 px. Windows are views of the cropped clips.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from avgen.data.corpus import HELDOUT_MODULUS, SPLITS, Sample, _check_split
from avgen.face_landmarks import DETECT_EVERY, keyframe_face_boxes
from avgen.phones import (
    LONG_PAUSE,
    NULL_PHONE,
    PHONE_IDS,
    SHORT_PAUSE,
    PhoneSpan,
    frame_phone_ids,
    phone_timeline,
    pronounce,
    words,
)
from avgen.timeline import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm")
MARGIN = 0.15  # crop = (1 + 2 * MARGIN) x the Haar face box
CENTRE_DOWN = 0.05  # crop centre this fraction of the box below the box centre
MIN_FACE_FRACTION = 0.5  # a face in fewer keyframes than this: clip skipped
CENTRE_SMOOTH_S, SIZE_SMOOTH_S = 1.0, 2.0  # moving averages of the box centre and size
MIN_DECODE_SIDE = 320  # decode at max(this, 8 * size) px on the long side
SILENT_PEAK = 1e-4  # an audio track that never gets louder than this is silent
MAX_CLIP_SECONDS = 600.0  # longer clips are skipped (read_mp4 decodes a whole clip into memory)


class BadClip(ValueError):
    """A clip that cannot be used for training; str(e) says why."""


# ------------------------------------------------------------------ split and files


def clip_split(relpath: str | Path) -> str:
    """ "heldout" for about one clip in ten, by a SHA-256 of its path relative to the dataset root."""
    key = Path(relpath).as_posix().encode()
    return SPLITS[int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % HELDOUT_MODULUS == 0]


def find_clips(root: str | Path) -> list[Path]:
    """Video files under `root`, recursively, sorted by relative path; hidden files and folders skipped."""
    root = Path(root)
    found = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_transcript(video: Path) -> str:
    """The transcript beside a clip: clip.txt, else clip.json's "text" (or "transcript"); "" if none.
    Raises BadClip for a transcript file that exists but cannot be read."""
    txt, js = video.with_suffix(".txt"), video.with_suffix(".json")
    try:
        if txt.is_file():
            return txt.read_text(encoding="utf-8").strip()
        if js.is_file():
            meta = json.loads(js.read_text(encoding="utf-8"))
            text = meta.get("text", meta.get("transcript", "")) if isinstance(meta, dict) else None
            if not isinstance(text, str):
                raise ValueError('expected an object with a "text" string')
            return text.strip()
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BadClip(f"unreadable transcript {(txt if txt.is_file() else js).name}: {e}") from None
    return ""


# ------------------------------------------------------------------ face track and crop


def _moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over `width` (odd) samples; the ends are padded by point reflection,
    so a steady drift (a head moving across the frame) is followed to the last frame without lag."""
    half = min(width // 2, len(values) - 1)
    if half < 1:
        return values
    padded = np.pad(values, half, mode="reflect", reflect_type="odd")
    return np.convolve(padded, np.ones(2 * half + 1) / (2 * half + 1), mode="valid")


def face_track(frames: np.ndarray) -> tuple[np.ndarray, float]:
    """Smoothed face box per frame as (T, 3) float (centre x, centre y, side) in pixels, and the
    fraction of keyframes with a face. Raises BadClip when that fraction is under MIN_FACE_FRACTION."""
    t = len(frames)
    keys = np.unique(np.r_[np.arange(0, t, DETECT_EVERY), t - 1])  # the last frame too: no hold at the end
    key_boxes, fraction = keyframe_face_boxes(frames, keys)
    if key_boxes is None or fraction < MIN_FACE_FRACTION:
        raise BadClip(f"no face found in most frames (a face in {fraction:.0%} of the sampled frames)")
    x, y, w, h = key_boxes.T
    width = lambda seconds: 2 * round(seconds * FPS / DETECT_EVERY / 2) + 1
    cx = _moving_average(x + w / 2, width(CENTRE_SMOOTH_S))
    cy = _moving_average(y + h / 2, width(CENTRE_SMOOTH_S))
    side = _moving_average(np.maximum(w, h), width(SIZE_SMOOTH_S))
    track = np.stack([np.interp(np.arange(t), keys, v) for v in (cx, cy, side)], axis=1)
    return track, fraction


def crop_squares(track: np.ndarray, width: int, height: int, margin: float = MARGIN) -> np.ndarray:
    """Per-frame square crops (T, 3) int (x0, y0, side) around a face track, inside the frame."""
    cx, cy, face = track.T
    side = np.minimum(np.round(face * (1 + 2 * margin)), min(width, height)).astype(np.int64)
    side = np.maximum(side, 2)
    x0 = np.clip(np.round(cx - side / 2), 0, width - side).astype(np.int64)
    y0 = np.clip(np.round(cy + CENTRE_DOWN * face - side / 2), 0, height - side).astype(np.int64)
    return np.stack([x0, y0, side], axis=1)


def crop_frames(frames: np.ndarray, squares: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, (x0, y0, side) in enumerate(squares):
        region = np.ascontiguousarray(frames[i, y0 : y0 + side, x0 : x0 + side])
        out[i] = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    return out


# ------------------------------------------------------------------ transcripts over windows


def _word_spans(text: str, timeline: list[PhoneSpan]) -> list[tuple[str, float]]:
    """(word, centre time) of the transcript's normalised words on a phone_timeline of it."""
    tokens = words(text)
    counts = [1 if w in (SHORT_PAUSE, LONG_PAUSE) else len(pronounce(w)) for w in tokens]
    if len(timeline) != sum(counts) + 2:  # [edge silence, *phones, edge silence]; else no words
        return []
    out, k = [], 1
    for w, n in zip(tokens, counts):
        if n and w not in (SHORT_PAUSE, LONG_PAUSE):
            out.append((w, (timeline[k].start + timeline[k + n - 1].end) / 2))
        k += n
    return out


def window_phones(timeline: list[PhoneSpan], start: float, seconds: float) -> list[PhoneSpan]:
    """The spans of `timeline` inside [start, start + seconds), shifted to start at 0 and contiguous
    to exactly `seconds`; [] for an empty timeline (no transcript)."""
    if not timeline:
        return []
    end = start + seconds
    spans = [
        PhoneSpan(s.phone, max(s.start, start) - start, min(s.end, end) - start)
        for s in timeline
        if s.end > start and s.start < end
    ]
    spans = [s for s in spans if s.end > s.start] or [PhoneSpan(timeline[-1].phone, 0.0, seconds)]
    spans[0] = PhoneSpan(spans[0].phone, 0.0, spans[0].end)
    spans[-1] = PhoneSpan(spans[-1].phone, spans[-1].start, float(seconds))
    return spans


# ------------------------------------------------------------------ one clip


@dataclass
class RealClip:
    """One usable clip, face-cropped, at 25 fps / 16 kHz."""

    path: Path
    relpath: str
    number: int  # position among all clips found under the root: identity and sentence
    split: str
    text: str  # the whole transcript ("" if none)
    frames: np.ndarray = field(repr=False)  # (N, S, S, 3) uint8
    audio: np.ndarray = field(repr=False)  # (N * 640,) float32
    phones: list[PhoneSpan] = field(repr=False)  # the transcript fitted to the clip; [] without one
    squares: np.ndarray = field(repr=False)  # (N, 3) crop (x0, y0, side) in decoded pixels
    decoded_size: tuple[int, int] = (0, 0)  # (width, height) the crop squares refer to
    face_fraction: float = 0.0
    source_fps: float = 0.0

    @property
    def seconds(self) -> float:
        return len(self.frames) / FPS

    def reference_index(self) -> int:
        """The frame with the quietest audio: a pause, where the mouth is most likely closed."""
        energy = (self.audio.reshape(len(self.frames), SAMPLES_PER_FRAME) ** 2).sum(axis=1)
        return int(np.argmin(energy))


def load_clip(
    path: str | Path,
    size: int = 64,
    margin: float = MARGIN,
    *,
    root: str | Path | None = None,
    number: int = 0,
    min_seconds: float = 0.0,
    max_clip_seconds: float = MAX_CLIP_SECONDS,
) -> RealClip:
    """Decode, face-track and crop one clip (see the module docstring). Raises BadClip saying why not."""
    from avgen.media import MediaError, read_mp4  # PyAV only where clips are read: training on the corpus needs none

    path = Path(path)
    relpath = path.relative_to(root).as_posix() if root is not None else path.name
    text = read_transcript(path)
    try:
        clip = read_mp4(
            path,
            sample_rate=SAMPLE_RATE,
            fps=FPS,
            max_side=max(MIN_DECODE_SIDE, 8 * size),
            max_seconds=max_clip_seconds,
        )
    except MediaError as e:
        raise BadClip(str(e)) from None
    if clip.audio.size == 0:
        raise BadClip("no audio track")
    if float(np.abs(clip.audio).max()) < SILENT_PEAK:
        raise BadClip("the audio track is silent")
    n = min(len(clip.frames), math.ceil(clip.audio.size / SAMPLES_PER_FRAME))
    if n < max(1, round(min_seconds * FPS)):
        raise BadClip(f"too short: {n / FPS:.2f} s, shorter than one {min_seconds:g} s window")
    frames = clip.frames[:n]
    audio = np.pad(clip.audio[: n * SAMPLES_PER_FRAME], (0, max(0, n * SAMPLES_PER_FRAME - clip.audio.size)))
    track, fraction = face_track(frames)
    height, width = frames.shape[1:3]
    squares = crop_squares(track, width, height, margin)
    phones = phone_timeline(text, n / FPS) if text else []
    return RealClip(
        path=path,
        relpath=relpath,
        number=number,
        split=clip_split(relpath),
        text=text,
        frames=crop_frames(frames, squares, size),
        audio=audio.astype(np.float32, copy=False),
        phones=phones,
        squares=squares,
        decoded_size=(width, height),
        face_fraction=fraction,
        source_fps=clip.source_fps,
    )


def clip_window(clip: RealClip, start: int, frames: int, index: int = 0) -> Sample:
    """Frames start..start+frames-1 of a prepared clip as a Sample (see the module docstring on phones)."""
    if start < 0 or frames < 1 or start + frames > len(clip.frames):
        raise ValueError(f"window {start}..{start + frames} is outside the clip's {len(clip.frames)} frames")
    seconds, t0 = frames / FPS, start / FPS
    phones = window_phones(clip.phones, t0, seconds)
    if phones:
        phone_ids = frame_phone_ids(phones, frames)
        text = " ".join(w for w, c in _word_spans(clip.text, clip.phones) if t0 <= c < t0 + seconds)
    else:
        phone_ids = torch.full((frames,), PHONE_IDS[NULL_PHONE], dtype=torch.long)
        text = ""
    audio = clip.audio[start * SAMPLES_PER_FRAME : (start + frames) * SAMPLES_PER_FRAME]
    return Sample(
        frames=clip.frames[start : start + frames],
        audio=audio,
        text=text,
        phones=phones,
        phone_ids=phone_ids,
        identity=clip.number,
        sentence=clip.number,
        split=clip.split,
        index=index,
    )


def real_sample(path: str | Path, size: int = 64, margin: float = MARGIN) -> Sample:
    """One whole clip, face-cropped, as a Sample (its transcript from beside it, if any), e.g. to look
    at a crop or to score a real clip. Raises BadClip saying why a clip cannot be used."""
    clip = load_clip(path, size, margin)
    return clip_window(clip, 0, len(clip.frames))


# ------------------------------------------------------------------ the dataset


class RealClips(Dataset):
    """Training windows over a folder of talking-head clips, as `Sample`s (see the module docstring).

    `split`: "train", "heldout" or None for every clip. `seconds`: the window length; `hop`: the
    step between window starts (default `seconds`). `progress(fraction, message)` follows the
    one-time preparation."""

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        seconds: float = 2.0,
        hop: float | None = None,
        size: int = 64,
        margin: float = MARGIN,
        max_clip_seconds: float = MAX_CLIP_SECONDS,
        progress: Callable[[float, str], None] | None = None,
    ):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"clip folder {root} does not exist or is not a folder")
        if split is not None:
            _check_split(split)
        self.window = round(seconds * FPS)
        self.hop = self.window if hop is None else round(hop * FPS)
        if self.window < 1 or self.hop < 1:
            raise ValueError(f"seconds and hop must be at least one 40 ms frame, not {seconds} and {hop}")
        if size < 16 or size % 2:
            raise ValueError(f"size must be an even number of pixels >= 16, not {size}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, not {margin}")
        self.root, self.split, self.seconds, self.size, self.margin = root, split, self.window / FPS, size, margin
        self.max_clip_seconds, self.progress = max_clip_seconds, progress
        self.paths = find_clips(root)  # every clip, both splits: position = identity
        self._clips: list[RealClip] | None = None
        self._skipped: list[tuple[Path, str]] = []
        self._windows: list[tuple[int, int]] = []  # (position in clips, start frame)

    # preparation: once, on first access
    def prepare(self) -> RealClips:
        if self._clips is not None:
            return self
        clips, skipped = [], []
        chosen = [
            (k, p)
            for k, p in enumerate(self.paths)
            if self.split is None or clip_split(p.relative_to(self.root)) == self.split
        ]
        for done, (number, path) in enumerate(chosen, 1):
            try:
                clips.append(
                    load_clip(
                        path,
                        self.size,
                        self.margin,
                        root=self.root,
                        number=number,
                        min_seconds=self.seconds,
                        max_clip_seconds=self.max_clip_seconds,
                    )
                )
            except BadClip as e:
                skipped.append((path, str(e)))
            except Exception as e:  # noqa: BLE001 - one odd file must not stop a long preparation
                skipped.append((path, f"{type(e).__name__}: {e}"))
            if self.progress is not None:
                self.progress(done / len(chosen), path.name)
        self._clips, self._skipped = clips, skipped
        self._windows = [
            (c, s) for c, clip in enumerate(clips) for s in range(0, len(clip.frames) - self.window + 1, self.hop)
        ]
        if skipped:
            warnings.warn(
                f"{len(skipped)} of {len(chosen)} clips under {self.root} skipped (see .skipped), "
                f"e.g. {skipped[0][0].name}: {skipped[0][1]}",
                stacklevel=2,
            )
        return self

    @property
    def clips(self) -> list[RealClip]:
        return self.prepare()._clips

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        return self.prepare()._skipped

    def __len__(self) -> int:
        return len(self.prepare()._windows)

    def window_of(self, index: int) -> tuple[RealClip, int]:
        """(the clip, the start frame) of window `index`."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"window {index} out of range: {n} windows")
        c, start = self._windows[index]
        return self._clips[c], start

    def sample(self, index: int) -> Sample:
        clip, start = self.window_of(index)
        return clip_window(clip, start, self.window, index=index % len(self))

    __getitem__ = sample

    def reference_frame(self, index: int) -> np.ndarray:
        """(S, S, 3) uint8: the identity reference of window `index`, a frame of its clip (the
        quietest one, likely closed-mouthed), like avgen.data.reference_frame for the synthetic corpus."""
        clip, _ = self.window_of(index)
        return clip.frames[clip.reference_index()]
