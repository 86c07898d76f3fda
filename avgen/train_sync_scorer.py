"""Train the `learned` lip-sync scorer (eval.learned) on avgen's synthetic talking-head corpus.

    python -m avgen.train_sync_scorer --steps 1500 --out eval/weights/learned_sync.safetensors
    python -m avgen.train_sync_scorer --eval-only 50 --out eval/weights/learned_sync.safetensors

The training side of the scorer: it imports the corpus (avgen.data), which eval/ never does; eval.learned
holds the network and its inference, and reads what this writes. Steps:

1. Cache (`--work DIR`/cache_*.npz, built once, in chunks, resumable): `--clips` train-split samples
   make_sample(i, "train", seconds=--seconds). A fraction `--other-voices` (default 0.75) is spoken by
   another voice than the identity's own, the face drawn from what that voice says when: half a random
   synthetic voice (avgen.data.voices), half an espeak-ng training voice (avgen.data.espeak: another
   synthesiser, other accents; none of the voices evaluation uses), half of them through a random room
   and channel (augment_speech). Half of all clips first get frame-level damage (pixel noise,
   blur, per-frame brightness/contrast flicker) so the face finder and the mouth patches see what
   generated video looks like; then the mouth patches are taken with eval.landmarks.mouth_patches,
   exactly as the scorer takes them at inference. Kept: patches (T, 16, 32) and the audio.
2. Train (checkpoint `--work DIR`/ckpt.pt every 50 steps; a rerun resumes): each step takes `--batch`
   cached clips, a random `--frames`-frame stretch of each, augments the patches (per-frame
   brightness/contrast, noise, blur, a small shift/scale per clip) and the audio (gain, noise, a
   sub-frame jitter of up to 10 ms), and minimises a symmetric InfoNCE loss: each video window
   against every audio window of the batch, its aligned window the positive, the same clip's audio
   shifted by any number of frames (hard) and other clips' audio (easy) the negatives.
3. Write `--out` (safetensors, config + steps + training data in the metadata) and report held-out
   accuracy: offset within +-1 frame on held-out clips (unseen identities and sentences) with their
   audio in sync and shifted, and mean confidence with the clip's own vs another clip's audio, for
   each of three speakers: the identity's own voice, a random synthetic voice, and espeak-ng's
   evaluation voices (`--eval-only N --report FILE` for that report alone).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from avgen.files import atomic_path, write_text_atomic
from eval.landmarks import mouth_patches
from eval.learned import (
    FORMAT,
    SAMPLES_PER_FRAME,
    TRAINED_ON,
    WEIGHTS,
    LearnedConfig,
    LearnedSync,
    audio_windows,
    load_learned,
    log_mel,
    score_learned,
    video_windows,
)

CHUNK = 50  # clips per cache file


# ------------------------------------------------------------------ cache


def damage_frames(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Frame-level damage like generated video's: noise, blur, per-frame brightness/contrast flicker."""
    x = frames.astype(np.float32)
    t = len(x)
    gain = 1 + rng.uniform(0, 0.08) * rng.standard_normal(t)
    offset = rng.uniform(0, 8) * rng.standard_normal(t)
    x = x * gain[:, None, None, None] + offset[:, None, None, None]
    if rng.random() < 0.5:
        sigma = rng.uniform(0.4, 1.2)
        x = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in x])
    x = x + rng.uniform(0, 6) * rng.standard_normal(x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def speaker_of(i: int, seed: int, other_voices: float):
    """Who speaks cache clip `i`: "corpus" (the identity's own voice), a random synthetic voice or an
    espeak-ng training voice (each half of the `other_voices` fraction), as make_sample's keyword."""
    from avgen.data.espeak import training_voice
    from avgen.data.voices import random_voice

    rng = np.random.default_rng([seed, i, 11])
    draw = rng.random()
    if draw >= other_voices:
        return {}
    return {"voice": random_voice(rng)} if draw < other_voices / 2 else {"espeak": training_voice(rng)}


def build_cache(
    work: Path, clips: int, seconds: float, seed: int = 0, other_voices: float = 0.0, log=print
) -> tuple[np.ndarray, np.ndarray]:
    from avgen.data.corpus import make_sample
    from avgen.data.voices import augment_speech

    work.mkdir(parents=True, exist_ok=True)
    patches, audio = [], []
    for start in range(0, clips, CHUNK):
        end = min(clips, start + CHUNK)
        voices = f"_voices{other_voices:g}" if other_voices else ""
        path = work / f"cache_{seconds:g}s_seed{seed}{voices}_{start:05d}-{end:05d}.npz"
        if not path.is_file():
            t0 = time.time()
            p_chunk, a_chunk = [], []
            for i in range(start, end):
                speaker = speaker_of(i, seed, other_voices)
                sample = make_sample(i, "train", seed=seed, seconds=seconds, **speaker)
                frames, speech = sample.frames, sample.audio
                rng = np.random.default_rng([seed, i, 7])
                if rng.random() < 0.5:
                    frames = damage_frames(frames, rng)
                if speaker and rng.random() < 0.5:
                    speech = augment_speech(speech, rng)
                p, _, _ = mouth_patches(frames)
                p_chunk.append(p.astype(np.float16))
                a_chunk.append(speech.astype(np.float32))
            with atomic_path(path, suffix=".npz") as tmp:  # np.savez adds .npz to any other name
                np.savez(tmp, patches=np.stack(p_chunk), audio=np.stack(a_chunk))
            log(f"cache {path.name}: {len(p_chunk)} clips in {time.time() - t0:.0f} s")
        with np.load(path) as data:
            patches.append(data["patches"])
            audio.append(data["audio"])
    return np.concatenate(patches)[:clips], np.concatenate(audio)[:clips]


# ------------------------------------------------------------------ batches


def _augment_patches(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T, 16, 32) float32 0..255: small shift/scale for the clip, blur, per-frame brightness, noise."""
    t, h, w = p.shape
    if rng.random() < 0.8:
        scale = rng.uniform(0.9, 1.1)
        dx, dy = rng.uniform(-2.5, 2.5), rng.uniform(-1.5, 1.5)
        m = np.float32([[scale, 0, (1 - scale) * w / 2 + dx], [0, scale, (1 - scale) * h / 2 + dy]])
        drift = rng.uniform(-0.6, 0.6, 2)  # a slow slide over the stretch (head motion the tracker missed)
        out = np.empty_like(p)
        for i in range(t):
            mi = m.copy()
            mi[:, 2] += drift * (i / max(1, t - 1) - 0.5)
            out[i] = cv2.warpAffine(p[i], mi, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        p = out
    if rng.random() < 0.3:
        sigma = rng.uniform(0.3, 1.0)
        p = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in p])
    gain = rng.uniform(0.6, 1.4) * (1 + rng.uniform(0, 0.06) * rng.standard_normal(t))
    offset = rng.uniform(-30, 30) + rng.uniform(0, 6) * rng.standard_normal(t)
    p = p * gain[:, None, None] + offset[:, None, None]
    return p + rng.uniform(0, 8) * rng.standard_normal(p.shape).astype(np.float32)


def make_batch(
    patches: np.ndarray,
    audio: np.ndarray,
    batch: int,
    frames: int,
    config: LearnedConfig,
    rng: np.random.Generator,
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Video windows (B*(frames-4), 5, 16, 32) and the aligned audio windows (B*(frames-4), 1, 40, 20)."""
    clips = rng.choice(len(patches), batch, replace=False)
    total = patches.shape[1]
    v_all, a_all = [], []
    for c in clips:
        s = int(rng.integers(0, total - frames + 1))
        p = patches[c, s : s + frames].astype(np.float32)
        # audio of frames s..s+frames-1, plus the tail the last mel window reads (zero past the clip)
        lo = s * SAMPLES_PER_FRAME
        jitter = int(rng.integers(-160, 161)) if augment else 0  # sub-frame misalignment, up to 10 ms
        need = frames * SAMPLES_PER_FRAME + config.n_fft
        a = np.zeros(need, np.float32)
        src_lo = lo + jitter
        seg = audio[c, max(0, src_lo) : src_lo + need]
        a[max(0, -src_lo) : max(0, -src_lo) + len(seg)] = seg
        if augment:
            p = _augment_patches(p, rng)
            a = a * rng.uniform(0.1, 2.0)
            if rng.random() < 0.5:
                a = a + rng.uniform(0, 0.01) * rng.standard_normal(len(a)).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(p, np.float32))
        x = (x - x.mean()) / x.std().clamp_min(1.0 / 255)
        v_all.append(video_windows(x, config))
        a_all.append(audio_windows(log_mel(a.astype(np.float32), frames, config), config))
    return torch.cat(v_all), torch.cat(a_all)


