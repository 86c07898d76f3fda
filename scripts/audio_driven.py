#!/usr/bin/env python
"""Issue 10's targets for speech-driven generation, measured on one checkpoint.

    nice -n 10 python scripts/audio_driven.py --out docs/results/audio_driven_shipped.json \
        --md docs/results/audio_driven_shipped.md

Groups (every clip goes through write_mp4's H.264/AAC round trip and is scored from the MP4):
- real: the speech of each clip in --real-clips (evaluation only), cut to --max-seconds, drives the
  face with no transcript (phones recognised from the sound: avgen.alignment.recognised_phones).
- espeak_text / espeak_notext: --espeak sentences written here (not the corpus's), spoken by
  espeak-ng with varied voices, speeds and pitches; each drives the face twice, with its --text
  (forced alignment; `aligned` says whether it succeeded or fell back to recognition) and without.
- text_driven: --text-driven held-out corpus transcripts (make_sample(i, "heldout", seed=1)) at their
  natural length, the model's own voice (no audio given): the baseline the speech-driven clips are
  compared with.
- ground_truth: those held-out samples themselves (drawn frames + their speech).
Every generated clip: the checkpoint's default sampler settings, seed --seed, no reference image
(a user with their own speech has no corpus identity; the text-driven baseline gets none either).

Per clip: offset and confidence by the learned and landmarks scorers (eval.run.score_clip); the same
video muxed with the next clip's audio of its group (repeated or cut to length, as
scripts/make_results.py's mismatched-audio control) scored by both, and own / other confidence;
mouth-envelope correlation: Pearson r at lag 0 of eval.landmarks.mouth_signal with
eval.landmarks.audio_signal (1-3 kHz loudness, both high-passed), from the decoded MP4.

Issue-10 checks per speech-driven group, from group means: mean |offset| <= 1 frame (each scorer);
mean own confidence >= 3x mean other-audio confidence (each scorer); mean learned confidence
>= 0.8x the text-driven group's; mean mouth-envelope r >= 0.5x ground truth's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # the `results` package of make_results.py

from results.clips import tiled  # noqa: E402

from avgen.timeline import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, fit_samples, frames_for_samples  # noqa: E402

DEFAULT_REAL = REPO.parent / "shared" / "data" / "real-clips"
GROUPS = ("real", "espeak_text", "espeak_notext", "text_driven", "ground_truth")
SPEECH_GROUPS = ("real", "espeak_text", "espeak_notext")
LABELS = {"real": "real speech, no text", "espeak_text": "espeak-ng + text", "espeak_notext": "espeak-ng, no text",
          "text_driven": "text-driven (own voice)", "ground_truth": "ground truth"}  # fmt: skip
# Ordinary sentences of our own (none from avgen/data/corpus.py).
SENTENCES = (
    "The morning train was late again, so we walked to the office.",
    "Please put the blue cup back on the kitchen shelf.",
    "My brother likes to read old maps before he goes hiking.",
    "We should finish the report before lunch on Friday.",
    "A small dog was sleeping under the wooden bench.",
    "Could you open the window and let some fresh air in?",
    "The museum closes early on Sundays during the winter.",
    "She painted the fence white and planted roses by the gate.",
    "Turn left at the bakery and you will see the library.",
    "Nobody expected the river to rise so quickly after the storm.",
    "I usually buy fresh bread from the corner shop on my way home.",
    "The children built a tall snowman in the park yesterday.",
    "Remember to water the plants while I am away next week.",
    "His grandmother keeps a jar of buttons in the top drawer.",
    "We watched the boats drift slowly across the quiet harbour.",
    "The printer on the second floor needs more paper.",
    "After dinner they played cards until almost midnight.",
    "Every autumn the old oak tree drops thousands of acorns.",
    "Could you tell me how long the bus ride usually takes?",
    "The baker woke up at four to prepare the morning loaves.",
    "Our neighbours are moving to a farm in the north.",
    "Keep your ticket, because the inspector may ask to see it.",
    "The soup tasted much better with a pinch of pepper.",
    "Five bright stars appeared above the hills after sunset.",
)
OWN_OTHER_MIN = 3.0
CONFIDENCE_VS_TEXT_MIN = 0.8
ENVELOPE_VS_TRUTH_MIN = 0.5
MAX_ABS_OFFSET = 1.0


def say(message: str) -> None:
    print(f"[audio_driven {time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


_START = time.monotonic()


@dataclass
class Clip:
    """One clip to score: its frames and the audio it was made with (or that came with it)."""

    group: str
    name: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    audio: np.ndarray  # (T * 640,) float32, 16 kHz
    text: str = ""
    info: dict = field(default_factory=dict)  # how it was made (source, voice, aligned...)
    metadata: dict = field(default_factory=dict)  # MP4 tags


# ------------------------------------------------------------------ speech


def real_speech(paths: list[str], max_seconds: float) -> list[tuple[str, np.ndarray]]:
    """(name, 16 kHz speech cut to max_seconds) of each clip in `paths` (files or folders)."""
    from avgen.media import read_audio
    from eval.run import find_clips

    out = []
    for path in find_clips(paths):
        audio = read_audio(path, sample_rate=SAMPLE_RATE)[: int(max_seconds * SAMPLE_RATE)]
        out.append((Path(path).stem, np.clip(audio, -1.0, 1.0)))
    return out


def espeak_speech(count: int, folder: Path, max_seconds: float) -> list[tuple[str, str, np.ndarray, dict]]:
    """(name, text, 16 kHz speech, voice settings) of `count` sentences spoken by espeak-ng in the
    evaluation voices (avgen.data.espeak.EVALUATION_VOICES; none of them speaks any training data)."""
    import soundfile

    from avgen.data.espeak import EVALUATION_VOICES, speak

    if count > len(SENTENCES):
        raise ValueError(f"--espeak is at most {len(SENTENCES)} (the sentences written in this script)")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        text, voice = SENTENCES[i], EVALUATION_VOICES[i % len(EVALUATION_VOICES)]
        audio = speak(text, voice)[0][: int(max_seconds * SAMPLE_RATE)]
        soundfile.write(folder / f"espeak{i:02d}.wav", audio, SAMPLE_RATE)  # to listen to
        settings = {"voice": voice.name, "speed": voice.words_per_minute, "pitch": voice.pitch}
        out.append((f"espeak{i:02d}", text, audio, settings))
    return out


# ------------------------------------------------------------------ generation


def generate(generator, group: str, name: str, seed: int, audio=None, text: str = "", seconds=None,
             info: dict | None = None) -> Clip:  # fmt: skip
    """One clip from the checkpoint's default sampler settings: audio-driven when `audio` is given."""
    from avgen.pipeline import GenerationRequest

    request = GenerationRequest(text=text, seconds=seconds, seed=seed, audio=audio)
    began = time.monotonic()
    result = generator.generate(request)
    info = dict(info or {}, generation_seconds=round(time.monotonic() - began, 2))
    return Clip(group, name, result.frames, result.audio, text, info, result.metadata)


