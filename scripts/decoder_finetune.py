#!/usr/bin/env python
"""Experiment (issue 10): does a better video decoder give generated mouths more sync?

    python scripts/decoder_finetune.py --out docs/results/decoder_finetune.json

Fine-tunes only the decoder of the checkpoint's video autoencoder (encoder and latent statistics
frozen, so the transformer's latent space is unchanged) on --clips train-split clips of 2 s, with an
L1 + MSE reconstruction loss weighted by 1 + --motion-weight x (each pixel's standard deviation over
its clip, over the clip's largest): the mouth and eyes, which move, weigh up to 1 + w times the
still background. Then scores the codec round trip (encode, decode, H.264/AAC mux with the clip's
own speech) of --heldout held-out clips (make_sample(i, "heldout", seed=0)) by the learned scorer,
with the decoder before and after, beside the ground truth itself; and the mean absolute pixel error
(0-255) of the round trip. Writes the JSON; the fine-tuned decoder is not saved into any checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def round_trip_scores(codec, samples, folder: Path, scorer) -> dict:
    from avgen.media import write_mp4
    from eval.run import score_clip

    folder.mkdir()
    confidence, error = [], []
    for i, sample in enumerate(samples):
        decoded = codec.round_trip(torch.from_numpy(sample.frames)).numpy()
        path = folder / f"clip{i:03d}.mp4"
        write_mp4(path, decoded, sample.audio)
        confidence.append(score_clip(str(path), scorer)["sync_confidence"])
        error.append(float(np.abs(decoded.astype(np.float64) - sample.frames).mean()))
    return {"learned_confidence": float(np.mean(confidence)), "pixel_error": float(np.mean(error)),
            "per_clip_confidence": confidence}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="default: the shipped weights")
    p.add_argument("--clips", type=int, default=400, help="train-split clips of 2 s (default 400)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64, help="frames per step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--motion-weight", type=float, default=4.0)
    p.add_argument("--heldout", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    from avgen.checkpoint import default_checkpoint, file_hash, load_checkpoint
    from avgen.data import make_sample
    from avgen.files import write_text_atomic
    from avgen.media import write_mp4
    from avgen.video_codec import frames_to_tensor
    from eval.run import EvalSettings, SyncScorer, score_clip

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    codec = load_checkpoint(checkpoint, only=("video_codec",)).video_codec
    heldout = [make_sample(i, "heldout", seed=0) for i in range(args.heldout)]
    report = {"checkpoint": str(checkpoint), "checkpoint_hash": file_hash(checkpoint), "settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="avgen-decoder-ft-") as tmp:
        tmp = Path(tmp)
        scorer = SyncScorer(EvalSettings(backend="learned"))
        truth = []
        for i, sample in enumerate(heldout):
            write_mp4(tmp / f"truth{i:03d}.mp4", sample.frames, sample.audio)
            truth.append(score_clip(str(tmp / f"truth{i:03d}.mp4"), scorer)["sync_confidence"])
        report["ground_truth_confidence"] = float(np.mean(truth))
        report["before"] = round_trip_scores(codec.eval(), heldout, tmp / "before", scorer)

        frames, latents, weights = [], [], []
        with torch.no_grad():
            for i in range(args.clips):
                x = frames_to_tensor(torch.from_numpy(make_sample(i, "train", seconds=2.0).frames))
                motion = x.std(dim=0).mean(dim=0)
                frames.append(x.half())
                latents.append(codec.encode(x))
                weights.append((motion / motion.max().clamp_min(1e-6)).half()[None].expand(len(x), -1, -1))
        frames, latents, weights = torch.cat(frames), torch.cat(latents), torch.cat(weights)
        codec.train()
        optimizer = torch.optim.AdamW(codec.decoder.parameters(), lr=args.lr, weight_decay=0.0)
        began, losses = time.monotonic(), []
        for step in range(args.steps):
            for group in optimizer.param_groups:  # cosine to 10%
                group["lr"] = args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps)))
            pick = torch.randint(0, len(frames), (args.batch,))
            x, weight = frames[pick].float(), 1 + args.motion_weight * weights[pick].float()[:, None]
            error = codec.decode(latents[pick]) - x
            loss = (error.abs() * weight).mean() + (error.pow(2) * weight).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if (step + 1) % 100 == 0:
                print(f"step {step + 1}/{args.steps} loss {np.mean(losses[-100:]):.4f} "
                      f"{time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
        report["train_seconds"] = round(time.monotonic() - began, 1)
        report["loss_first_last_100"] = [float(np.mean(losses[:100])), float(np.mean(losses[-100:]))]
        report["after"] = round_trip_scores(codec.eval(), heldout, tmp / "after", scorer)
    write_text_atomic(Path(args.out), json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("ground_truth_confidence", "train_seconds")}),
          {k: {m: round(report[k][m], 4) for m in ("learned_confidence", "pixel_error")} for k in ("before", "after")})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
