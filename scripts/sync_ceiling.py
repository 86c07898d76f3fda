#!/usr/bin/env python
"""What the sync scorers give a perfect drawing of the phone timeline that speech-driven generation
works from: the ceiling of `scripts/audio_driven.py`'s speech-driven groups.

    python scripts/sync_ceiling.py --out docs/results/sync_ceiling.json --md docs/results/sync_ceiling.md \
        [--generated docs/results/audio_driven_distilled.json]

For each speech of `scripts/audio_driven.py` (the real clips' own audio, the espeak-ng sentences with
and without their transcript), the phone timeline is taken from the speech exactly as generation
takes it (`avgen.alignment.phones_from_speech`: forced alignment with the transcript, phone
recognition without), and the corpus renderer that drew the training data (`avgen.data.faces`) draws
a held-out identity's face speaking that timeline (no blinks, no head motion); the drawing is muxed
with the speech and scored as audio_driven.py scores generated clips. Two controls on 8 held-out
corpus samples: the same drawing from the timeline recognised in their own (synthetic) voice, and
their ground truth (drawn from the exact timeline). No model is involved: a generator driven by the
speech's timeline can at best match the drawing's scores, so a speech-driven group's learned
confidence is read against its ceiling here, beside the issue's ratio to text-driven clips.

Two more groups put the video codec between the drawing and the scorer (frames encoded and decoded by
--checkpoint's video autoencoder, the latent space the transformer generates in): the real-speech
drawings and the corpus ground truth. What they lose is what no transformer in that latent space can
win back: a generated clip is read against the codec's ceiling as well as the drawing's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import audio_driven as ad  # noqa: E402

from avgen.timeline import SAMPLES_PER_FRAME  # noqa: E402

LABELS = {
    "real": "real speech (recognised phones)",
    "espeak_text": "espeak-ng (aligned to its text)",
    "espeak_notext": "espeak-ng (recognised phones)",
    "text_driven": "corpus voice (recognised phones)",
    "ground_truth": "corpus voice (exact phones: ground truth)",
    "real_codec": "real speech (recognised phones), through the video codec",
    "truth_codec": "ground truth, through the video codec",
}
SHOWN = ("learned_confidence", "own_other_learned_of_means", "abs_landmarks_offset", "landmarks_confidence",
         "own_other_landmarks_of_means", "mouth_envelope_r")  # fmt: skip


def drawn(group: str, name: str, audio: np.ndarray, text: str, identity: int) -> ad.Clip:
    """The corpus renderer's face for `identity` speaking the timeline taken from `audio` (and `text`)."""
    from avgen.alignment import phones_from_speech
    from avgen.data.faces import face_for, mouth_track, render

    padded = ad.as_generated(audio)
    frames = len(padded) // SAMPLES_PER_FRAME
    mouth = mouth_track(phones_from_speech(padded, text), frames)
    video = render(face_for(identity), mouth, np.zeros(frames), np.zeros((frames, 3)))
    return ad.Clip(group, name, video, padded, text, {"identity": identity})


def through_codec(clip: ad.Clip, group: str, codec) -> ad.Clip:
    """`clip` with its frames encoded and decoded by `codec` (avgen.video_codec.VideoAutoencoder)."""
    import torch

    video = codec.round_trip(torch.from_numpy(np.ascontiguousarray(clip.frames))).numpy()
    return ad.Clip(group, clip.name, video, clip.audio, clip.text, clip.info)


def _cell(stats) -> str:
    if isinstance(stats, dict):
        return ad._fmt(stats["mean"]) + (f" ± {stats['ci95']:.2f}" if stats["ci95"] is not None else "")
    return ad._fmt(stats)


