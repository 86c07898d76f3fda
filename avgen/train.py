"""Training, readable top to bottom: `avgen train codecs` then `avgen train model`.

Both stages take a TOML config file plus `key=value` overrides, write everything under `out`,
and resume exactly from `out/<stage>.state.pt` when run again (each step's randomness is seeded
from (seed, step), so a resumed run takes the same steps an uninterrupted one would).

codecs: the video and audio autoencoders on the synthetic corpus; then per-channel latent
        statistics so the transformer sees unit-scale latents. Writes out/codecs.safetensors.
model:  caches the corpus as latents with the frozen codecs, then trains the transformer with
        plain flow matching (objective = "flow") or Self-Flow (objective = "selfflow").
        Writes out/model.safetensors (EMA weights, a complete generation checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from avgen.checkpoint import AVGenModel, load_checkpoint, save_checkpoint
from avgen.config import SAMPLER_FIELDS, Config, preset
from avgen.files import atomic_path, file_hash
from avgen.model import AVTransformer, patchify
from avgen.objectives import (
    DISTILLED_STEPS,
    EMA,
    Batch,
    ProjectionHead,
    SelfFlowSettings,
    baseline_loss,
    distillation_loss,
    motion_weight,
    self_flow_loss,
)
from avgen.phones import NULL_PHONE, PHONE_IDS
from avgen.progress import ProgressBar
from avgen.sampling import CleanMask, Latents
from avgen.timeline import FPS
from avgen.video_codec import frames_to_tensor

if TYPE_CHECKING:
    from avgen.data import Sample


MIN_DISTILL_BATCH = 4  # samples per worker and step for objective=distill: guided-velocity and consistency rows


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "model"  # codecs | model
    preset: str = "tiny"
    out: str = "runs/tiny"
    seed: int = 0
    steps: int = 2000
    batch_size: int = 8
    lr: float = 3e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    bf16: bool = True  # autocast where the device supports it
    threads: int = 2
    device: str = "cpu"
    log_every: int = 10
    checkpoint_every: int = 100
    minutes: float = 0.0  # a wall-clock budget for this session: stop (and export) when it is spent; 0 = none
    keep_every: int = 0  # also keep model-<objective>-<step>.safetensors at multiples of this (0 = never)
    # data
    data: str = ""  # "" = the synthetic corpus; or a folder of MP4 talking-head clips (avgen.data.RealClips)
    corpus_clips: int = 512  # training windows rendered once (codecs) or cached as latents (model)
    clip_seconds: float = 2.0  # training window
    wide_voice_prob: float = 0.0  # share of clips spoken in a random wide voice (data/voices.py), not the identity's
    augment_prob: float = 0.0  # share of clips through augment_speech (noise, band limit, reverb, gain)
    espeak_voice_prob: float = 0.0  # share spoken by an espeak-ng training voice (data/espeak.py)
    heard_phones: str = ""  # audio-driven rows use the phones recognised from the audio (a file; made if absent)
    data_workers: int = 0  # processes rendering the corpus (0: this process)
    # model stage
    codecs: str = ""  # the codecs checkpoint; default out/codecs.safetensors
    init: str = ""  # fine-tune: start the transformer (and its EMA) from this generation checkpoint
    objective: str = "selfflow"  # selfflow | flow (the baseline) | distill (of `init`: one forward a step, few steps)
    # distill: go on distilling this student of `init` instead of starting from `init`'s conditional branch (e.g.
    # one whose phone prior scripts/fit_prior.py refitted, so the rest learns it); its phone prior stays as it is
    student: str = ""
    ema_decay: float = 0.999
    gamma: float = 0.8
    mask_ratio_video: float = 0.25
    mask_ratio_audio: float = 0.5
    cfg_dropout: float = 0.1  # transcript dropped (null phones) to learn the unconditional branch
    reference_prob: float = 0.5  # a frame of the clip given as the identity reference
    continuation_prob: float = 0.25  # the first frames given clean (chunked long clips)
    audio_driven_prob: float = 0.15  # all audio given clean (audio-driven video)
    motion_weight: float = 0.0  # flow loss of video tokens that move weighted up to 1 + this (objectives.motion_weight)
    hidden: int = 0  # transformer width trained from scratch (0: the codecs checkpoint's); a capacity experiment
    depth: int = 0  # transformer blocks trained from scratch (0: the codecs checkpoint's)
    phone_prior: bool = False  # add Config.phone_prior: from scratch, or to an `init` without one (starts as it)
    prior_audio: bool = False  # add Config.prior_audio (needs phone_prior=true): the prior reads given audio too
    # distributed (Ray Train): 0 = this process, or one worker per GPU when RAY_ADDRESS is set
    workers: int = 0
    cpus_per_worker: float = 1.0

    def __post_init__(self):
        if self.stage not in ("codecs", "model"):
            raise ValueError(f"stage must be 'codecs' or 'model', not {self.stage!r}")
        if self.objective not in ("selfflow", "flow", "distill"):
            raise ValueError(f"objective must be 'selfflow', 'flow' or 'distill', not {self.objective!r}")
        if self.objective == "distill" and not self.init:
            raise ValueError("objective=distill needs init=<the generation checkpoint to distil>")
        if self.objective == "distill" and self.batch_size // max(1, self.workers) < MIN_DISTILL_BATCH:
            raise ValueError(f"objective=distill needs at least {MIN_DISTILL_BATCH} samples per worker and step "
                             "(rows for the teacher's guided velocity and for self-consistency)")  # fmt: skip
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if self.motion_weight < 0:
            raise ValueError(f"motion_weight must be >= 0 (0: every video token alike), not {self.motion_weight}")
        if self.hidden < 0 or self.depth < 0:
            raise ValueError("hidden and depth must be >= 0 (0: the codecs checkpoint's transformer shape)")
        if self.student and self.objective != "distill":
            raise ValueError("student= continues a distillation: it needs objective=distill")
        if (self.phone_prior or self.prior_audio) and self.objective == "distill":
            raise ValueError("objective=distill takes its teacher's shape: phone_prior and prior_audio do not apply")
        if self.prior_audio and not self.phone_prior:
            raise ValueError("prior_audio=true is an input of the phone prior: add phone_prior=true")
        if (self.hidden or self.depth) and (self.init or self.objective == "distill"):
            raise ValueError("hidden= and depth= shape a transformer trained from scratch; init= and objective=distill "
                             "take the shape of their checkpoint")  # fmt: skip


def load_config(path: str | None, overrides: list[str], stage: str) -> TrainConfig:
    """A TOML file (flat keys, or a [train] table) plus key=value overrides, typed by the dataclass."""
    values: dict = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"cannot read config {path}: {e}") from None
        values.update(data.get("train", data))
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"override {item!r} is not key=value with a known key ({', '.join(fields)})")
        kind = type(getattr(TrainConfig(), key))
        try:
            values[key] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        except ValueError:
            raise ValueError(f"override {item!r}: {key} takes a {kind.__name__}, not {raw!r}") from None
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    return TrainConfig(**{**values, "stage": stage})


def step_generator(seed: int, step: int, salt: str = "") -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{step}:{salt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def learning_rate(cfg: TrainConfig, step: int, time_spent: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10% over the steps, or over the `minutes` budget if that
    ends first (`time_spent`: the share of it used)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = max((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps), time_spent)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def autocast(cfg: TrainConfig):
    return torch.autocast(device_type=torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.bf16)


class TrainingLog:
    """out/<stage>.log.jsonl (one line per logged step) and a PNG of the loss curves."""

    def __init__(self, out: Path, stage: str):
        self.path, self.png = out / f"{stage}.log.jsonl", out / f"{stage}.loss.png"

    def truncate_after(self, step: int) -> None:
        if self.path.exists():  # a resumed run rewrites what came after its checkpoint
            rows = [r for r in self.rows() if r["step"] <= step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        if not rows:
            return
        keys = [k for k in rows[-1] if k.startswith("loss")]
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in keys:
            ax.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r], label=key)
        ax.set(xlabel="step", ylabel="loss", yscale="symlog", title=self.path.stem)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.png, dpi=90)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# data


VOICE_SALT = 0xA0D10  # the wide voice and augmentation of clip i: independent of the corpus's own streams


def corpus_sample(index: int, cfg: TrainConfig, model_cfg):
    """Training clip `index`: the corpus's sample, for a share `wide_voice_prob` of clips in a random wide
    voice, for a share `espeak_voice_prob` spoken by an espeak-ng training voice (another synthesiser;
    the face says what it spoke, when it spoke it), and for a share `augment_prob` through another room
    and channel (augment_speech)."""
    from avgen.data import make_sample
    from avgen.data.espeak import training_voice
    from avgen.data.voices import augment_speech, random_voice

    frames = round(cfg.clip_seconds * FPS)
    rng = np.random.default_rng([VOICE_SALT, cfg.seed, index])
    voice = random_voice(rng) if rng.random() < cfg.wide_voice_prob else None
    espeak = training_voice(rng) if cfg.espeak_voice_prob and rng.random() < cfg.espeak_voice_prob else None
    speaker = {"voice": voice, "espeak": espeak}
    sample = make_sample(index, split="train", seed=cfg.seed, size=model_cfg.height, **speaker)
    if len(sample.frames) < frames:  # short sentence: the same sentence over the whole window
        sample = make_sample(index, split="train", seed=cfg.seed, seconds=cfg.clip_seconds, size=model_cfg.height,
                             **speaker)  # fmt: skip
    if rng.random() < cfg.augment_prob:
        sample = dataclasses.replace(sample, audio=augment_speech(sample.audio, rng, gain_db=(-12.0, 3.0)))
    return sample


def _corpus_window(args: tuple[int, TrainConfig, object]):
    from avgen.data import reference_frame

    sample = corpus_sample(*args)
    return sample, reference_frame(sample)


def training_windows(cfg: TrainConfig, model_cfg) -> tuple[int, Iterator[tuple[Sample, np.ndarray]]]:
    """How many training windows there are, and (Sample, reference frame) for each: the first
    `corpus_clips` of the synthetic corpus, or, with `data` set to a folder of MP4 clips, up to
    `corpus_clips` windows of those clips (face-cropped; train split only; spread evenly over them)."""
    if not cfg.data:
        return cfg.corpus_clips, _corpus_map(_corpus_window, cfg, model_cfg)
    from avgen.data import RealClips

    clips = RealClips(cfg.data, split="train", seconds=cfg.clip_seconds, size=model_cfg.height,
                      progress=ProgressBar("prepare clips"))  # fmt: skip
    if len(clips) == 0:
        reasons = "; ".join(f"{p.name}: {why}" for p, why in clips.skipped[:3]) or "no MP4 clips in the train split"
        raise ValueError(f"no training windows of {cfg.clip_seconds:g} s under {cfg.data} ({reasons})")
    count = min(cfg.corpus_clips, len(clips))
    chosen = (k * len(clips) // count for k in range(count))
    return count, ((clips.sample(i), clips.reference_frame(i)) for i in chosen)


def _corpus_map(function, cfg: TrainConfig, model_cfg) -> Iterator:
    """function((i, cfg, model_cfg)) for each corpus clip i, in order: in this process, or on
    `data_workers` spawned processes (a bounded number of results in flight)."""
    jobs = ((i, cfg, model_cfg) for i in range(cfg.corpus_clips))
    if cfg.data_workers <= 1:
        yield from map(function, jobs)
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(cfg.data_workers, initializer=torch.set_num_threads,
                                                   initargs=(1,)) as pool:  # fmt: skip
        yield from pool.imap(function, jobs, chunksize=4)


def render_pool(cfg: TrainConfig, model_cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Codec training data: frames (N, H, W, 3) uint8 and audio windows (M, 640 * 50)."""
    frames, audio, window = [], [], round(cfg.clip_seconds * FPS) * 640
    count, windows = training_windows(cfg, model_cfg)
    bar = ProgressBar("render corpus")
    for i, (sample, _) in enumerate(windows):
        frames.append(torch.from_numpy(sample.frames[::4]))  # every 4th frame: enough variety
        audio.append(torch.from_numpy(sample.audio[:window]))
        bar((i + 1) / count, f"{i + 1} clips")
    return torch.cat(frames), torch.stack(audio)


