#!/usr/bin/env python
"""How well a generation checkpoint maps phones to the mouth, in a minute and without generating.

    python scripts/phone_mouth.py avgen/weights/teacher/tiny.safetensors runs/x/model-flow-1000.safetensors \
        [--clips 32 --times 0.3 0.6 0.9 --json out.json]

Held-out corpus timelines are drawn as still faces (the corpus renderer, no head motion, no blinks),
so the only thing that moves is the mouth, and it is set by the phones. Each checkpoint's own codecs
encode the windows; the token that moves most in each window (the mouth) is followed. The clean
latents are noised to each time t, and the transformer's one-step prediction of the clean latents,
x0 = x_t - t * v, is compared with the truth on that token's variation over the window (its value
minus its mean over the frames): Pearson r and the predicted variation's size over the truth's.
Three ways, at the same noise: `cond` (the phones), `uncond` (no phones: the null phone, what
guidance subtracts) and `cond+audio` (the phones and the clean audio latents, as audio-driven
generation gives them). At high t the noise hides the mouth, so what the prediction gets right there
it read from the phones (or the audio): a model that maps phones to the mouth scores near 1 at every
t; `uncond` shows what the noisy input alone tells. A distilled checkpoint is asked for its
conditional velocity (guidance 1, step 0).

`--probe CACHE` also fits a small MLP on a training latent cache (`avgen train`'s latents-*.pt, made
by the first checkpoint's codecs) from each frame's phones and its neighbours' (+-2 frames) to the
frame's latents minus their mean over the window, and scores it on the same still windows: what a
direct map from the phones learns from the same data, without noise or a transformer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("cond", "uncond", "cond+audio")


def still_windows(model, clips: int, frames: int):
    """(video patches, audio latents, phones, reference patches) of `clips` held-out timelines drawn as
    still faces, `frames` long (shorter samples are skipped), encoded by `model`'s codecs."""
    import torch

    from avgen.data import make_sample
    from avgen.data.corpus import reference_frame
    from avgen.data.faces import face_for, mouth_track, render
    from avgen.model import patchify
    from avgen.timeline import SAMPLES_PER_FRAME
    from avgen.video_codec import frames_to_tensor

    video, audio, phones, reference = [], [], [], []
    patch = model.cfg.patch_size
    index = 0
    while len(video) < clips:
        sample = make_sample(index, split="heldout", seed=0)
        index += 1
        if len(sample.frames) < frames:
            continue
        drawn = render(face_for(sample.identity), mouth_track(sample.phones, frames), np.zeros(frames),
                       np.zeros((frames, 3)))  # fmt: skip
        latents = model.video_codec.encode(frames_to_tensor(torch.from_numpy(np.ascontiguousarray(drawn))))
        video.append(patchify(latents[None], patch)[0])
        wave = torch.from_numpy(sample.audio[: frames * SAMPLES_PER_FRAME])[None]
        audio.append(model.audio_codec.encode(wave)[0])
        phones.append(sample.phone_ids[:frames])
        ref = model.video_codec.encode(frames_to_tensor(torch.from_numpy(reference_frame(sample))[None]))
        reference.append(patchify(ref[:, None], patch)[0, 0])
    return tuple(torch.stack(x) for x in (video, audio, phones, reference))


def mouth_r(predicted, video) -> tuple[float, float]:
    """Pearson r and relative size of `predicted` (shaped as `video`, any offset) against what moves
    in `video`, on each window's mouth (the token that moves most) over the window's frames."""
    import torch

    from avgen.model import moving_part

    variation = moving_part(video)
    moving = variation.pow(2).mean(dim=(1, 3)).argmax(dim=1)
    rows = torch.arange(len(video))
    truth, guess = variation[rows, :, moving], moving_part(predicted[rows, :, moving])
    r = float(np.corrcoef(guess.flatten().numpy(), truth.flatten().numpy())[0, 1])
    return r, float(guess.pow(2).mean().sqrt() / truth.pow(2).mean().sqrt().clamp_min(1e-12))


PROBE_CONTEXT = 2  # frames each side


def phone_context(phones, context: int = PROBE_CONTEXT):
    """(B, T, (2 context + 1) * phones) one-hot phones of each frame and its neighbours (0 past the ends)."""
    import torch

    from avgen.phones import PHONES

    padded = torch.nn.functional.pad(torch.nn.functional.one_hot(phones.long(), len(PHONES)).float(),
                                     (0, 0, context, context))  # fmt: skip
    return torch.cat([padded[:, d : d + phones.shape[1]] for d in range(2 * context + 1)], dim=-1)


