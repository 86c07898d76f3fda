"""Speech from a phone timeline: a source-filter synthesiser in numpy, 16 kHz mono.

Not intelligible, but speech-like, and its energy follows the timeline exactly (silence spans are
silent), so the lip-sync ground truth is exact by construction.

- Control tracks on a 5 ms grid: per phone, targets for the formants F1-F3, the voicing, frication
  and aspiration levels, the frication noise's spectrum and a low-pass for murmurs. Plosives are
  a closure (silent, or a low voice bar for B/D/G), a burst and, for P/T/K, aspiration; affricates
  a closure and then frication; nasals a damped low murmur; liquids and glides vowel-like.
- Formants are blended between phones with a dominance-weighted Gaussian window (vowels dominate,
  consonants pull toward their place's locus), diphthongs glide; levels get 5 ms ramps.
- Voicing is additive harmonic synthesis: harmonics of the pitch contour (speaker's base pitch,
  declination, accents on emphasised vowels, a final fall or a question's rise, jitter and shimmer)
  weighted by a glottal spectral tilt and the cascade formant response at each harmonic. Each
  control frame's spectrum is normalised to unit power and then scaled by the phone's level in
  dB, so relative loudness is set by the table, not by accidents of formant gain.
- Noise (frication, bursts, aspiration, breathiness) is white noise shaped frame by frame in the
  frequency domain (160-sample sqrt-Hann frames, 80-sample hop, overlap-add).
- The result is silenced outside speech spans (with 5 ms ramps inside the speech), normalised to
  -20 dBFS RMS over the speech (peak at most 0.9), and a -60 dBFS noise floor is added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avgen.data.smoothing import gaussian_kernel, smooth
from avgen.phones import SILENCE, PhoneSpan
from avgen.timeline import SAMPLE_RATE

VOICE_SALT = 0x5EED_5AFE
HOP = 80  # 5 ms control grid
NYQUIST_GUARD = 6000.0  # Hz: no harmonics above this (the noise path covers the highs)
TARGET_RMS_DBFS = -20.0
PEAK = 0.9
NOISE_FLOOR_DBFS = -60.0


@dataclass(frozen=True)
class Voice:
    """A speaker: pitch, vocal tract size and voice quality, drawn from the identity number."""

    f0: float  # Hz, base pitch
    formant_scale: float  # shorter vocal tracts have higher formants
    tilt: float  # glottal spectral slope: harmonic k gets k**-tilt
    breathiness: float  # aspiration noise level during voicing, linear
    jitter: float  # relative pitch wobble
    accent: float  # relative pitch rise on accented vowels


def voice_for(identity: int) -> Voice:
    rng = np.random.default_rng([VOICE_SALT, int(identity)])
    high = rng.random() < 0.5  # roughly: half lower, half higher voices
    f0 = rng.uniform(165, 225) if high else rng.uniform(90, 140)
    return Voice(
        f0=float(f0),
        formant_scale=float(rng.uniform(1.08, 1.2) if high else rng.uniform(0.95, 1.05)),
        tilt=float(rng.uniform(0.9, 1.4)),
        breathiness=float(10 ** (rng.uniform(-32, -20) / 20)),
        jitter=float(rng.uniform(0.005, 0.015)),
        accent=float(rng.uniform(0.06, 0.16)),
    )


# ------------------------------------------------------------------ the phone table


@dataclass(frozen=True)
class Sound:
    kind: str  # vowel, glide, nasal, stop, fricative, affricate, aspirate
    formants: tuple[tuple[float, float, float], ...]  # one target, or two for a diphthong's glide
    voiced: bool
    level_db: float = 0.0  # voicing level (vowels, glides, nasals) or frication/burst level
    noise: tuple[float, float] = (0.0, 0.0)  # frication or burst spectrum: centre Hz, spread Hz
    dominance: float = 1.0  # formant coarticulation weight


def _vowel(f1, f2, f3, level=0.0, to=None) -> Sound:
    return Sound("vowel", ((f1, f2, f3),) if to is None else ((f1, f2, f3), to), True, level, dominance=3.0)


# Adult formant averages (Peterson & Barney, Hillenbrand); consonants carry their place's locus.
SOUNDS: dict[str, Sound] = {
    "IY": _vowel(280, 2250, 2950, -4),
    "IH": _vowel(400, 1950, 2550, -3),
    "EH": _vowel(550, 1800, 2500, -1.5),
    "AE": _vowel(680, 1700, 2400),
    "AH": _vowel(600, 1200, 2450, -1),
    "AA": _vowel(740, 1100, 2450),
    "AO": _vowel(580, 860, 2400, -0.5),
    "UH": _vowel(450, 1050, 2250, -3),
    "UW": _vowel(320, 900, 2250, -4),
    "ER": _vowel(480, 1350, 1700, -3),
    "AY": _vowel(720, 1150, 2450, 0, (400, 2000, 2600)),
    "AW": _vowel(720, 1150, 2450, 0, (430, 950, 2300)),
    "EY": _vowel(500, 1850, 2500, -1, (330, 2200, 2850)),
    "OW": _vowel(540, 900, 2350, -1, (380, 850, 2250)),
    "OY": _vowel(560, 880, 2400, 0, (400, 1950, 2550)),
    "L": Sound("glide", ((360, 1050, 2800),), True, -6),
    "R": Sound("glide", ((380, 1150, 1550),), True, -5),
    "W": Sound("glide", ((320, 700, 2250),), True, -6),
    "Y": Sound("glide", ((280, 2150, 3000),), True, -6),
    "M": Sound("nasal", ((260, 1050, 2200),), True, -11),
    "N": Sound("nasal", ((260, 1600, 2600),), True, -10),
    "NG": Sound("nasal", ((260, 2000, 2700),), True, -10),
    "P": Sound("stop", ((250, 850, 2250),), False, -10, (1200, 1800), 0.7),
    "B": Sound("stop", ((250, 850, 2250),), True, -12, (1200, 1800), 0.7),
    "T": Sound("stop", ((280, 1750, 2650),), False, -5, (4500, 2500), 0.7),
    "D": Sound("stop", ((280, 1750, 2650),), True, -8, (4200, 2500), 0.7),
    "K": Sound("stop", ((280, 2000, 2500),), False, -6, (2200, 900), 0.5),
    "G": Sound("stop", ((280, 2000, 2500),), True, -9, (2100, 900), 0.5),
    "F": Sound("fricative", ((300, 900, 2250),), False, -18, (4500, 3500), 0.6),
    "V": Sound("fricative", ((300, 900, 2250),), True, -20, (4500, 3500), 0.6),
    "TH": Sound("fricative", ((300, 1400, 2600),), False, -20, (5000, 3500), 0.6),
    "DH": Sound("fricative", ((300, 1400, 2600),), True, -22, (5000, 3500), 0.6),
    "S": Sound("fricative", ((300, 1700, 2650),), False, -11, (6200, 1400), 0.6),
    "Z": Sound("fricative", ((300, 1700, 2650),), True, -13, (6000, 1400), 0.6),
    "SH": Sound("fricative", ((300, 1900, 2450),), False, -10, (3200, 1100), 0.6),
    "ZH": Sound("fricative", ((300, 1900, 2450),), True, -12, (3100, 1100), 0.6),
    "CH": Sound("affricate", ((300, 1900, 2450),), False, -10, (3300, 1200), 0.6),
    "JH": Sound("affricate", ((300, 1900, 2450),), True, -12, (3100, 1200), 0.6),
    "HH": Sound("aspirate", ((500, 1500, 2500),), False, -14, dominance=0.05),
}
VOICED_FRICATION_VOICING_DB = -14.0  # voicing under a voiced fricative
VOICE_BAR_DB = -24.0  # voicing during a B/D/G closure: a low hum
ASPIRATION_DB = -16.0  # after the burst of P/T/K
EMPHASIS_DB = 4.0  # an emphasised vowel is this much louder than an unemphasised one
MURMUR_CUTOFF = {"nasal": 450.0, "bar": 250.0}
BANDWIDTHS = np.array([90.0, 110.0, 170.0, 250.0, 300.0])  # F1..F5
F4_F5 = np.array([3500.0, 4500.0])


@dataclass
class _Tracks:
    """Targets on the control grid (one row per 5 ms)."""

    formants: np.ndarray  # (n, 3) Hz
    dominance: np.ndarray  # (n,)
    voicing: np.ndarray  # (n,) linear amplitude
    frication: np.ndarray  # (n,) linear amplitude of shaped noise
    noise_centre: np.ndarray  # (n,) Hz
    noise_spread: np.ndarray  # (n,) Hz
    aspiration: np.ndarray  # (n,) linear amplitude of formant-shaped noise
    cutoff: np.ndarray  # (n,) Hz low-pass on voicing (murmurs), inf for none
    accent: np.ndarray  # (n,) emphasis 0..1 of the vowel spoken (pitch accent)


def _db(x: float) -> float:
    return 10 ** (x / 20)


def _targets(timeline: list[PhoneSpan], n: int, emphasis) -> _Tracks:
    t = np.arange(n) * HOP / SAMPLE_RATE
    tr = _Tracks(
        np.tile([500.0, 1500.0, 2500.0], (n, 1)),
        np.full(n, 0.3),
        np.zeros(n),
        np.zeros(n),
        np.full(n, 3000.0),
        np.full(n, 2000.0),
        np.zeros(n),
        np.full(n, np.inf),
        np.zeros(n),
    )
    for span, stress in zip(timeline, emphasis):
        lo, hi = np.searchsorted(t, [span.start, span.end])
        if hi <= lo or span.phone == SILENCE or span.phone not in SOUNDS:
            continue
        s = SOUNDS[span.phone]
        sl = slice(lo, hi)
        rel = (t[sl] - span.start) / max(span.end - span.start, 1e-6)
        first, last = np.array(s.formants[0]), np.array(s.formants[-1])
        tr.formants[sl] = first + np.clip((rel - 0.25) / 0.6, 0, 1)[:, None] * (last - first)
        tr.dominance[sl] = s.dominance
        tr.noise_centre[sl], tr.noise_spread[sl] = s.noise if s.noise[1] else (3000.0, 2000.0)
        if s.kind in ("vowel", "glide", "nasal"):
            tr.voicing[sl] = _db(s.level_db + EMPHASIS_DB * (stress - 0.5) * (s.kind == "vowel"))
            if s.kind == "nasal":
                tr.cutoff[sl] = MURMUR_CUTOFF["nasal"]
            if s.kind == "vowel":
                tr.accent[sl] = stress
        elif s.kind == "fricative":
            tr.frication[sl] = _db(s.level_db)
            if s.voiced:
                tr.voicing[sl] = _db(VOICED_FRICATION_VOICING_DB)
                tr.cutoff[sl] = 1500.0
        elif s.kind == "aspirate":
            tr.aspiration[sl] = _db(s.level_db)
        else:  # stop or affricate: closure, then a burst (stops) or frication (affricates)
            closure = rel < (0.55 if s.kind == "stop" else 0.35)
            if s.voiced:
                tr.voicing[sl] = np.where(closure, _db(VOICE_BAR_DB), tr.voicing[sl])
                tr.cutoff[sl] = np.where(closure, MURMUR_CUTOFF["bar"], tr.cutoff[sl])
            release = ~closure
            if s.kind == "affricate":
                tr.frication[sl] = np.where(release, _db(s.level_db), 0.0)
                if s.voiced:
                    tr.voicing[sl] = np.where(release, _db(VOICED_FRICATION_VOICING_DB), tr.voicing[sl])
            else:
                since = (rel - 0.55) * (span.end - span.start)  # seconds since the release
                burst = release & (since < 0.012)
                tr.frication[sl] = np.where(burst, _db(s.level_db), 0.0)
                if not s.voiced:
                    tr.aspiration[sl] = np.where(release & ~burst, _db(ASPIRATION_DB), 0.0)
    # /h/ and aspiration take the formants of whatever vowel follows: low dominance does that
    return tr


def _formant_gain(freqs: np.ndarray, formants: np.ndarray, scale: float) -> np.ndarray:
    """|H(f)| of a cascade of five two-pole resonators (F1-F3 per frame, F4-F5 fixed), unit gain at DC.

    freqs: (n, m) Hz; formants: (n, 3) Hz. Returns (n, m)."""
    f = np.concatenate([formants, np.broadcast_to(F4_F5 * scale, (len(formants), 2))], axis=1)
    gain = np.ones_like(freqs)
    for i in range(5):
        fi, bi = f[:, i : i + 1], BANDWIDTHS[i] / 2
        gain *= (fi**2 + bi**2) / np.sqrt(((freqs - fi) ** 2 + bi**2) * ((freqs + fi) ** 2 + bi**2))
    return gain


def _pitch(
    n: int, timeline: list[PhoneSpan], voice: Voice, accent: np.ndarray, question: bool, rng: np.random.Generator
) -> np.ndarray:
    """(n,) Hz on the control grid: declination over the speech, accents, a final fall or rise, jitter."""
    t = np.arange(n) * HOP / SAMPLE_RATE
    speech = [s for s in timeline if s.phone != SILENCE]
    start, end = (speech[0].start, speech[-1].end) if speech else (0.0, t[-1] + 1e-3)
    x = np.clip((t - start) / max(end - start, 1e-3), 0, 1)
    contour = 1.08 - 0.18 * x  # declination
    contour *= 1 + voice.accent * smooth(accent, gaussian_kernel(0.04 * SAMPLE_RATE / HOP))
    tail = np.clip((t - (end - 0.35)) / 0.35, 0, 1)
    contour *= 1 + (0.3 if question else -0.08) * tail
    wobble = smooth(rng.standard_normal(n), gaussian_kernel(2.0))
    wobble /= max(wobble.std(), 1e-9)
    return voice.f0 * contour * (1 + voice.jitter * wobble)


def _voiced(
    f0: np.ndarray, amp: np.ndarray, formants: np.ndarray, cutoff: np.ndarray, voice: Voice, n_samples: int
) -> np.ndarray:
    """Additive harmonic synthesis; each control frame's harmonic spectrum has unit power times amp."""
    k = np.arange(1, int(NYQUIST_GUARD // f0.min()) + 1, dtype=np.float64)
    freqs = f0[:, None] * k[None, :]  # (n, K)
    weights = k[None, :] ** -voice.tilt * _formant_gain(freqs, formants * voice.formant_scale, voice.formant_scale)
    weights /= np.sqrt(1 + (freqs / cutoff[:, None]) ** 4)
    weights *= freqs < NYQUIST_GUARD
    weights *= (amp / np.sqrt(0.5 * (weights**2).sum(axis=1) + 1e-12))[:, None]
    # per sample: pitch phase and linearly interpolated harmonic amplitudes
    pos = np.arange(n_samples) / HOP
    i0 = pos.astype(int)
    frac = (pos - i0).astype(np.float32)
    f0_s = f0[i0] + (f0[i0 + 1] - f0[i0]) * frac
    phase = (2 * np.pi * np.cumsum(f0_s) / SAMPLE_RATE) % (2 * np.pi)
    out = np.zeros(n_samples, np.float32)
    w = weights.astype(np.float32)
    chunk = 8000
    for a in range(0, n_samples, chunk):
        b = min(n_samples, a + chunk)
        active = np.flatnonzero(w[i0[a] : i0[b - 1] + 2].max(axis=0) > 1e-6)
        if not active.size:
            continue
        lo, fr = i0[a:b], frac[a:b]
        amp_s = w[lo][:, active] * (1 - fr)[:, None] + w[lo + 1][:, active] * fr[:, None]
        out[a:b] = (amp_s * np.sin(phase[a:b, None].astype(np.float32) * k[active].astype(np.float32))).sum(axis=1)
    return out


def _noise(spectra: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """White noise shaped by per-frame magnitude spectra (n, HOP + 1) on 2*HOP-sample frames centred
    on the control points, overlap-added with sqrt-Hann windows (which sum to one at 50 % overlap)."""
    n = len(spectra)
    win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2 * HOP) / (2 * HOP)))
    padded = rng.standard_normal((n + 1) * HOP)
    frames = np.lib.stride_tricks.sliding_window_view(padded, 2 * HOP)[::HOP][:n] * win
    shaped = np.fft.irfft(np.fft.rfft(frames, axis=1) * spectra, n=2 * HOP, axis=1) * win
    out = np.zeros((n + 1) * HOP)
    out[: n * HOP] += shaped[:, :HOP].reshape(-1)
    out[HOP:] += shaped[:, HOP:].reshape(-1)
    return out[HOP : HOP + n_samples].astype(np.float32)


