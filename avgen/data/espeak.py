"""A second voice family with exact phone timing: espeak-ng, through its C library.

The corpus's own voice (avgen.data.speech) is one formant synthesiser; models and scorers trained on
it alone learn that voice rather than speech. espeak-ng (Debian's `espeak-ng`, library
`libespeak-ng.so.1`) speaks any English text in many accents and voice variants, and reports each
phoneme it speaks with the sample where it starts. `speak` returns the 16 kHz waveform and the
timeline of ARPAbet phones (avgen.phones) that it really spoke, so a face can be drawn in exact
sync with it.

espeak-ng's library keeps global state and is not thread-safe: calls are serialised by a lock.
Only a build-time dependency (training data); nothing at serving or test time needs it.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from avgen.phones import SILENCE, PhoneSpan
from avgen.timeline import SAMPLE_RATE, fit_samples

LIBRARY = "libespeak-ng.so.1"

# espeak-ng's English phoneme mnemonics (phsource/ph_english*) as ARPAbet; a mnemonic of several
# phones shares its time equally. Pauses are silence; ";" (a marker, no sound) is dropped.
ARPABET_OF = {
    **{m: [m.upper()] for m in "p b t d k g f v s z m n l r w".split()},
    "T": ["TH"], "D": ["DH"], "S": ["SH"], "Z": ["ZH"], "h": ["HH"], "tS": ["CH"], "dZ": ["JH"],
    "N": ["NG"], "j": ["Y"], "?": ["T"], "x": ["HH"], "C": ["HH"],
    "r-": ["R"], "w#": ["W"], "t#": ["D"], "t[": ["T"], "t2": ["T"], "d#": ["D"], "n-": ["N"], "l-": ["L"],
    "m-": ["M"], "z#": ["Z"], "s#": ["S"],
    "@": ["AH"], "@2": ["AH"], "@5": ["AH"], "@-": ["AH"], "V": ["AH"], "a#": ["AH"], "@L": ["AH", "L"],
    "3": ["ER"], "3:": ["ER"], "VR": ["ER"], "@r": ["ER"],
    "a": ["AE"], "aa": ["AA"], "A:": ["AA"], "A": ["AA"], "0": ["AA"], "A@": ["AA", "R"],
    "O:": ["AO"], "O": ["AO"], "O2": ["AO"], "O@": ["AO", "R"], "o@": ["AO", "R"], "o": ["OW"],
    "e": ["EH"], "E": ["EH"], "e@": ["EH", "R"],
    "I": ["IH"], "I2": ["IH"], "I#": ["IH"], "IR": ["IH", "R"], "i": ["IY"], "i:": ["IY"],
    "i@": ["IY", "R"], "i@3": ["IY", "R"],
    "u:": ["UW"], "u": ["UW"], "U": ["UH"], "U@": ["UH", "R"],
    "aI": ["AY"], "aI2": ["AY"], "aI3": ["AY"], "aI@": ["AY", "ER"], "aU": ["AW"], "aU@": ["AW", "ER"],
    "eI": ["EY"], "oU": ["OW"], "OI": ["OY"],
    **dict.fromkeys(["_", "_:", "_!", "_|", "||", "_^_", "_;_"], [SILENCE]),
}  # fmt: skip
DROPPED = {";", ""}
PHONEME_EVENT, LIST_TERMINATED = 7, 0  # espeak_EVENT_TYPE
SYNCHRONOUS, PHONEME_EVENTS, DONT_EXIT = 2, 0x0001, 0x8000
RATE, PITCH = 1, 3  # espeak_PARAMETER


class EspeakError(RuntimeError):
    """espeak-ng is missing or failed."""


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]  # fmt: skip


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class EspeakVoice:
    name: str  # espeak-ng voice, optionally with a variant: "en-us", "en-gb-x-rp+m4"
    words_per_minute: int = 160
    pitch: int = 50  # 0-99


class _Engine:
    def __init__(self):
        try:
            self.lib = ctypes.CDLL(LIBRARY)
        except OSError as e:
            raise EspeakError(f"{LIBRARY} not found: install espeak-ng (apt-get install espeak-ng)") from e
        self.libc = ctypes.CDLL(None)
        self.rate = self.lib.espeak_Initialize(SYNCHRONOUS, 0, None, PHONEME_EVENTS | DONT_EXIT)
        if self.rate <= 0:
            raise EspeakError("espeak-ng failed to initialise (its data folder is missing?)")
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, str]] = []  # (sample at espeak's rate, mnemonic)
        self.callback = _CALLBACK(self._receive)  # kept alive with the engine
        self.lib.espeak_SetSynthCallback(self.callback)
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip

    def _receive(self, wav, count, events) -> int:
        if count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.float32) / 32768)
        i = 0
        while events[i].type != LIST_TERMINATED:
            if events[i].type == PHONEME_EVENT:
                self.events.append((events[i].sample, events[i].id.string.decode("ascii", "replace")))
            i += 1
        return 0

    def speak(self, text: str, voice: EspeakVoice) -> tuple[np.ndarray, list[tuple[int, str]]]:
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice {voice.name!r}")
        self.lib.espeak_SetParameter(RATE, int(voice.words_per_minute), 0)
        self.lib.espeak_SetParameter(PITCH, int(voice.pitch), 0)
        # espeak-ng draws from the C library's rand() (seeded here) and carries some state from what it
        # spoke before in this process: the same text's timing can move by a few milliseconds.
        self.libc.srand(0)
        self._synth(text)
        wave = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        return wave, self.events

    def _synth(self, text: str) -> None:
        self.chunks, self.events = [], []
        data = text.encode("utf-8")
        if self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None) != 0:
            raise EspeakError(f"espeak-ng could not speak {text!r}")
        self.lib.espeak_Synchronize()


_engine: _Engine | None = None
_lock = threading.Lock()


def available() -> bool:
    """Whether espeak-ng's library can be loaded here."""
    try:
        ctypes.CDLL(LIBRARY)
    except OSError:
        return False
    return True


