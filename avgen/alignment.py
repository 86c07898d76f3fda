"""Phone timeline from recorded speech: what is said when, read off the audio itself.

With a transcript, its phones are force-aligned to the audio; without one (or where the alignment
fails), phones are recognised freely ("allphone": any phone may follow any other, weighted by a
phone bigram model). Both use pocketsphinx's CMU en-US acoustic model, shipped in its wheel, whose
phones are the ARPAbet set of avgen.phones; its silence and noise units become SILENCE.

A decoder is made per call (~0.1 s; decoders are not thread-safe), decodes the whole clip as one
utterance, and is deterministic: the same samples give the same timeline.
"""

from __future__ import annotations

import numpy as np

from avgen.phones import ARPABET, LONG_PAUSE, SHORT_PAUSE, SILENCE, PhoneSpan, pronounce, words
from avgen.timeline import SAMPLE_RATE

FRAME_RATE = 100  # pocketsphinx analysis frames per second (its default `frate`)
# Frame i's analysis window (25.6 ms) starts at i / FRAME_RATE; a boundary found between frames i-1 and i
# lies between their windows' centres: (i - 0.5) / FRAME_RATE + 12.8 ms. Measured on the corpus's speech
# (816 phone boundaries), boundaries without this come 10 ms early (median).
BOUNDARY_DELAY = 0.0128 - 0.5 / FRAME_RATE
NOISE_FLOOR = 1.0  # int16 steps (RMS) of fixed-seed noise added: without it, exact zeros decode as phones
# Free phone recognition, settings of pocketsphinx's own phone-decoding example: a language weight of
# 2 (the bigram counts, but the sound decides) and a phone insertion penalty of 0.3 (fewer, longer phones).
ALLPHONE = {"lw": 2.0, "pip": 0.3, "beam": 1e-200, "pbeam": 1e-20}
# Alignment: no best-path rescoring (pocketsphinx's alignment example; it is for n-gram search) and a
# pause between words as likely as none (the default, 0.005, misses real pauses).
ALIGN = {"bestpath": False, "silprob": 1.0}
PAUSE = "<sil>"  # pocketsphinx's pause "word"


class SpeechError(ValueError):
    """Audio that cannot be read as speech; the message says what is wrong with it."""


def phone_of(unit: str) -> str:
    """avgen's phone for a pocketsphinx unit: ARPAbet phones as they are, SIL and noises (+SPN+...) SILENCE."""
    return unit if unit in ARPABET else SILENCE


def _pcm(audio) -> bytes:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise SpeechError(f"speech must be one channel of samples, not an array of shape {audio.shape}")
    if audio.size == 0:
        raise SpeechError("the speech is empty")
    if not np.issubdtype(audio.dtype, np.floating) or not np.isfinite(audio).all():
        raise SpeechError("speech samples must be finite floating-point numbers (16 kHz, -1..1)")
    floor = NOISE_FLOOR * np.random.default_rng(0).standard_normal(audio.size)
    return np.clip(np.clip(audio, -1.0, 1.0) * 32767 + floor, -32768, 32767).round().astype("<i2").tobytes()


def _decoder(**settings):
    import pocketsphinx

    return pocketsphinx.Decoder(lm=None, loglevel="FATAL", **settings)


def _decode(decoder, pcm: bytes) -> None:
    decoder.start_utt()
    decoder.process_raw(pcm, no_search=False, full_utt=True)
    decoder.end_utt()


def _timeline(units: list[tuple[str, int, int]], n_samples: int) -> list[PhoneSpan]:
    """Contiguous spans from 0 to the audio's end out of (unit, first frame, frames); gaps are silence,
    and silences in a row are one span."""
    seconds = n_samples / SAMPLE_RATE
    spans: list[PhoneSpan] = []

    def add(phone: str, begin: float, end: float) -> None:
        if spans and spans[-1].phone == phone == SILENCE:
            spans[-1] = PhoneSpan(SILENCE, spans[-1].start, end)
        elif end > begin:
            spans.append(PhoneSpan(phone, begin, end))

    for unit, start, length in units:
        t = spans[-1].end if spans else 0.0
        begin = max(t, start / FRAME_RATE + BOUNDARY_DELAY)
        end = min((start + length) / FRAME_RATE + BOUNDARY_DELAY, seconds)
        if end > begin:
            add(SILENCE, t, begin)
            add(phone_of(unit), begin, end)
    add(SILENCE, spans[-1].end if spans else 0.0, seconds)
    return spans


def recognised_phones(audio) -> list[PhoneSpan]:
    """Phones recognised freely in 16 kHz mono speech (float, -1..1): a timeline from 0 to its end."""
    import pocketsphinx

    pcm = _pcm(audio)
    decoder = _decoder(allphone=pocketsphinx.get_model_path("en-us/en-us-phone.lm.bin"), **ALLPHONE)
    _decode(decoder, pcm)
    units = [(s.word, s.start_frame, s.end_frame - s.start_frame + 1) for s in decoder.seg()]
    return _timeline(units, len(pcm) // 2)


def aligned_phones(audio, text: str) -> list[PhoneSpan] | None:
    """The transcript's phones (avgen.phones' pronunciations) aligned to the speech; None where the
    transcript cannot be aligned to it (it does not fit the audio's length or sound).

    Two steps: the words in order, with optional pauses between them, are decoded as a grammar
    (finding where the speaker paused); then that word sequence is aligned phone by phone."""
    pronunciations = [pronounce(w) for w in words(text) if w not in (SHORT_PAUSE, LONG_PAUSE)]
    pronunciations = [p for p in pronunciations if p]  # pocketsphinx crashes on an empty one
    if not pronunciations:
        return None
    pcm = _pcm(audio)
    decoder = _decoder(**ALIGN)
    names = [f"w{i}" for i in range(len(pronunciations))]  # each word as we say it, under a name of its own
    try:
        for name, phones in zip(names, pronunciations):
            decoder.add_word(name, " ".join(phones), update=name == names[-1])
        decoder.add_jsgf_string("transcript", f"#JSGF V1.0;\ngrammar transcript;\npublic <s> = {' '.join(names)};\n")
        decoder.activate_search("transcript")
        _decode(decoder, pcm)
        if decoder.hyp() is None:
            return None
        kept = {PAUSE, *names}  # not the utterance's start and end, nor noises
        spoken = [s.word for s in decoder.seg() if s.word in kept]
        decoder.set_align_text(" ".join(spoken))
        _decode(decoder, pcm)
        decoder.set_alignment()
        _decode(decoder, pcm)
        alignment = decoder.get_alignment()
    except RuntimeError:
        return None
    if alignment is None:
        return None
    units = [(p.name, p.start, p.duration) for p in alignment.phones()]
    return _timeline(units, len(pcm) // 2)


def speech_timeline(audio, text: str = "") -> tuple[list[PhoneSpan], bool]:
    """Phone timeline of 16 kHz mono speech, from 0 to the audio's end (frame_phone_ids takes it):
    aligned to `text` when given and alignable, else recognised from the sound alone; and whether it
    is the transcript's (True) or heard (False)."""
    if text.strip():
        aligned = aligned_phones(audio, text)
        if aligned is not None:
            return aligned, True
    return recognised_phones(audio), False


def phones_from_speech(audio, text: str = "") -> list[PhoneSpan]:
    """speech_timeline's phones alone."""
    return speech_timeline(audio, text)[0]
