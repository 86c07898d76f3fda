"""Fit a checkpoint's phone prior alone, reading the clean audio too (Config.prior_audio), on a
training latent cache; the transformer is left as it is. An experiment of issue 10: can the prior
follow given speech beyond the phones recognised from it?

    python scripts/fit_prior.py avgen/weights/tiny.safetensors --cache runs/pa-base/latents-...pt \
        --heard runs/pa-base/heard-512.pt --out runs/fit-prior/tiny-heard.safetensors

Each step draws windows of the cache; a share `--audio-prob` is audio-driven (the clean audio
latents given, the phones recognised from the audio, as `avgen generate --audio` hears them), the
rest text-driven (the exact phones, no audio). The target is the prior's own (what moves in each
frame, `avgen.model.moving_part`). The last `--held-out` windows are only scored (the mouth r of the
prior before and after, in both modes); the step that scores best with the audio is kept.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def scores(prior, video, audio, phones, heard) -> dict:
    import torch
    from phone_mouth import mouth_r

    with torch.no_grad():
        out = {"text-driven": mouth_r(prior(phones), video)[0], "heard phones": mouth_r(prior(heard), video)[0]}
        if hasattr(prior, "audio"):
            out["heard phones + audio"] = mouth_r(prior(heard, audio), video)[0]
    return {k: round(v, 4) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint with a phone prior")
    p.add_argument("--cache", required=True, help="a training latent cache of this checkpoint's codecs")
    p.add_argument("--heard", required=True, help="the cache's heard-phones file (train heard_phones=)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32, help="windows a step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--audio-prob", type=float, default=0.5)
    p.add_argument("--held-out", type=int, default=64)
    p.add_argument(
        "--train",
        choices=("audio", "all"),
        default="audio",
        help="audio: only the new audio input (the phone path stays the checkpoint's); all: the whole prior",
    )
    p.add_argument("--every", type=int, default=100, help="score the held-out windows every N steps; keep the best")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.steps, args.batch, args.every, args.held_out) < 1 or not 0 <= args.audio_prob <= 1:
        p.error("--steps, --batch, --every and --held-out must be at least 1, --audio-prob in [0, 1]")
    for path in (args.checkpoint, args.cache, args.heard):
        if not Path(path).is_file():
            p.error(f"{path} does not exist")
    import torch

    from avgen.checkpoint import file_hash, load_checkpoint, read_metadata, save_checkpoint
    from avgen.model import PhonePrior, moving_part

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = load_checkpoint(args.checkpoint)
    if not model.cfg.phone_prior:
        p.error(f"{args.checkpoint} has no phone prior")
    cache, heard = torch.load(args.cache), torch.load(args.heard)["heard"]
    video, audio, phones = cache["video"].float(), cache["audio"].float(), cache["phones"]
    n = len(video) - args.held_out
    if n < 1 or heard.shape != phones.shape:
        p.error(f"the cache has {len(video)} windows of {tuple(phones.shape)} phones, the heard file "
                f"{tuple(heard.shape)}: they must match, and --held-out leave some to fit")  # fmt: skip
    held = (video[n:], audio[n:], phones[n:], heard[n:])
    report = {"before": scores(model.transformer.phone_prior, *held)}
    cfg = dataclasses.replace(model.cfg, prior_audio=True)
    prior = PhonePrior(cfg)
    missing, unexpected = prior.load_state_dict(model.transformer.phone_prior.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("audio.") for k in missing), (missing, unexpected)
    trained = prior.audio.parameters() if args.train == "audio" else prior.parameters()
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.01)
    best, best_state = -1.0, None
    target = moving_part(video)
    for step in range(1, args.steps + 1):
        i = torch.randint(0, n, (args.batch,))
        given = torch.rand(args.batch) < args.audio_prob
        ids = torch.where(given[:, None], heard[i], phones[i])
        loss = (prior(ids, audio[i], given[:, None].expand_as(ids)) - target[i]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0 or step == args.steps:
            now = scores(prior, *held)
            print(f"step {step} loss {loss.item():.5f} held-out {now}", flush=True)
            if now["heard phones + audio"] > best:
                best, best_state, report["best_step"] = (
                    now["heard phones + audio"],
                    copy.deepcopy(prior.state_dict()),
                    step,
                )
    prior.load_state_dict(best_state)
    report["after"] = scores(prior, *held)
    model.cfg = model.transformer.cfg = cfg
    model.transformer.phone_prior = prior
    # the source's provenance (steps, objective, training config) stays: the transformer is its own
    meta = {k: v for k, v in read_metadata(args.checkpoint).items() if k not in ("format", "config")}
    meta |= {"prior_fitted_from": f"{Path(args.checkpoint).name} sha256 {file_hash(args.checkpoint)}",
             "prior_fit": json.dumps(vars(args))}  # fmt: skip
    save_checkpoint(model, args.out, metadata=meta)
    print(json.dumps(report, indent=1))
    Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