def markdown(report: dict) -> str:
    summary, generated = report["summary"], report.get("generated") or {}
    groups = [g for g in LABELS if g in summary]
    lines = [
        "### Sync ceiling: the corpus renderer drawing the timeline taken from the speech",
        "",
        "Written by `scripts/sync_ceiling.py`; no model involved. Mean ± 95% CI over the clips of each group.",
        "",
        "| metric | " + " | ".join(LABELS[g] for g in groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for metric in SHOWN:
        lines.append(f"| {metric} | " + " | ".join(_cell(summary[g][metric]) for g in groups) + " |")
    if generated:
        lines += ["", f"Generated clips (`{report['generated_from']}`), learned confidence against this ceiling:", ""]
        # each generated group against its drawing and, where measured, that drawing through the codec
        ceilings = {"real": ("real", "real_codec"), "espeak_text": ("espeak_text",),
                    "espeak_notext": ("espeak_notext",), "text_driven": ("ground_truth", "truth_codec")}  # fmt: skip
        for g, against in ceilings.items():
            if g not in generated:
                continue
            parts = [f"{ad._fmt(ad._ratio(generated[g], summary[c]['learned_confidence']['mean']))}x "
                     f"{LABELS[c]} ({summary[c]['learned_confidence']['mean']:.2f})" for c in against if c in summary]  # fmt: skip
            lines.append(f"- {ad.LABELS[g]}: {generated[g]:.2f} generated = " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real-clips", nargs="+", default=[str(ad.DEFAULT_REAL)])
    p.add_argument("--max-seconds", type=float, default=6.0)
    p.add_argument("--espeak", type=int, default=6)
    p.add_argument("--corpus", type=int, default=8, help="held-out corpus samples for the controls")
    p.add_argument("--checkpoint", help="whose video codec the codec groups use (default: the shipped weights)")
    p.add_argument("--generated", help="an audio_driven.py JSON to read generated clips against the ceiling")
    p.add_argument("--out", required=True)
    p.add_argument("--md")
    args = p.parse_args()

    from avgen.checkpoint import default_checkpoint, load_checkpoint
    from avgen.data import make_sample

    checkpoint = args.checkpoint or default_checkpoint()
    codec = load_checkpoint(checkpoint, only=("video_codec",)).video_codec.eval()
    scorers = ad.Scorers.load()
    samples = [make_sample(i, split="heldout", seed=1) for i in range(args.corpus)]
    identities = [s.identity for s in samples] or [0]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="avgen-sync-ceiling-") as tmp:
        work = Path(tmp)
        real = ad.real_speech(args.real_clips, args.max_seconds)
        clips = [drawn("real", n, a, "", identities[i % len(identities)]) for i, (n, a) in enumerate(real)]
        rows += ad.score_group(clips, work / "real", scorers)
        clips = [through_codec(c, "real_codec", codec) for c in clips]
        rows += ad.score_group(clips, work / "real-codec", scorers)
        spoken = ad.espeak_speech(args.espeak, work / "espeak-wav", args.max_seconds) if args.espeak else []
        for group, with_text in (("espeak_text", True), ("espeak_notext", False)):
            clips = [drawn(group, n, a, t if with_text else "", identities[i % len(identities)])
                     for i, (n, t, a, _) in enumerate(spoken)]  # fmt: skip
            rows += ad.score_group(clips, work / group, scorers)
        clips = [drawn("text_driven", f"heldout{i:02d}", s.audio, "", s.identity) for i, s in enumerate(samples)]
        rows += ad.score_group(clips, work / "corpus-recognised", scorers)
        truth = [ad.Clip("ground_truth", f"heldout{i:02d}", s.frames, s.audio, s.text) for i, s in enumerate(samples)]
        rows += ad.score_group(truth, work / "ground-truth", scorers)
        truth = [through_codec(c, "truth_codec", codec) for c in truth]
        rows += ad.score_group(truth, work / "truth-codec", scorers)
    report = {"summary": ad.summarise(rows, tuple(LABELS)), "rows": rows, "max_seconds": args.max_seconds,
              "codec_checkpoint": ad._shown(str(checkpoint)),
              "corpus": {"split": "heldout", "seed": 1, "clips": args.corpus}}  # fmt: skip
    if args.generated:
        generated = json.loads(Path(args.generated).read_text())["summary"]
        report["generated_from"] = ad._shown(args.generated)
        report["generated"] = {
            g: generated[g]["learned_confidence"]["mean"] for g in (*ad.SPEECH_GROUPS, "text_driven") if g in generated
        }
    ad.write_report(report, args.out, args.md, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
