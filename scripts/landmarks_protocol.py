#!/usr/bin/env python
"""The landmarks backend's offset with and without zero-padded audio (eval.protocol.sync_offset's
`pad_audio`), on folders of MP4s.

    python scripts/landmarks_protocol.py DIR [DIR ...] --out J [--md M]

Each DIR is one group (its *.mp4 files; the "-audio-of-" controls that scripts/audio_driven.py
writes are skipped), e.g. the --work folder groups of scripts/audio_driven.py and the real clips.
The lip signal of each clip is read once (eval.landmarks.mouth_signal); then, under both settings:
- own audio: |offset| (mean, and clips off by more than 1 frame) and confidence;
- the next clip's audio of the group: confidence, and own / other of the group means;
- every clip against every other clip's audio, across all groups (unrelated pairs): how often the
  offset is at the range's edge (|offset| >= 13, 6 of 31 offsets) and within +-1 (3 of 31). An
  unbiased comparison puts unrelated pairs at no offset in particular; argmin of a smooth random
  curve favours the ends of its range somewhat even so (a correlated-noise control is printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # audio_driven's report writer

MODES = {"padded": True, "overlap": False}  # name -> pad_audio


def signals(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, mouth signal, 16 kHz audio) of each MP4 in `folder`."""
    from avgen.media import read_mp4
    from eval.landmarks import mouth_signal

    out = []
    for path in sorted(folder.glob("*.mp4")):
        if "-audio-of-" in path.name:
            continue
        clip = read_mp4(path, fps=25, sample_rate=16000)
        out.append((path.stem, mouth_signal(clip.frames)[0], clip.audio))
    return out


def scored(mouth: np.ndarray, audio: np.ndarray) -> dict[str, tuple[int, float]]:
    """{mode: (offset, confidence)} of the landmarks backend's comparison, the features made once."""
    from eval.landmarks import signal_features
    from eval.protocol import sync_offset

    video, heard = signal_features(mouth, audio)
    return {mode: (r.av_offset_frames, r.sync_confidence)
            for mode, r in ((m, sync_offset(video, heard, pad_audio=pad)) for m, pad in MODES.items())}  # fmt: skip


def smooth_noise_offsets(lengths: list[int], seed: int = 0) -> np.ndarray:
    """|offset| chosen between two independent smooth random signals of each length: the argmin's own
    preference among offsets, with no padding involved."""
    from eval.landmarks import features
    from eval.protocol import sync_offset

    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        a, b = (np.convolve(rng.standard_normal(n + 6), np.hanning(7), "valid")[:n] for _ in range(2))
        out.append(abs(sync_offset(features(a), features(b), pad_audio=False).av_offset_frames))
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="folders of MP4s, one group each")
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--md", help="also write the markdown block here")
    args = p.parse_args(argv)
    import audio_driven as ad

    if len({Path(f).name for f in args.folders}) < len(args.folders):
        p.error("each folder is a group named by its last part: give folders of different names")
    groups = {Path(f).name: signals(Path(f)) for f in args.folders}
    if few := [f for f in args.folders if len(groups[Path(f).name]) < 2]:
        p.error(f"each folder needs 2 or more MP4s (a clip and another's audio): {' '.join(few)}")
    report: dict = {"groups": {}, "unrelated_pairs": {}}
    for group, clips in groups.items():
        entry = {"clips": len(clips)}
        own_both = [scored(m, a) for _, m, a in clips]
        other_both = [scored(m, clips[(i + 1) % len(clips)][2]) for i, (_, m, _) in enumerate(clips)]
        for mode in MODES:
            own = [s[mode] for s in own_both]
            other = [s[mode][1] for s in other_both]
            offsets = np.abs([o for o, _ in own])
            entry[mode] = {"offsets": [int(o) for o, _ in own], "mean_abs_offset": float(offsets.mean()),
                           "off_by_more_than_1": int((offsets > 1).sum()),
                           "confidence": float(np.mean([c for _, c in own])), "other_confidence": float(np.mean(other)),
                           "own_other_of_means": float(np.mean([c for _, c in own]) / np.mean(other))}  # fmt: skip
        report["groups"][group] = entry
    every = [(m, a) for clips in groups.values() for _, m, a in clips]
    unrelated = [scored(m, every[j][1]) for i, (m, _) in enumerate(every) for j in range(len(every)) if j != i]
    for mode in MODES:
        offsets = np.abs([s[mode][0] for s in unrelated])
        report["unrelated_pairs"][mode] = {"pairs": len(offsets), "edge_fraction": float(np.mean(offsets >= 13)),
                                           "within_1_fraction": float(np.mean(offsets <= 1))}  # fmt: skip
    noise = smooth_noise_offsets([len(m) for m, _ in every])
    report["smooth_noise_control"] = {"edge_fraction": float(np.mean(noise >= 13)),
                                      "within_1_fraction": float(np.mean(noise <= 1)), "pairs": len(noise)}  # fmt: skip
    lines = ["### The landmarks backend's offset with and without zero-padded audio", "",
             f"Written by `scripts/landmarks_protocol.py` on {', '.join(f'`{f}`' for f in args.folders)}; "
             "each cell: padded (the SyncNet reference) / overlap (each offset over the frames whose shifted "
             "audio exists: the backend since 2026-12-01).", "",
             "| group | clips | mean abs offset (padded / overlap) | off by > 1 | confidence | own/other of means |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for group, e in report["groups"].items():
        pad, ovl = e["padded"], e["overlap"]
        lines.append(f"| {group} | {e['clips']} | {pad['mean_abs_offset']:.2f} / {ovl['mean_abs_offset']:.2f} | "
                     f"{pad['off_by_more_than_1']} / {ovl['off_by_more_than_1']} | "
                     f"{pad['confidence']:.2f} / {ovl['confidence']:.2f} | "
                     f"{pad['own_other_of_means']:.2f} / {ovl['own_other_of_means']:.2f} |")  # fmt: skip
    u = report["unrelated_pairs"]
    lines += ["", f"Unrelated pairs ({u['padded']['pairs']}): offset at the edge (|offset| >= 13, 6 of 31 offsets) "
              f"{u['padded']['edge_fraction']:.3f} padded / {u['overlap']['edge_fraction']:.3f} overlap "
              f"(smooth-noise control {report['smooth_noise_control']['edge_fraction']:.3f}); within +-1 (3 of 31) "
              f"{u['padded']['within_1_fraction']:.3f} / {u['overlap']['within_1_fraction']:.3f} "
              f"(control {report['smooth_noise_control']['within_1_fraction']:.3f})."]  # fmt: skip
    ad.write_report(report, args.out, args.md, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