def probe(cache_path: str, windows: tuple, steps: int, seed: int = 0) -> float:
    """r of an MLP from phones in context to what moves in a frame, fitted on the cache's windows and
    scored on `windows` (still_windows's) at their mouth token, as `measure` scores a checkpoint."""
    import torch

    from avgen.model import moving_part

    torch.manual_seed(seed)
    cache = torch.load(cache_path)
    video = cache["video"].float()
    x, y = phone_context(cache["phones"]).flatten(0, 1), moving_part(video).flatten(0, 1).flatten(1)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 512), torch.nn.GELU(), torch.nn.Linear(512, 512),
                              torch.nn.GELU(), torch.nn.Linear(512, y.shape[1]))  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(steps):
        i = torch.randint(0, len(x), (1024,))
        loss = (net(x[i]) - y[i]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held_video, _, held_phones, _ = windows
    with torch.no_grad():
        predicted = net(phone_context(held_phones)).reshape(held_video.shape)
    return mouth_r(predicted, held_video)[0]


def measure(model, windows: tuple, times: list[float], seed: int = 0) -> dict:
    """{t: {mode: {"r", "amplitude"}}} of `model` on `windows` (still_windows's, its own codecs), and
    the phone prior's own r where the model has one (and with the clean audio, where it reads it)."""
    import torch

    from avgen.phones import NULL_PHONE, PHONE_IDS
    from avgen.pipeline import sampler_inputs

    video, audio, phones, reference = windows
    null = torch.full_like(phones, PHONE_IDS[NULL_PHONE])
    extra = sampler_inputs(model.cfg, 1.0, 0.0)
    g = torch.Generator().manual_seed(seed)
    out = {"windows": len(video), "frames": video.shape[1], "times": {}}
    with torch.no_grad():
        for t in times:
            noisy_v = (1 - t) * video + t * torch.randn(video.shape, generator=g)
            noisy_a = (1 - t) * audio + t * torch.randn(audio.shape, generator=g)
            video_t, audio_t = torch.full(video.shape[:3], t), torch.full(audio.shape[:2], t)
            result = {}
            for mode in MODES:
                given = mode == "cond+audio"
                v = model.transformer(noisy_v, audio if given else noisy_a, video_t,
                                      torch.zeros_like(audio_t) if given else audio_t,
                                      null if mode == "uncond" else phones, reference, **extra).video  # fmt: skip
                r, size = mouth_r(noisy_v - t * v, video)
                result[mode] = {"r": round(r, 4), "amplitude": round(size, 4)}
            out["times"][f"{t:g}"] = result
        if model.cfg.phone_prior:  # what the phone prior alone predicts (no noise, no transformer)
            out["prior_r"] = round(mouth_r(model.transformer.phone_prior(phones), video)[0], 4)
        if model.cfg.prior_audio:  # ... and reading the clean audio too (audio-driven video)
            out["prior_audio_r"] = round(mouth_r(model.transformer.phone_prior(phones, audio), video)[0], 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--frames", type=int, default=50, help="window length (50 = the 2 s training windows)")
    p.add_argument("--times", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("--probe", metavar="CACHE", help="also fit the phone->mouth MLP on this training latent cache")
    p.add_argument("--probe-steps", type=int, default=3000)
    args = p.parse_args(argv)
    if args.clips < 2 or args.frames < 2:
        p.error("--clips and --frames must be at least 2")
    if any(not 0 <= t <= 1 for t in args.times):
        p.error("--times must lie in [0, 1]")
    import torch

    torch.set_num_threads(args.threads)
    from avgen.checkpoint import load_checkpoint

    results, probe_windows = [], None
    for path in args.checkpoints:
        model = load_checkpoint(path).eval()
        with torch.no_grad():
            windows = still_windows(model, args.clips, args.frames)
        probe_windows = probe_windows or windows  # the probe is scored in the first checkpoint's latents
        result = {"checkpoint": path, **measure(model, windows, args.times)}
        results.append(result)
        for t, modes in result["times"].items():
            cells = " | ".join(f"{m} r {v['r']:.2f} size {v['amplitude']:.2f}" for m, v in modes.items())
            print(f"{path} t={t}: {cells}", flush=True)
        if "prior_r" in result:
            heard = f", with the clean audio {result['prior_audio_r']:.2f}" if "prior_audio_r" in result else ""
            print(f"{path} phone prior alone: r {result['prior_r']:.2f}{heard}", flush=True)
    if args.probe:
        r = probe(args.probe, probe_windows, args.probe_steps)
        results.append({"probe": args.probe, "codecs": args.checkpoints[0], "r": round(r, 4)})
        print(f"phones -> mouth MLP fitted on {args.probe}: r {r:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