def as_generated(audio: np.ndarray) -> np.ndarray:
    """The speech as generation reads it (avgen.pipeline.resolve): whole frames, zero-padded or cut."""
    return fit_samples(audio, frames_for_samples(len(audio)) * SAMPLES_PER_FRAME)


def aligned(audio: np.ndarray, text: str) -> bool:
    """Whether the transcript force-aligns to the speech (else generation fell back to recognition)."""
    from avgen.alignment import aligned_phones

    return aligned_phones(as_generated(audio), text) is not None


# ------------------------------------------------------------------ scoring


@dataclass
class Scorers:
    learned: object
    landmarks: object

    @classmethod
    def load(cls) -> Scorers:
        from eval.run import EvalSettings, SyncScorer

        return cls(SyncScorer(EvalSettings(backend="learned")), SyncScorer(EvalSettings(backend="landmarks")))


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def mouth_envelope_r(path: str) -> float | None:
    """Pearson r (lag 0) of the decoded MP4's mouth signal with its speech envelope."""
    from avgen.media import read_mp4
    from eval.landmarks import audio_signal, mouth_signal

    clip = read_mp4(path, fps=FPS, sample_rate=SAMPLE_RATE)
    mouth, _ = mouth_signal(clip.frames)
    return pearson(mouth, audio_signal(clip.audio, len(clip.frames)))