@dataclass
class LatentCache:
    video: torch.Tensor  # (N, T, Nv, Pv)
    audio: torch.Tensor  # (N, T, Pa)
    phones: torch.Tensor  # (N, T)
    reference: torch.Tensor  # (N, Nv, Pv): a closed-mouth frame of the clip's identity
    heard: torch.Tensor | None = None  # (N, T): phones recognised from the clip's audio (`heard_phones`)


@torch.no_grad()
def build_latent_cache(cfg: TrainConfig, model: AVGenModel, path: Path) -> LatentCache:
    if path.exists():
        return dataclasses.replace(LatentCache(**torch.load(path)), heard=load_heard_phones(cfg))
    mc, frames = model.cfg, round(cfg.clip_seconds * FPS)
    device = next(model.video_codec.parameters()).device  # the cache itself is kept on the CPU
    video, audio, phones, reference = [], [], [], []
    count, windows = training_windows(cfg, mc)
    bar = ProgressBar("encode corpus")
    for i, (sample, reference_image) in enumerate(windows):
        start = 0  # windows start with the clip: its leading silence included
        clip = sample.frames[start : start + frames]
        v = model.video_codec.encode(frames_to_tensor(torch.from_numpy(clip)).to(device)).cpu()
        video.append(patchify(v[None], mc.patch_size)[0])
        wave = torch.from_numpy(sample.audio[start * 640 : (start + frames) * 640])[None]
        audio.append(model.audio_codec.encode(wave.to(device))[0].cpu())
        phones.append(sample.phone_ids[start : start + frames])
        ref = model.video_codec.encode(frames_to_tensor(torch.from_numpy(reference_image)[None]).to(device)).cpu()
        reference.append(patchify(ref[:, None], mc.patch_size)[0, 0])
        bar((i + 1) / count, f"{i + 1} clips")
    cache = LatentCache(torch.stack(video), torch.stack(audio), torch.stack(phones), torch.stack(reference))
    with atomic_path(path) as tmp:
        torch.save(dataclasses.asdict(cache), tmp)
    return dataclasses.replace(cache, heard=load_heard_phones(cfg))


