"""Griffin-Lim (the codec's `vocode`) vs the learned vocoder, both from the TRUE log-mel of held-out speech.

Clips: held-out sentences only (the corpus's sentence split; training draws train sentences), in two
groups: `wide` = `synthetic_speech("heldout", i, seed=1)` (random wide voices and rates, as in
training but other sentences and another voice stream) and `corpus` = the corpus's own held-out
identities' voices (`voice_for`) on held-out sentences at natural rate. No augmentation.

Metrics against the true waveform, per clip, then averaged:
- mr_stft: `avgen.vocoder.mr_stft_distance` (mean over STFT sizes 256/512/1024 of spectral
  convergence + mean |log magnitude difference|); phase-blind, lower is better.
- mcd_db: mel-cepstral distortion. Cepstra: the DCT-II (orthonormal) over the mel axis of the
  codec's log-mel (natural log of the 64-band magnitude mel, hop 160, n_fft 512) of each waveform,
  coefficients 1..12 (c0, the level, left out); per frame (10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2),
  averaged over the frames whose true mel energy is within 40 dB of the clip's loudest frame.
  MFCC-like cepstra, not SPTK mel-cepstra: compare the two vocoders here, not with published MCDs.
- speed: seconds of audio per second of wall time over all clips (x real time), torch with 1 and
  with 2 threads, on this shared CPU (noisy: with other processes busy, 2 threads can be far slower
  than 1, as OpenMP threads wait for each other; `busy_machine_*` records the others' CPU seconds).
The untrained vocoder (same architecture, torch seed 0) is reported as a floor.

    python benchmarks/vocoder.py  ->  benchmarks/results/vocoder.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import contention, cpu_snapshot, git_state, load_avg  # (benchmarks/ is on sys.path)

from avgen.audio_codec import AudioAutoencoder
from avgen.config import PRESETS
from avgen.data.corpus import IDENTITY_POOL, SENTENCE_POOL, _draw, identity_split, sentence_split, sentence_text
from avgen.data.speech import synthesize, voice_for
from avgen.data.voices import synthetic_speech
from avgen.files import write_text_atomic
from avgen.phones import phone_timeline
from avgen.timeline import SAMPLE_RATE, SAMPLES_PER_FRAME
from avgen.vocoder import WEIGHTS, Vocoder, load_vocoder, mr_stft_distance, vocoder_metadata

CLIPS_PER_GROUP = 8
MCD_COEFFS = 12
MCD_RANGE_DB = 40.0


def corpus_voice_clip(i: int) -> np.ndarray:
    rng = np.random.default_rng([0xBE7C, i])
    identity = _draw(rng, IDENTITY_POOL, identity_split, "heldout")
    text = sentence_text(_draw(rng, SENTENCE_POOL, sentence_split, "heldout"))
    phones = phone_timeline(text)
    n = max(1, round(phones[-1].end * SAMPLE_RATE / SAMPLES_PER_FRAME)) * SAMPLES_PER_FRAME
    phones = phone_timeline(text, n / SAMPLE_RATE)
    return synthesize(phones, n, voice_for(identity), rng, question=text.endswith("?"))


def heldout_clips() -> dict[str, list[torch.Tensor]]:
    return {
        "wide": [torch.from_numpy(synthetic_speech("heldout", i, seed=1)) for i in range(CLIPS_PER_GROUP)],
        "corpus": [torch.from_numpy(corpus_voice_clip(i)) for i in range(CLIPS_PER_GROUP)],
    }


def dct_matrix(n: int) -> torch.Tensor:
    k, m = torch.arange(n)[:, None], torch.arange(n)[None, :]
    d = torch.cos(math.pi / n * (m + 0.5) * k) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d  # (n, n): cepstra = d @ log_mel


def mcd_db(log_mel: torch.Tensor, log_mel_true: torch.Tensor) -> float:
    """(n_mels, frames) each -> mel-cepstral distortion in dB over the loud frames of the truth."""
    d = dct_matrix(log_mel.shape[0])[1 : MCD_COEFFS + 1]
    diff = d @ (log_mel - log_mel_true)
    per_frame = 10 / math.log(10) * torch.sqrt(2 * (diff**2).sum(0))
    energy_db = 20 * torch.log10(torch.exp(log_mel_true).sum(0))
    loud = energy_db >= energy_db.max() - MCD_RANGE_DB
    return float(per_frame[loud].mean())


def evaluate(name: str, vocode, codec: AudioAutoencoder, clips: dict[str, list[torch.Tensor]]) -> dict:
    out = {}
    for group, waves in clips.items():
        stft, mcd = [], []
        for wave in waves:
            mel = codec.log_mel(wave[None])
            got = vocode(mel)
            assert got.shape == wave[None].shape, (name, got.shape, wave.shape)
            stft.append(float(mr_stft_distance(got, wave[None])))
            mcd.append(mcd_db(codec.log_mel(got)[0], mel[0]))
        out[group] = {"mr_stft": float(np.mean(stft)), "mcd_db": float(np.mean(mcd)), "clips": len(waves)}
    mels = [codec.log_mel(w[None]) for waves in clips.values() for w in waves]
    audio_s = sum(m.shape[-1] for m in mels) / 100
    for threads in (1, 2):
        torch.set_num_threads(threads)
        vocode(mels[0])  # warm-up, untimed
        before, t0 = cpu_snapshot(), time.perf_counter()
        for m in mels:
            vocode(m)
        out[f"x_real_time_{threads}_threads"] = audio_s / (time.perf_counter() - t0)
        out[f"busy_machine_{threads}_threads"] = contention(before, cpu_snapshot())
    print(name, json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Griffin-Lim vs the learned vocoder on held-out synthetic speech")
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "vocoder.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = PRESETS["tiny"]
    codec = AudioAutoencoder(cfg).eval()
    clips = heldout_clips()
    load_before = load_avg()
    learned = load_vocoder(args.weights, n_mels=cfg.n_mels, n_fft=cfg.n_fft)
    torch.manual_seed(0)
    untrained = Vocoder(cfg.n_mels, cfg.n_fft).eval()
    with torch.inference_mode():
        results = {
            "griffin_lim": evaluate("griffin_lim", lambda m: codec.vocode(m, seed=0)[0], codec, clips),
            "learned": evaluate("learned", learned.vocode, codec, clips),
            "untrained": evaluate("untrained", untrained.vocode, codec, clips),
        }
    report = {
        "what": "vocoders from the true log-mel of held-out synthetic sentences; see benchmarks/vocoder.py",
        "griffin_lim_iters": cfg.griffin_lim_iters,
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load_avg(),
        "code": git_state(),
        "vocoder_parameters": sum(p.numel() for p in learned.parameters()),
        "vocoder_training": vocoder_metadata(args.weights).get("train"),
        "results": results,
    }
    out = args.out
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