def _ratio(own, other) -> float | None:
    return None if own is None or other is None or other <= 0 else float(own / other)


def score_group(clips: list[Clip], folder: Path, scorers: Scorers) -> list[dict]:
    """Write each clip's MP4 and its mismatched-audio MP4 (the next clip's audio, repeated or cut to
    length) under `folder`, score both with both backends; one row per clip."""
    from avgen.media import write_mp4
    from eval.run import score_clip

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, clip in enumerate(clips):
        own = folder / f"{clip.name}.mp4"
        write_mp4(own, clip.frames, clip.audio, fps=FPS, sample_rate=SAMPLE_RATE, metadata=clip.metadata)
        row = {"group": clip.group, "name": clip.name, "text": clip.text, "frames": len(clip.frames),
               "seconds": round(len(clip.frames) / FPS, 3), **clip.info}  # fmt: skip
        errors = []
        for backend in ("learned", "landmarks"):
            scored = score_clip(str(own), getattr(scorers, backend))
            row[f"{backend}_offset"] = scored["av_offset_frames"]
            row[f"{backend}_confidence"] = scored["sync_confidence"]
            if scored["error"]:
                errors.append(f"{backend}: {scored['error']}")
        if len(clips) > 1:
            other = clips[(i + 1) % len(clips)]
            mixed = folder / f"{clip.name}-audio-of-{other.name}.mp4"
            write_mp4(mixed, clip.frames, tiled(other.audio, len(clip.frames) * SAMPLES_PER_FRAME), fps=FPS)
            row["other_audio_of"] = other.name
            for backend in ("learned", "landmarks"):
                scored = score_clip(str(mixed), getattr(scorers, backend))
                row[f"other_{backend}_confidence"] = scored["sync_confidence"]
                row[f"own_other_{backend}"] = _ratio(row[f"{backend}_confidence"], scored["sync_confidence"])
                if scored["error"]:
                    errors.append(f"{backend} (other audio): {scored['error']}")
        try:
            row["mouth_envelope_r"] = mouth_envelope_r(str(own))
        except ValueError as e:
            row["mouth_envelope_r"] = None
            errors.append(f"mouth-envelope: {e}")
        row["error"] = "; ".join(errors) or None
        rows.append(row)
        say(f"{LABELS.get(clip.group, clip.group)}: scored {clip.name} ({i + 1}/{len(clips)}): "
            f"learned {row['learned_offset']} / {_fmt(row['learned_confidence'])}, "
            f"landmarks {row['landmarks_offset']} / {_fmt(row['landmarks_confidence'])}, "
            f"own/other {_fmt(row.get('own_other_learned'))} / {_fmt(row.get('own_other_landmarks'))}, "
            f"r {_fmt(row['mouth_envelope_r'])}" + (f"  ERROR {row['error']}" if row["error"] else ""))  # fmt: skip
    return rows


# ------------------------------------------------------------------ summary and checks

METRICS = ("abs_learned_offset", "learned_confidence", "other_learned_confidence", "own_other_learned",
           "abs_landmarks_offset", "landmarks_confidence", "other_landmarks_confidence", "own_other_landmarks",
           "mouth_envelope_r")  # fmt: skip