def _windows_key(cfg: TrainConfig) -> str:
    """What decides the training windows' content (not how they are encoded)."""
    key = f"seed{cfg.seed}-{cfg.corpus_clips}-{cfg.clip_seconds:g}s"
    if cfg.wide_voice_prob or cfg.augment_prob:
        key += f"-wide{cfg.wide_voice_prob:g}-aug{cfg.augment_prob:g}"
    if cfg.espeak_voice_prob:
        key += f"-espeak{cfg.espeak_voice_prob:g}"
    if cfg.data:  # one cache per clip folder
        key += "-" + hashlib.sha256(str(Path(cfg.data).resolve()).encode()).hexdigest()[:8]
    return key


def heard_phone_ids(audio: np.ndarray, text: str, frames: int) -> torch.Tensor:
    """(frames,) phone ids as `avgen generate --audio` reads them off the speech (avgen.alignment)."""
    from avgen.alignment import phones_from_speech
    from avgen.phones import frame_phone_ids

    return frame_phone_ids(phones_from_speech(audio, text), frames)


def _heard_window(index: int, sample) -> torch.Tensor:
    """Phone ids over the whole utterance (cut to the window by the caller), as generation hears them."""
    text = sample.text if index % 2 == 0 else ""  # half aligned to the transcript, half recognised freely
    return heard_phone_ids(sample.audio, text, len(sample.frames))