def info_nce(v: torch.Tensor, a: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    logits = v @ a.T / temperature
    target = torch.arange(len(v))
    loss = 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))
    accuracy = (logits.argmax(1) == target).float().mean().item()
    return loss, accuracy


# ------------------------------------------------------------------ held-out evaluation


def shift_audio(audio: np.ndarray, k: int) -> np.ndarray:
    """Delay the audio by k frames (k < 0: advance), keeping its length; silence fills the gap."""
    n, s = len(audio), abs(int(k)) * SAMPLES_PER_FRAME
    if k >= 0:
        return np.concatenate([np.zeros(s, np.float32), audio])[:n]
    return np.concatenate([audio[s:], np.zeros(s, np.float32)])


HELDOUT_SPEAKERS = ("corpus", "random_voice", "espeak")


def heldout_samples(clips: int, seconds: float, speaker: str) -> list:
    """Held-out clips (unseen identities and sentences) spoken by the identity's own voice ("corpus"),
    a random synthetic voice, or espeak-ng's evaluation voices (none of them in any training data)."""
    from avgen.data.corpus import make_sample
    from avgen.data.espeak import EVALUATION_VOICES
    from avgen.data.voices import random_voice

    def voice_of(i: int) -> dict:  # make_sample's keyword for held-out clip i
        if speaker == "random_voice":
            return {"voice": random_voice(np.random.default_rng([0xE7A1, i]))}
        if speaker == "espeak":
            return {"espeak": EVALUATION_VOICES[i % len(EVALUATION_VOICES)]}
        return {}

    return [make_sample(i, "heldout", seconds=seconds, **voice_of(i)) for i in range(clips)]