def phones_of(mnemonic: str) -> list[str] | None:
    """ARPAbet phones of one espeak-ng mnemonic; None for a marker without sound. Unknown mnemonics
    fall back to their letters without espeak's modifiers (#, digits, -), else a neutral vowel."""
    if mnemonic in DROPPED:
        return None
    if mnemonic in ARPABET_OF:
        return ARPABET_OF[mnemonic]
    bare = mnemonic.rstrip("#0123456789-[;")
    return ARPABET_OF.get(bare, ["AH"])


def timeline(events: list[tuple[float, str]], n_samples: int, rate: int) -> list[PhoneSpan]:
    """Contiguous spans 0..n_samples/rate from phoneme onsets: each phone lasts until the next one
    starts; before the first onset is silence; silences in a row are one span."""
    seconds = n_samples / rate
    spans: list[PhoneSpan] = []

    def add(phone: str, begin: float, end: float) -> None:
        if end <= begin:
            return
        if spans and spans[-1].phone == phone == SILENCE:
            spans[-1] = PhoneSpan(SILENCE, spans[-1].start, end)
        else:
            spans.append(PhoneSpan(phone, begin, end))

    onsets = [(min(s, n_samples) / rate, p) for s, m in events if (p := phones_of(m)) is not None]
    add(SILENCE, 0.0, onsets[0][0] if onsets else seconds)
    for k, (start, phones) in enumerate(onsets):
        end = onsets[k + 1][0] if k + 1 < len(onsets) else seconds
        step = (end - start) / len(phones)
        for j, phone in enumerate(phones):
            add(phone, start + j * step, end if j == len(phones) - 1 else start + (j + 1) * step)
    return spans


def speak(text: str, voice: EspeakVoice = EspeakVoice("en-us")) -> tuple[np.ndarray, list[PhoneSpan]]:
    """(16 kHz mono float32 speech, the ARPAbet phone timeline it speaks, 0 to its end) of `text`."""
    from avgen.media import _resample

    global _engine
    with _lock:
        if _engine is None:
            _engine = _Engine()
        wave, events = _engine.speak(text, voice)
        rate = _engine.rate
    audio = _resample(wave, rate, SAMPLE_RATE)
    spans = timeline([(s * SAMPLE_RATE / rate, m) for s, m in events], len(audio), SAMPLE_RATE)
    return np.clip(audio, -1.0, 1.0).astype(np.float32), spans


def fitted(audio: np.ndarray, spans: list[PhoneSpan], n_samples: int) -> tuple[np.ndarray, list[PhoneSpan]]:
    """Speech and its timeline cut or padded (silence) to exactly `n_samples`, the timeline 0 to its end."""
    seconds = n_samples / SAMPLE_RATE
    out = fit_samples(audio, n_samples)
    kept = [PhoneSpan(s.phone, s.start, min(s.end, seconds)) for s in spans if s.start < seconds]
    end = kept[-1].end if kept else 0.0
    if end < seconds:
        if kept and kept[-1].phone == SILENCE:
            kept[-1] = PhoneSpan(SILENCE, kept[-1].start, seconds)
        else:
            kept.append(PhoneSpan(SILENCE, end, seconds))
    return out, kept


# The voices evaluation speaks with (scripts/audio_driven.py, the scorer's held-out check): espeak-ng's
# default English accents with common variants, at set rates and pitches.
EVALUATION_VOICES = tuple(EspeakVoice(*v) for v in (
    ("en-us", 150, 50), ("en", 175, 40), ("en+f3", 140, 65), ("en+m3", 185, 30), ("en-us+f2", 130, 75),
    ("en+m7", 165, 45), ("en-us+f4", 190, 55), ("en+m1", 155, 35), ("en+f1", 170, 70), ("en-us+m2", 145, 25)))  # fmt: skip

# Voices for training data. None of them is one that evaluation speaks with (scripts/audio_driven.py:
# "en" and "en-us", plain or with the variants f1-f4, m1-m3, m7): other accents, other variants.
TRAINING_ACCENTS = ("en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
TRAINING_VARIANTS = ("", "+m4", "+m5", "+m6", "+m8", "+f5", "+klatt", "+klatt2", "+klatt3", "+Annie", "+adam",
                     "+Andy", "+benjamin", "+linda", "+edward", "+aunty", "+john", "+michel")  # fmt: skip


def training_voice(rng: np.random.Generator) -> EspeakVoice:
    """A random training voice: an accent and variant of the lists above, 120-210 words a minute, pitch 15-85."""
    accent = TRAINING_ACCENTS[rng.integers(len(TRAINING_ACCENTS))]
    variant = TRAINING_VARIANTS[rng.integers(len(TRAINING_VARIANTS))]
    return EspeakVoice(accent + variant, int(rng.integers(120, 211)), int(rng.integers(15, 86)))