def _heard_corpus_clip(args: tuple[int, TrainConfig, object]) -> torch.Tensor:
    return _heard_window(args[0], corpus_sample(*args))


def load_heard_phones(cfg: TrainConfig) -> torch.Tensor | None:
    """The `heard_phones` file of these windows, made first if absent (needs pocketsphinx: made on one
    machine, it travels to the one that trains). None when `heard_phones` is not set."""
    if not cfg.heard_phones:
        return None
    path, key = Path(cfg.heard_phones), _windows_key(cfg)
    if not path.exists():
        frames = round(cfg.clip_seconds * FPS)
        if cfg.data:
            count, windows = training_windows(cfg, preset(cfg.preset))
            heard_iter = (_heard_window(i, sample) for i, (sample, _) in enumerate(windows))
        else:
            count, heard_iter = cfg.corpus_clips, _corpus_map(_heard_corpus_clip, cfg, preset(cfg.preset))
        bar, heard = ProgressBar("recognise phones"), []
        for i, ids in enumerate(heard_iter):
            heard.append(ids[:frames])
            bar((i + 1) / count, f"{i + 1} clips")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"windows": key, "heard": torch.stack(heard)}, tmp)
    saved = torch.load(path)
    if saved["windows"] != key:
        raise ValueError(f"{path} holds the phones of other training windows ({saved['windows']}, not {key})")
    return saved["heard"]