def evaluate_heldout(
    model: LearnedSync, clips: int = 50, seconds: float = 6.0, shifts=(0, 2, -2, 5, -5, 10, -10),
    speakers=HELDOUT_SPEAKERS, log=print,
) -> dict:  # fmt: skip
    """Per speaker: offset within +-1 frame of the audio shift, mean confidence with the clip's own
    audio and with the next clip's, and how often the own audio wins."""
    model.eval()
    report = {"clips": clips, "seconds": seconds}
    for speaker in speakers:
        samples = heldout_samples(clips, seconds, speaker)
        hits = {k: 0 for k in shifts}
        conf_synced, conf_other = [], []
        for i, sample in enumerate(samples):
            for k in shifts:
                result, _ = score_learned(sample.frames, shift_audio(sample.audio, k), model)
                hits[k] += abs(result.av_offset_frames - (-k)) <= 1
                if k == 0:
                    conf_synced.append(result.sync_confidence)
            other = samples[(i + 1) % len(samples)].audio
            conf_other.append(score_learned(sample.frames, other, model)[0].sync_confidence)
        report[speaker] = {
            "offset_within_1": {str(k): hits[k] / clips for k in shifts},
            "offset_within_1_all": sum(hits.values()) / (clips * len(shifts)),
            "confidence_synced": float(np.mean(conf_synced)),
            "confidence_other_audio": float(np.mean(conf_other)),
            "synced_beats_other": float(np.mean(np.array(conf_synced) > np.array(conf_other))),
        }
        log(json.dumps({speaker: report[speaker]}))
    return report


# ------------------------------------------------------------------ main


def save_learned(model: LearnedSync, path, steps: int, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.config.to_json(), "steps": str(int(steps)), "trained_on": TRAINED_ON}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # never a half-written weight file
        save_file(state, str(tmp), metadata=meta)