def _speech_mask(timeline: list[PhoneSpan], n_samples: int) -> np.ndarray:
    """1 inside speech spans, 0 in silences, with 5 ms raised-cosine ramps on the speech side."""
    mask = np.zeros(n_samples, np.float32)
    ramp = int(0.005 * SAMPLE_RATE)
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, ramp + 1) / (ramp + 1))
    runs, current = [], None
    for s in timeline:
        if s.phone == SILENCE:
            current = None
        elif current is None:
            current = [s.start, s.end]
            runs.append(current)
        else:
            current[1] = s.end
    for start, end in runs:
        a, b = round(start * SAMPLE_RATE), min(n_samples, round(end * SAMPLE_RATE))
        if b <= a:
            continue
        mask[a:b] = 1
        r = min(ramp, (b - a) // 2)
        mask[a : a + r] = edge[:r] if r else mask[a : a + r]
        mask[b - r : b] = edge[:r][::-1] if r else mask[b - r : b]
    return mask


def synthesize(
    timeline: list[PhoneSpan],
    n_samples: int,
    voice: Voice,
    rng: np.random.Generator,
    question: bool = False,
    emphasis=None,
) -> np.ndarray:
    """(n_samples,) float32 speech at 16 kHz saying `timeline`; silent (noise floor) in its silences.

    `emphasis` (one value 0..1 per span, default none) makes vowels louder and gives them a pitch
    accent; pass the same values to faces.mouth_track, which opens the mouth wider on them."""
    n = n_samples // HOP + 2
    tr = _targets(timeline, n, np.zeros(len(timeline)) if emphasis is None else np.asarray(emphasis, float))
    formants = np.stack(
        [
            smooth(tr.formants[:, j] * tr.dominance, gaussian_kernel(4.0)) / smooth(tr.dominance, gaussian_kernel(4.0))
            for j in range(3)
        ],
        axis=1,
    )
    ramp = gaussian_kernel(1.0)
    voicing = smooth(tr.voicing, ramp)
    shimmer = smooth(rng.standard_normal(n), gaussian_kernel(1.5))
    voicing *= 1 + 0.06 * shimmer / max(shimmer.std(), 1e-9)
    frication, aspiration = smooth(tr.frication, ramp), smooth(tr.aspiration, ramp)
    cutoff = np.exp(smooth(np.log(np.minimum(tr.cutoff, 1e5)), ramp))
    f0 = _pitch(n, timeline, voice, tr.accent, question, rng)

    voiced = _voiced(f0, np.maximum(voicing, 0), formants, cutoff, voice, n_samples)

    bins = np.fft.rfftfreq(2 * HOP, 1 / SAMPLE_RATE)[None, :]
    shaped = np.exp(-0.5 * ((bins - tr.noise_centre[:, None]) / tr.noise_spread[:, None]) ** 2)
    shaped /= np.sqrt((shaped**2).mean(axis=1, keepdims=True))
    breathy = _formant_gain(
        np.broadcast_to(bins, (n, bins.shape[1])), formants * voice.formant_scale, voice.formant_scale
    ) * np.exp(-bins / 3000)
    breathy /= np.sqrt((breathy**2).mean(axis=1, keepdims=True))
    breath = aspiration + voice.breathiness * voicing
    noise = _noise(frication[:, None] * shaped + breath[:, None] * breathy, n_samples, rng)

    mask = _speech_mask(timeline, n_samples)
    audio = (voiced + noise) * mask
    active = mask > 0
    rms = float(np.sqrt(np.mean(audio[active] ** 2))) if active.any() else 0.0
    if rms > 0:
        audio *= _db(TARGET_RMS_DBFS) / rms
        peak = float(np.abs(audio).max())
        if peak > PEAK:
            audio *= PEAK / peak
    audio += _db(NOISE_FLOOR_DBFS) * rng.standard_normal(n_samples).astype(np.float32)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