def _value(row: dict, metric: str):
    if metric.startswith("abs_"):
        value = row.get(metric.removeprefix("abs_"))
        return None if value is None else abs(value)
    return row.get(metric)


def summarise(rows: list[dict], groups: tuple[str, ...] = GROUPS) -> dict[str, dict]:
    """Per group and metric: {"mean", "ci95", "n"} (eval.run.mean_ci95), plus the own/other ratio of
    the group's mean confidences (`own_other_<backend>_of_means`, what the check uses)."""
    from eval.run import mean_ci95

    summary = {}
    for group in groups:
        members = [r for r in rows if r["group"] == group]
        if not members:
            continue
        stats = {}
        for metric in METRICS:
            mean, half, n = mean_ci95([_value(r, metric) for r in members])
            stats[metric] = {"mean": mean, "ci95": half, "n": n}
        for backend in ("learned", "landmarks"):
            own, other = stats[f"{backend}_confidence"]["mean"], stats[f"other_{backend}_confidence"]["mean"]
            stats[f"own_other_{backend}_of_means"] = _ratio(own, other)
        summary[group] = stats
    return summary


def checks(summary: dict[str, dict]) -> list[dict]:
    """Issue 10's targets per speech-driven group, from the group means."""
    out = []

    def add(group, name, value, target, passed):
        out.append({"group": group, "check": name, "value": value, "target": target,
                    "pass": None if value is None else bool(passed)})  # fmt: skip

    text_conf = summary.get("text_driven", {}).get("learned_confidence", {}).get("mean")
    truth_r = summary.get("ground_truth", {}).get("mouth_envelope_r", {}).get("mean")
    for group in SPEECH_GROUPS:
        s = summary.get(group)
        if s is None:
            continue
        for backend in ("learned", "landmarks"):
            value = s[f"abs_{backend}_offset"]["mean"]
            add(group, f"mean |offset| ({backend}) <= {MAX_ABS_OFFSET:g} frame", value, MAX_ABS_OFFSET,
                value is not None and value <= MAX_ABS_OFFSET)  # fmt: skip
        for backend in ("learned", "landmarks"):
            value = s[f"own_other_{backend}_of_means"]
            add(group, f"own / other-audio confidence ({backend}) >= {OWN_OTHER_MIN:g}x", value, OWN_OTHER_MIN,
                value is not None and value >= OWN_OTHER_MIN)  # fmt: skip
        value = _ratio(s["learned_confidence"]["mean"], text_conf)
        add(group, f"learned confidence / text-driven's >= {CONFIDENCE_VS_TEXT_MIN:g}x", value,
            CONFIDENCE_VS_TEXT_MIN, value is not None and value >= CONFIDENCE_VS_TEXT_MIN)  # fmt: skip
        r = s["mouth_envelope_r"]["mean"]
        value = None if r is None or truth_r is None or truth_r <= 0 else r / truth_r
        add(group, f"mouth-envelope r / ground truth's >= {ENVELOPE_VS_TRUTH_MIN:g}x", value,
            ENVELOPE_VS_TRUTH_MIN, value is not None and value >= ENVELOPE_VS_TRUTH_MIN)  # fmt: skip
    return out


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _shown(path: str) -> str:
    """A path inside the repository relative to it (the report does not depend on the checkout's place)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def write_report(report: dict, out: str, md: str | None, text: str) -> None:
    """The JSON report to `out`, its markdown `text` to `md` (when given) and to stdout."""
    from avgen.files import write_text_atomic

    write_text_atomic(Path(out), json.dumps(report, indent=1, allow_nan=False) + "\n")
    if md:
        write_text_atomic(Path(md), text)
    print(text)


def markdown(report: dict) -> str:
    summary, groups = report["summary"], [g for g in GROUPS if g in report["summary"]]
    names = {"abs_learned_offset": "\\|offset\\| learned (frames)", "learned_confidence": "confidence learned",
             "other_learned_confidence": "other-audio confidence learned", "own_other_learned": "own/other learned (per clip)",
             "abs_landmarks_offset": "\\|offset\\| landmarks (frames)", "landmarks_confidence": "confidence landmarks",
             "other_landmarks_confidence": "other-audio confidence landmarks",
             "own_other_landmarks": "own/other landmarks (per clip)", "mouth_envelope_r": "mouth-envelope r"}  # fmt: skip
    lines = [
        f"### Speech-driven generation (issue 10): `{_shown(report['checkpoint'])}`",
        "",
        f"Checkpoint sha256 {report['checkpoint_hash'][:16]}, learned scorer sha256 "
        f"{report.get('learned_scorer_hash', '?')[:16]}, sampler {report['sampler']}, seed {report['seed']}, "
        f"no reference image; real speech cut to {report['max_seconds']:g} s. Mean ± 95% CI (n). "
        "Written by `scripts/audio_driven.py`.",
        "",
        "| metric | " + " | ".join(LABELS[g] for g in groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for metric in METRICS:
        cells = []
        for g in groups:
            st = summary[g][metric]
            cell = _fmt(st["mean"]) + (f" ± {st['ci95']:.2f}" if st["ci95"] is not None else "")
            cells.append(f"{cell} ({st['n']})" if st["n"] else "n/a")
        lines.append(f"| {names[metric]} | " + " | ".join(cells) + " |")
    for backend in ("learned", "landmarks"):
        cells = [_fmt(summary[g][f"own_other_{backend}_of_means"]) for g in groups]
        lines.append(f"| own/other {backend} (ratio of means) | " + " | ".join(cells) + " |")
    lines += ["", "Issue-10 checks (group means):", ""]
    for c in report["checks"]:
        verdict = "n/a" if c["pass"] is None else "PASS" if c["pass"] else "FAIL"
        lines.append(f"- {verdict}: {LABELS[c['group']]}: {c['check']} (measured {_fmt(c['value'])})")
    aligned_rows = [r for r in report["rows"] if r["group"] == "espeak_text"]
    if aligned_rows:
        n = sum(bool(r.get("aligned")) for r in aligned_rows)
        fallback = " (the others fell back to phone recognition)" if n < len(aligned_rows) else ""
        lines += [
            "",
            f"espeak-ng + text: the transcript force-aligned on {n} of {len(aligned_rows)} sentences{fallback}.",
        ]
    lines += ["", "Per clip (offset / confidence; own/other confidence; mouth-envelope r):", "",
              "| group | clip | learned | landmarks | own/other learned | own/other landmarks | r |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["rows"]:
        lines.append(f"| {LABELS[r['group']]} | {r['name']} | {r['learned_offset']} / {_fmt(r['learned_confidence'])} "
                     f"| {r['landmarks_offset']} / {_fmt(r['landmarks_confidence'])} | {_fmt(r.get('own_other_learned'))} "
                     f"| {_fmt(r.get('own_other_landmarks'))} | {_fmt(r['mouth_envelope_r'])} |")  # fmt: skip
    if report.get("notes"):
        lines += [""] + [f"Note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped weights)")
    p.add_argument("--real-clips", nargs="+", default=[str(DEFAULT_REAL)], help="real clips (files or folders)")
    p.add_argument("--max-seconds", type=float, default=6.0, help="real and espeak speech cut to this (default 6)")
    p.add_argument("--espeak", type=int, default=6, help="espeak-ng sentences (default 6)")
    p.add_argument("--text-driven", type=int, default=8, help="held-out corpus clips, text-driven (default 8)")
    p.add_argument("--seed", type=int, default=0, help="generation seed of every clip (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenCV threads (default 2)")
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--md", help="also write the markdown block here")
    p.add_argument("--work", help="keep the MP4s here (default: a temporary folder, deleted)")
    args = p.parse_args(argv)
    if args.max_seconds <= 0:
        p.error("--max-seconds must be positive")
    if args.espeak < 0 or args.text_driven < 0:
        p.error("--espeak and --text-driven must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import cv2
    import torch

    from avgen.checkpoint import default_checkpoint, file_hash
    from avgen.data import espeak, make_sample
    from avgen.pipeline import Generator

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if checkpoint is None or not checkpoint.is_file():
        print(f"audio_driven: no checkpoint {'at ' + str(checkpoint) if checkpoint else 'shipped'}", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="avgen-audio-driven-"))
    notes: list[str] = []
    try:
        generator = Generator.load(checkpoint)
        cfg = generator.cfg
        sampler = {"steps": cfg.steps, "cfg": cfg.guidance, "shift": cfg.shift, "sampler": cfg.sampler}
        say(f"checkpoint {checkpoint} ({generator.checkpoint_id[:16]}), sampler {sampler}")
        scorers = Scorers.load()
        if scorers.learned.unavailable:
            notes.append(f"learned scorer unavailable: {scorers.learned.unavailable}")
        rows: list[dict] = []

        def run_group(group: str, makers) -> None:
            clips = []
            for make in makers:
                clips.append(make())
                say(
                    f"{LABELS[group]}: {clips[-1].name} ready ({len(clips)}/{len(makers)}, "
                    f"{len(clips[-1].frames)} frames, generated in {clips[-1].info.get('generation_seconds', 0)} s)"
                )
            rows.extend(score_group(clips, work / group, scorers))

        real = real_speech(args.real_clips, args.max_seconds) if any(Path(p).exists() for p in args.real_clips) else []
        if not real:
            notes.append(f"no real clips at {' '.join(args.real_clips)}: the real-speech group is missing")
        run_group("real", [lambda n=n, a=a: generate(generator, "real", n, args.seed, audio=a) for n, a in real])

        if args.espeak and not espeak.available():
            notes.append("espeak-ng is not installed (apt install espeak-ng): the espeak-ng groups are missing")
        elif args.espeak:
            spoken = espeak_speech(args.espeak, work / "espeak-wav", args.max_seconds)
            run_group("espeak_text", [lambda n=n, t=t, a=a, v=v: generate(
                generator, "espeak_text", n, args.seed, audio=a, text=t, info={**v, "aligned": aligned(a, t)})
                for n, t, a, v in spoken])  # fmt: skip
            run_group("espeak_notext", [lambda n=n, t=t, a=a, v=v: generate(
                generator, "espeak_notext", n, args.seed, audio=a, info={**v, "spoken_text": t})
                for n, t, a, v in spoken])  # fmt: skip

        samples = [make_sample(i, split="heldout", seed=1) for i in range(args.text_driven)]
        run_group("text_driven", [lambda i=i, s=s: generate(
            generator, "text_driven", f"heldout{i:02d}", args.seed, text=s.text, seconds=len(s.frames) / FPS,
            info={"identity": s.identity, "sentence": s.sentence}) for i, s in enumerate(samples)])  # fmt: skip
        run_group("ground_truth", [lambda i=i, s=s: Clip(
            "ground_truth", f"heldout{i:02d}", s.frames, s.audio, s.text, {"identity": s.identity})
            for i, s in enumerate(samples)])  # fmt: skip

        summary = summarise(rows)
        report = {"checkpoint": _shown(str(checkpoint)), "checkpoint_hash": file_hash(checkpoint), "sampler": sampler,
                  "learned_scorer_hash": scorers.learned.weights_hash,
                  "seed": args.seed, "max_seconds": args.max_seconds, "threads": args.threads,
                  "corpus": {"split": "heldout", "seed": 1, "clips": args.text_driven},
                  "summary": summary, "checks": checks(summary), "rows": rows, "notes": notes}  # fmt: skip
        write_report(report, args.out, args.md, markdown(report))
        say(f"wrote {args.out}" + (f" and {args.md}" if args.md else ""))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