def train(args) -> LearnedSync:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    log_path = work / "train.log"
    work.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    patches, audio = build_cache(work, args.clips, args.seconds, args.seed, args.other_voices, log)
    log(f"cache: {len(patches)} clips of {patches.shape[1]} frames")

    config = LearnedConfig()
    torch.manual_seed(args.seed)
    model = LearnedSync(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step = 0
    ckpt = work / "ckpt.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log(f"resumed from {ckpt} at step {step}")
    rng = np.random.default_rng([args.seed, step])
    warmup = min(100, args.steps // 10)

    def lr_at(s: int) -> float:
        if s < warmup:
            return args.lr * (s + 1) / warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, args.steps - warmup)))

    t0, elapsed0 = time.time(), 0.0 if step == 0 else state.get("elapsed", 0.0)
    losses, accs = [], []
    model.train()
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        v, a = make_batch(patches, audio, args.batch, args.frames, config, rng)
        loss, acc = info_nce(model.embed_video(v), model.embed_audio(a), args.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        accs.append(acc)
        if step % 25 == 0 or step == args.steps:
            log(
                f"step {step}/{args.steps} loss {np.mean(losses):.3f} window acc {np.mean(accs):.3f} "
                f"lr {lr_at(step - 1):.2e} {time.time() - t0 + elapsed0:.0f} s"
            )
            losses, accs = [], []
        if step % 50 == 0 or step == args.steps:
            with atomic_path(ckpt) as tmp:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "opt": opt.state_dict(),
                        "step": step,
                        "elapsed": time.time() - t0 + elapsed0,
                    },
                    tmp,
                )
    train_seconds = time.time() - t0 + elapsed0
    model.eval()
    save_learned(
        model,
        args.out,
        step,
        extra={
            "clips": args.clips,
            "clip_seconds": args.seconds,
            "other_voices": args.other_voices,
            "trained_on": TRAINED_ON
            + (
                f", {args.other_voices:.0%} of the clips spoken by random synthetic voices and espeak-ng "
                "training voices (avgen.data.espeak.TRAINING_ACCENTS) instead of the identity's own"
                if args.other_voices
                else ""
            ),
            "batch": args.batch,
            "frames": args.frames,
            "temperature": args.temperature,
            "loss": "symmetric InfoNCE, aligned vs shifted/other-clip windows",
            "train_seconds": round(train_seconds),
            "seed": args.seed,
        },
    )
    log(f"wrote {args.out} after {step} steps ({train_seconds:.0f} s of training)")
    if args.eval:
        report = evaluate_heldout(load_learned(args.out), args.eval, log=log)
        write_text_atomic(work / "heldout.json", json.dumps(report, indent=1))
    return model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out", default=str(WEIGHTS))
    ap.add_argument("--work", default="runs/learned_sync", help="cache and resumable checkpoint folder")
    ap.add_argument("--clips", type=int, default=400, help="train-split clips in the cache")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each cached clip")
    ap.add_argument("--other-voices", type=float, default=0.75,
                    help="fraction of clips spoken by another voice than the identity's own: half a random "
                         "synthetic voice, half espeak-ng (needs libespeak-ng); half of them through a "
                         "random room and channel (default 0.75; 0: the corpus's voices only)")  # fmt: skip
    ap.add_argument("--batch", type=int, default=8, help="clips per step")
    ap.add_argument("--frames", type=int, default=40, help="frames per clip per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval", type=int, default=50, help="held-out clips to evaluate after training (0: none)")
    ap.add_argument("--eval-only", type=int, default=0, help="only evaluate --out on this many held-out clips")
    ap.add_argument("--report", help="with --eval-only: also write the report here (JSON)")
    args = ap.parse_args(argv)
    if args.frames < 5:
        ap.error(f"--frames must be at least 5 (one sync window), not {args.frames}")
    if args.frames > round(args.seconds * 25):
        ap.error(
            f"--frames {args.frames} is longer than a --seconds {args.seconds:g} clip ({round(args.seconds * 25)} frames)"
        )
    if not 0 <= args.other_voices <= 1:
        ap.error(f"--other-voices is a fraction between 0 and 1, not {args.other_voices}")
    if not 1 <= args.batch <= args.clips:
        ap.error(f"--batch must be between 1 and --clips ({args.clips}), not {args.batch}")
    if args.eval_only:
        torch.set_num_threads(args.threads)
        report = evaluate_heldout(load_learned(args.out), args.eval_only)
        if args.report:
            write_text_atomic(Path(args.report), json.dumps(report, indent=1) + "\n")
        return
    train(args)


if __name__ == "__main__":
    main()