def make_batch(
    cache: LatentCache, cfg: TrainConfig, g: torch.Generator, device, batch_size: int | None = None
) -> Batch:
    """A random batch with random conditions: reference identity, continuation, audio-driven, CFG dropout."""
    b = batch_size or cfg.batch_size
    index = torch.randint(0, cache.video.shape[0], (b,), generator=g)
    video, audio, phones = cache.video[index], cache.audio[index], cache.phones[index].clone()
    frames = video.shape[1]
    drop = torch.rand(b, generator=g) < cfg.cfg_dropout
    phones[drop] = PHONE_IDS[NULL_PHONE]
    clean_video = torch.zeros(video.shape[:3], dtype=torch.bool)
    clean_audio = torch.zeros(audio.shape[:2], dtype=torch.bool)
    continuation = torch.rand(b, generator=g) < cfg.continuation_prob
    given = torch.randint(1, max(2, frames // 2), (b,), generator=g)
    for i in torch.nonzero(continuation).flatten().tolist():
        clean_video[i, : given[i]] = True
        clean_audio[i, : given[i]] = True
    audio_driven = torch.rand(b, generator=g) < cfg.audio_driven_prob
    clean_audio[audio_driven] = True
    if cache.heard is not None:  # given speech: the phones are what the recogniser heard, as at generation
        heard = audio_driven & ~drop
        phones[heard] = cache.heard[index][heard]
    reference = None
    if torch.rand((), generator=g) < cfg.reference_prob:  # per batch: reference tokens change the sequence length
        reference = cache.reference[index].to(device)
    weight = motion_weight(video, cfg.motion_weight).to(device) if cfg.motion_weight else None
    return Batch(Latents(video.to(device), audio.to(device)), phones.to(device),
                 CleanMask(clean_video.to(device), clean_audio.to(device)), reference, weight)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the two stages


def _resume(state_path: Path, modules: dict, optimizer) -> int:
    if not state_path.exists():
        return 0
    state = torch.load(state_path, weights_only=False)
    for name, module in modules.items():
        module.load_state_dict(state[name])
    optimizer.load_state_dict(state["optimizer"])
    print(f"resuming {state_path} at step {state['step']}", file=sys.stderr)
    return state["step"]


def _save_state(state_path: Path, modules: dict, optimizer, step: int, cfg: TrainConfig) -> None:
    state = {name: m.state_dict() for name, m in modules.items()}
    state.update(optimizer=optimizer.state_dict(), step=step, config=dataclasses.asdict(cfg))
    tmp = state_path.with_name(state_path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(state_path)


def train_codecs(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = AVGenModel(preset(cfg.preset))
    codecs = {"video_codec": model.video_codec, "audio_codec": model.audio_codec}
    params = [p for m in codecs.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    state_path, log = out / "codecs.state.pt", TrainingLog(out, "codecs")
    start = _resume(state_path, codecs, optimizer)
    log.truncate_after(start)
    frames, audio = render_pool(cfg, model.cfg)
    with torch.no_grad():
        mels = model.audio_codec.log_mel(audio)
    bar = ProgressBar("train codecs")
    began = time.monotonic()
    for step in range(start, cfg.steps):
        g = step_generator(cfg.seed, step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        x = frames_to_tensor(frames[torch.randint(0, len(frames), (cfg.batch_size * 4,), generator=g)])
        mel = mels[torch.randint(0, len(mels), (cfg.batch_size,), generator=g)]
        with autocast(cfg):
            recon = model.video_codec.decoder(model.video_codec.encoder(x))
            mel_recon = model.audio_codec.decoder(model.audio_codec.encoder(mel))
        loss_video = F.l1_loss(recon.float(), x) + F.mse_loss(recon.float(), x)
        loss_audio = F.l1_loss(mel_recon.float(), mel)
        loss = loss_video + loss_audio
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            log.append({"step": done, "loss": loss.item(), "loss_video": loss_video.item(),
                        "loss_audio": loss_audio.item(), "seconds": round(time.monotonic() - began, 1)})  # fmt: skip
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _save_state(state_path, codecs, optimizer, done, cfg)
        bar((done - start) / max(1, cfg.steps - start), f"step {done}/{cfg.steps} loss {loss.item():.4f}")

    with torch.no_grad():  # latent statistics, so the transformer sees unit-scale latents
        vz = torch.cat(
            [model.video_codec.encoder(frames_to_tensor(frames[i : i + 256])) for i in range(0, len(frames), 256)]
        )
        model.video_codec.latent_mean.copy_(vz.mean(dim=(0, 2, 3)))
        model.video_codec.latent_std.copy_(vz.std(dim=(0, 2, 3)).clamp_min(1e-3))
        az = model.audio_codec.encoder(mels)
        model.audio_codec.latent_mean.copy_(az.mean(dim=(0, 2)))
        model.audio_codec.latent_std.copy_(az.std(dim=(0, 2)).clamp_min(1e-3))
    path = out / "codecs.safetensors"
    save_checkpoint(
        model,
        path,
        metadata={"stage": "codecs", "steps": str(cfg.steps), "train_config": json.dumps(dataclasses.asdict(cfg))},
    )
    log.plot()
    return path


CODECS = ("video_codec", "audio_codec")


def train_model(cfg: TrainConfig) -> Path:
    """The model stage: in this process, or with Ray Train across the workers of a Ray cluster."""
    cfg = absolute_paths(cfg)  # Ray workers run in another folder: relative paths would miss there
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(_codecs_path(cfg), cfg.device, only=CODECS)
    cache = build_latent_cache(cfg, model, _cache_path(cfg))  # once, before any worker starts
    workers = ray_workers(cfg)
    if workers:
        train_with_ray(cfg, workers)
    else:
        model_training_loop(cfg, model=model, cache=cache)
    return out / f"model-{cfg.objective}.safetensors"


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """`out`, `codecs`, `init` and `data` resolved against this process's working folder ("" stays "")."""

    def resolve(path: str) -> str:
        return str(Path(path).resolve()) if path else path

    return dataclasses.replace(
        cfg, out=resolve(cfg.out), codecs=resolve(cfg.codecs), init=resolve(cfg.init), data=resolve(cfg.data)
    )


def _codecs_path(cfg: TrainConfig) -> Path:
    return Path(cfg.codecs or Path(cfg.out) / "codecs.safetensors")


def _cache_path(cfg: TrainConfig) -> Path:
    """The latent cache of these windows encoded by exactly these codecs: keyed by the preset, the
    corpus seed, the window count and length, the codecs checkpoint's content and the clip folder."""
    return Path(cfg.out) / f"latents-{cfg.preset}-{_windows_key(cfg)}-codecs{file_hash(_codecs_path(cfg))}.pt"


def check_teacher(teacher: Config, codecs: Config, path: str) -> None:
    """A teacher to distil: undistilled, and made for the codecs (and so the latent cache) in use."""
    if teacher.distilled:
        raise ValueError(f"{path} is already distilled: distil its teacher instead")
    differ = teacher.differing(codecs, free=SAMPLER_FIELDS)
    if differ:
        raise ValueError(f"{path} was made for other codecs or another model shape than these codecs "
                         f"(differs in {', '.join(differ)}): give codecs= the teacher's own checkpoint")  # fmt: skip


# what a student may differ in from its teacher besides the sampler: when to chunk, and the prior reading audio
STUDENT_FIELDS = SAMPLER_FIELDS | {"chunk_seconds", "overlap_seconds", "self_reference_over_seconds", "prior_audio"}


def check_student(student: Config, teacher: Config, path: str) -> None:
    """A student to go on distilling: distilled, and of its teacher's shape."""
    if not student.distilled:
        raise ValueError(f"{path} is not distilled: give it as init= to distil it, not as student=")
    differ = student.differing(teacher, free=STUDENT_FIELDS)
    if differ:
        raise ValueError(f"{path} is not a student of this teacher (differs in {', '.join(differ)})")


def model_training_loop(
    cfg: TrainConfig,
    rank: int = 0,
    world_size: int = 1,
    prepare=None,
    report=None,
    model: AVGenModel | None = None,
    cache: LatentCache | None = None,
) -> None:
    """One worker's loop. With several workers each takes batch_size / world_size samples a step
    and `prepare` wraps the trained modules for gradient averaging (DDP); rank 0 writes the
    log and checkpoints."""
    out, lead = Path(cfg.out), rank == 0
    if model is None:  # a Ray worker: load what the driver prepared
        model = load_checkpoint(_codecs_path(cfg), cfg.device, only=CODECS)
        cache = build_latent_cache(cfg, model, _cache_path(cfg))
    model.requires_grad_(False)  # the codecs are trained and frozen
    teacher = None
    if cfg.objective == "distill":  # the student: the teacher's architecture plus the sampler inputs
        teacher = load_checkpoint(cfg.init, cfg.device, only=("transformer",)).transformer.eval().requires_grad_(False)
        check_teacher(teacher.cfg, model.cfg, cfg.init)
        # uniform Euler steps: the step sizes and times the student learns to jump (SHORTCUT_STEPS)
        model.cfg = teacher.cfg.replace(distilled=True, steps=DISTILLED_STEPS, shift=1.0, sampler="euler")
    continued = None
    if cfg.student:
        continued = load_checkpoint(cfg.student, cfg.device, only=("transformer",)).transformer
        check_student(continued.cfg, teacher.cfg, cfg.student)
        model.cfg = continued.cfg
    shape = {name: value for name, value in (("hidden", cfg.hidden), ("depth", cfg.depth)) if value}
    if cfg.phone_prior:
        shape["phone_prior"] = True
    if cfg.prior_audio:
        shape["prior_audio"] = True
    if shape:  # another transformer shape on the same codecs (Config checks that the heads divide it)
        model.cfg = model.cfg.replace(**shape)
    torch.manual_seed(cfg.seed)  # a fresh transformer from the seed alone (every parameter, biases too)
    model.transformer = AVTransformer(model.cfg).to(cfg.device)
    transformer = model.transformer.train().requires_grad_(True)
    for p in transformer.parameters():
        if p.dim() > 1:
            torch.nn.init.xavier_uniform_(p)
    zero_last = [transformer.video_out.linear, transformer.audio_out.linear, transformer.modulation[1]]
    if model.cfg.distilled:  # the student starts as its teacher's conditional branch
        zero_last += [transformer.guidance_in.net[2], transformer.step_in.net[2]]
    for last in zero_last:
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    if cfg.init:  # fine-tuning: the same architecture, trained weights (the optimizer starts afresh)
        trained = continued or teacher or load_checkpoint(cfg.init, cfg.device, only=("transformer",)).transformer
        missing, unexpected = transformer.load_state_dict(trained.state_dict(), strict=False)
        added = ("guidance_in.", "step_in.") + (("phone_prior.", "prior_in.") if cfg.phone_prior else ())
        if unexpected or any(not k.startswith(added) for k in missing):
            hint = ""
            if any(k.startswith("phone_prior.audio.") for k in unexpected):
                hint = " (its phone prior reads the audio: add phone_prior=true prior_audio=true)"
            elif any(k.startswith("phone_prior.") for k in unexpected):
                hint = " (it has a phone prior: add phone_prior=true)"
            raise ValueError(f"{cfg.init} does not fit this model{hint}: missing {missing}, unexpected {unexpected}")
        # what a fine-tune adds starts at zero, so it starts as its checkpoint
        for layer in ("prior_in", "phone_prior.audio"):
            if any(k.startswith(layer + ".") for k in missing):
                torch.nn.init.zeros_(transformer.get_submodule(layer).weight)
                torch.nn.init.zeros_(transformer.get_submodule(layer).bias)
    if continued is not None and model.cfg.phone_prior:  # the distillation loss does not train it: kept as given
        transformer.phone_prior.requires_grad_(False)
    head = ProjectionHead(model.cfg.hidden).to(cfg.device)
    ema = EMA(transformer, cfg.ema_decay)
    trainable = list(transformer.parameters()) + (list(head.parameters()) if cfg.objective == "selfflow" else [])
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.99))
    state_path, log = out / f"model-{cfg.objective}.state.pt", TrainingLog(out, f"model-{cfg.objective}")
    modules = {"transformer": transformer, "ema": ema.module, "head": head}
    start = _resume(state_path, modules, optimizer)
    student, student_head = (prepare(transformer), prepare(head)) if prepare else (transformer, head)
    if lead:
        log.truncate_after(start)
    settings = SelfFlowSettings(cfg.gamma, cfg.mask_ratio_video, cfg.mask_ratio_audio)
    per_rank = max(1, cfg.batch_size // world_size)
    bar = ProgressBar(f"train {cfg.objective}") if lead else (lambda fraction, message: None)
    began = time.monotonic()
    for step in range(start, cfg.steps):
        g = step_generator(cfg.seed, step, f"rank{rank}" if world_size > 1 else "")
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(
                cfg, step, (time.monotonic() - began) / (cfg.minutes * 60) if cfg.minutes else 0
            )
        batch = make_batch(cache, cfg, g, cfg.device, per_rank)
        with autocast(cfg):
            if cfg.objective == "distill":
                loss, logs = distillation_loss(student, teacher, batch, g)
            elif cfg.objective == "selfflow":
                loss, logs = self_flow_loss(student, ema.module, student_head, batch, g, settings)
            else:
                loss, logs = baseline_loss(student, batch, g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimizer.step()
        ema.update(transformer, step)
        done = step + 1
        row = {
            "step": done,
            **{k: round(v.item(), 5) for k, v in logs.items()},
            "seconds": round(time.monotonic() - began, 1),
        }
        final = done == cfg.steps or bool(cfg.minutes and row["seconds"] >= cfg.minutes * 60)
        if lead and (done % cfg.log_every == 0 or final):
            log.append(row)
        if lead and (done % cfg.checkpoint_every == 0 or final):
            _save_state(state_path, modules, optimizer, done, cfg)
            export = out / f"model-{cfg.objective}.safetensors"
            export_generation_checkpoint(model, ema, export, cfg, done)
            if cfg.keep_every and done % cfg.keep_every == 0:
                shutil.copyfile(export, out / f"model-{cfg.objective}-{done}.safetensors")
            log.plot()
        if report is not None:
            report(row)
        bar((done - start) / max(1, cfg.steps - start), f"step {done}/{cfg.steps} loss {loss.item():.4f}")
        if final:
            break


def ray_workers(cfg: TrainConfig) -> int:
    """0 = train in this process. Pointed at a cluster (RAY_ADDRESS), one worker per GPU there
    (or `workers`); `workers` > 0 also uses Ray Train on a local Ray."""
    if cfg.workers > 0:
        return cfg.workers
    if os.environ.get("RAY_ADDRESS"):
        import ray

        ray.init(address=os.environ["RAY_ADDRESS"], ignore_reinit_error=True)
        return max(1, int(ray.cluster_resources().get("GPU", 0)))
    return 0


def _ray_worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = TrainConfig(**config)
    cfg = dataclasses.replace(cfg, device=str(ray.train.torch.get_device()))
    torch.set_num_threads(max(1, cfg.threads))
    context = ray.train.get_context()
    model_training_loop(
        cfg, rank=context.get_world_rank(), world_size=context.get_world_size(),
        prepare=lambda m: ray.train.torch.prepare_model(m, parallel_strategy_kwargs={"find_unused_parameters": True}),
        report=ray.train.report,
    )  # fmt: skip


def train_with_ray(cfg: TrainConfig, workers: int) -> None:
    """Data-parallel training with Ray Train's TorchTrainer. `out` must be storage every worker
    sees (a shared volume on a multi-node cluster): rank 0 writes the checkpoints there."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True)
    use_gpu = cfg.device.startswith("cuda")
    scaling = ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                            resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu else {})})  # fmt: skip
    trainer = TorchTrainer(
        _ray_worker_loop,
        train_loop_config=dataclasses.asdict(cfg),
        scaling_config=scaling,
        run_config=RunConfig(name=f"avgen-{cfg.objective}", storage_path=str(Path(cfg.out).resolve() / "ray")),
    )
    trainer.fit()


def export_generation_checkpoint(model: AVGenModel, ema: EMA, path: Path, cfg: TrainConfig, step: int) -> None:
    """The codecs plus the EMA transformer: what `avgen generate --checkpoint` loads."""
    live = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    model.transformer.load_state_dict(ema.module.state_dict())
    save_checkpoint(model, path, metadata={"stage": "model", "objective": cfg.objective, "steps": str(step),
                                           "train_config": json.dumps(dataclasses.asdict(cfg))})  # fmt: skip
    model.transformer.load_state_dict(live)
