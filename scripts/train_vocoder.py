"""Train the learned vocoder (avgen/vocoder.py) on synthetic speech, on the CPU, for a time budget.

Data: a bank of utterances from `synthetic_speech("train", i)` (train-split sentences, wide random
voices and rates); each step refreshes a few of them and takes random 1 s crops, each augmented
(gain, added noise, band limit, a little reverberation) before its log-mel is taken, so the target
is the augmented waveform. Loss: mel L1 (the codec's log-mel of the output against the input) plus
the multi-resolution STFT distance (spectral convergence + log magnitude). AdamW, a cosine learning
rate over the wall-clock budget. Checkpoints (weights and optimizer state, safetensors) every
--save-every steps; --resume continues one.

    nohup nice -n 5 python scripts/train_vocoder.py --out runs/vocoder --minutes 30 > runs/vocoder.log 2>&1 &
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from avgen.audio_codec import AudioAutoencoder
from avgen.config import PRESETS
from avgen.data.voices import augment_speech, synthetic_speech
from avgen.files import atomic_path
from avgen.timeline import SAMPLE_RATE
from avgen.vocoder import Vocoder, load_vocoder, mr_stft_distance, save_vocoder

CROP = SAMPLE_RATE  # 1 s: 25 video frames, 100 mel frames


def crop(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(wave) < CROP:
        return np.pad(wave, (0, CROP - len(wave)))
    start = int(rng.integers(len(wave) - CROP + 1))
    return wave[start : start + CROP]


def save_checkpoint(path: Path, model: Vocoder, opt: torch.optim.Optimizer, state: dict) -> None:
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                tensors[f"opt.{names[id(p)]}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(state), "hparams": json.dumps(model.hparams)})


def load_checkpoint(path: Path, model: Vocoder, opt: torch.optim.Optimizer) -> dict:
    from safetensors import safe_open

    tensors = load_file(str(path), device=str(next(model.parameters()).device))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(model.named_parameters())
    for name, p in params.items():
        entry = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"opt.{name}.")}
        if entry:
            opt.state[p] = entry
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["state"])


class SpeechCrops(torch.utils.data.IterableDataset):
    """Endless augmented 1 s crops for data-loader workers: worker w of n synthesises utterances
    w, w + n, w + 2n, ... of stream `seed` (from `first` on) and takes `per_utterance` crops of each."""

    def __init__(self, seed: int, first: int, per_utterance: int = 4):
        self.seed, self.first, self.per_utterance = seed, first, per_utterance

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, self.first, worker])
        for index in itertools.count(self.first + worker, workers):
            wave = synthetic_speech("train", index, self.seed)
            for _ in range(self.per_utterance):
                yield torch.from_numpy(augment_speech(crop(wave, rng), rng))


def bank_batches(args, state: dict, rng: np.random.Generator):
    """In this process: a bank of utterances in memory, a few replaced each step (a CPU's pace)."""
    bank = [synthetic_speech("train", state["next_utterance"] + i, args.seed) for i in range(args.bank)]
    state["next_utterance"] += args.bank
    while True:
        for _ in range(args.refresh):
            bank[int(rng.integers(len(bank)))] = synthetic_speech("train", state["next_utterance"], args.seed)
            state["next_utterance"] += 1
        picks = rng.integers(len(bank), size=args.batch)
        yield torch.from_numpy(np.stack([augment_speech(crop(bank[i], rng), rng) for i in picks]))


def worker_batches(args, state: dict):
    """From `--workers` data-loader processes (an accelerator's pace); resuming starts on new utterances."""
    first = state["next_utterance"]
    state["next_utterance"] += 10**6  # a resumed run never repeats this run's utterances
    loader = torch.utils.data.DataLoader(SpeechCrops(args.seed, first), batch_size=args.batch,
                                         num_workers=args.workers, prefetch_factor=8, persistent_workers=True)  # fmt: skip
    yield from loader


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for checkpoints and the final weights")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget (the cosine schedule spans it)")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--bank", type=int, default=192, help="utterances held in memory")
    ap.add_argument("--refresh", type=int, default=3, help="utterances replaced each step")
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    ap.add_argument("--init", type=Path, help="start from these vocoder weights (e.g. the shipped ones)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0, help="data-loader processes (0: a bank in this process)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = PRESETS["tiny"]
    codec = AudioAutoencoder(cfg)  # only its log-mel transform is used
    model = Vocoder(cfg.n_mels, cfg.n_fft)
    if args.init:
        model.load_state_dict(load_vocoder(args.init).state_dict())
    model.to(args.device)
    codec.to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.8, 0.99), weight_decay=0.01)
    ckpt = args.out / "checkpoint.safetensors"
    state = {"step": 0, "elapsed": 0.0, "next_utterance": 0}
    if args.resume:
        state = load_checkpoint(ckpt, model, opt)
        print(f"resumed at step {state['step']} ({state['elapsed']:.0f} s)", flush=True)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    rng = np.random.default_rng([args.seed, state["step"]])
    batches = worker_batches(args, state) if args.workers else bank_batches(args, state, rng)
    budget = args.minutes * 60
    start = time.monotonic() - state["elapsed"]
    running: dict[str, float] = {}
    while (elapsed := time.monotonic() - start) < budget:
        target = next(batches).to(args.device, non_blocking=True)
        lr = args.lr * min(1.0, (state["step"] + 1) / 100) * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        for group in opt.param_groups:
            group["lr"] = lr
        mel = codec.log_mel(target)
        wave = model(mel)
        mel_l1 = (codec.log_mel(wave) - mel).abs().mean()
        mrstft = mr_stft_distance(wave, target)
        loss = mel_l1 + mrstft
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        for k, v in (("loss", loss), ("mel_l1", mel_l1), ("mrstft", mrstft)):
            running[k] = 0.98 * running.get(k, v.item()) + 0.02 * v.item()
        if state["step"] % 25 == 0:
            line = " ".join(f"{k} {v:.4f}" for k, v in running.items())
            print(f"step {state['step']} {elapsed:.0f}s lr {lr:.2e} {line}", flush=True)
        if state["step"] % args.save_every == 0:
            state["elapsed"] = time.monotonic() - start
            save_checkpoint(ckpt, model, opt, state | {"running": running})
    state["elapsed"] = time.monotonic() - start
    save_checkpoint(ckpt, model, opt, state | {"running": running})
    save_vocoder(model, args.out / "vocoder.safetensors", {"train": state | {"running": running}})
    print(f"done: {state['step']} steps in {state['elapsed']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
