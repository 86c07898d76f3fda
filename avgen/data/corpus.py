"""The synthetic talking-head corpus: drawn faces saying generated sentences, in sync by construction.

A sample is a pure function of (seed, split, index): the index's random stream picks an identity
and a sentence of that split, the sentence gives a transcript and its phone timeline, and the same
timeline (and one per-vowel emphasis) drives the face's mouth (avgen.data.faces) and the speech
(avgen.data.speech). An identity has one look and one voice in every clip. Nothing is stored; `SyntheticCorpus` streams samples for training, `write_clips` writes MP4 + JSON sets to
look at or to score.

Split: identities 0..IDENTITY_POOL-1 and sentences 0..SENTENCE_POOL-1 are each assigned to the
held-out split when a hash of their number is 0 mod 10, whatever the seed, so held-out clips show
identities and say sentences that no training clip has (any seed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

if TYPE_CHECKING:
    from avgen.data.espeak import EspeakVoice

from avgen.data.faces import blink_track, face_for, head_motion, mouth_track, neutral_frame, render
from avgen.data.speech import SOUNDS, Voice, synthesize, voice_for
from avgen.phones import PhoneSpan, frame_phone_ids, phone_timeline
from avgen.timeline import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

SPLITS = ("train", "heldout")
VOWELS = frozenset(p for p, s in SOUNDS.items() if s.kind == "vowel")
HELDOUT_MODULUS = 10  # one identity (and one sentence) in ten is held out
IDENTITY_POOL = 1000
SENTENCE_POOL = 1_000_000
IDENTITY_SALT, SENTENCE_SALT = 0x1D, 0x5E


@dataclass
class Sample:
    frames: np.ndarray  # (T, S, S, 3) uint8 RGB, 25 fps
    audio: np.ndarray  # (T * 640,) float32, 16 kHz mono
    text: str
    phones: list[PhoneSpan]  # contiguous from 0 to T / 25 s
    phone_ids: torch.LongTensor  # (T,) the phone at each frame's centre
    identity: int
    sentence: int
    split: str
    seed: int = 0
    index: int = 0
    mouth_open: np.ndarray | None = field(default=None, repr=False)  # (T,) drawn opening 0..1 (ground truth)
    eyes_closed: np.ndarray | None = field(default=None, repr=False)  # (T,) eyelid closure 0..1 (blinks)

    @property
    def seconds(self) -> float:
        return len(self.frames) / FPS


# ------------------------------------------------------------------ split


def _hash(x: int, salt: int) -> int:
    """splitmix64 of (x, salt): a fixed, well-mixed hash (Python's hash() is salted per process)."""
    z = (x * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9 + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def identity_split(identity: int) -> str:
    return SPLITS[_hash(identity, IDENTITY_SALT) % HELDOUT_MODULUS == 0]


def sentence_split(sentence: int) -> str:
    return SPLITS[_hash(sentence, SENTENCE_SALT) % HELDOUT_MODULUS == 0]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")


def _draw(rng: np.random.Generator, pool: int, split_of, split: str) -> int:
    while True:
        x = int(rng.integers(pool))
        if split_of(x) == split:
            return x


# ------------------------------------------------------------------ sentences

NAMES = (
    "Anna Ben Clara David Emma Frank Grace Henry Iris Jack Kate Leo Maria Nora Oscar Paul Rosa Sam "
    "Tom Vera Lucy Peter Sarah Mark Julia Adam Helen Simon Laura Daniel Alice Victor Olivia Martin "
    "Sophie Lena Max Eva Hugo Nina"
).split()
NOUNS = (
    "book table window garden river mountain city house car train letter phone cup bread apple "
    "song story picture door road ship bridge forest market school office bottle basket chair lamp "
    "map key coat hat shoe bag box ball bike boat camera clock desk dog cat horse bird fish cake "
    "flower tree stone shell guitar piano paper pencil plate spoon blanket pillow kettle ladder "
    "mirror radio ticket wallet umbrella jacket candle engine rocket banana lemon cherry carrot "
    "sandwich pocket"
).split()
PLACES = (
    "park station kitchen library beach market village museum garden harbour office hotel bakery "
    "island valley farm hospital theatre restaurant airport bridge castle church garage cinema "
    "square corner shop lake hill"
).split()
ADJECTIVES = (
    "big small old new red blue green yellow quiet loud happy bright dark warm cold early late "
    "simple strange beautiful heavy light empty full famous busy lucky funny gentle brave clever "
    "friendly golden silver wooden tiny huge broken shiny soft lovely careful calm"
).split()
VERBS = [
    v.split("/")
    for v in (  # base / past / -ing
        "see/saw/seeing find/found/finding bring/brought/bringing open/opened/opening make/made/making "
        "take/took/taking paint/painted/painting build/built/building carry/carried/carrying "
        "watch/watched/watching clean/cleaned/cleaning buy/bought/buying sell/sold/selling "
        "need/needed/needing like/liked/liking want/wanted/wanting keep/kept/keeping move/moved/moving "
        "follow/followed/following fix/fixed/fixing hold/held/holding push/pushed/pushing pull/pulled/pulling "
        "borrow/borrowed/borrowing lose/lost/losing draw/drew/drawing wash/washed/washing hide/hid/hiding "
        "share/shared/sharing check/checked/checking send/sent/sending catch/caught/catching "
        "throw/threw/throwing cook/cooked/cooking order/ordered/ordering forget/forgot/forgetting"
    ).split()
]
MOVES = [
    v.split("/")
    for v in (
        "walk/walked/walking run/ran/running travel/travelled/travelling drive/drove/driving "
        "swim/swam/swimming wait/waited/waiting work/worked/working sing/sang/singing dance/danced/dancing "
        "sleep/slept/sleeping read/read/reading listen/listened/listening study/studied/studying "
        "play/played/playing rest/rested/resting"
    ).split()
]
TIMES = (
    "today",
    "tomorrow",
    "yesterday",
    "tonight",
    "later",
    "soon",
    "again",
    "every morning",
    "last night",
    "this weekend",
    "in the evening",
    "after lunch",
    "on Monday",
    "on Friday",
    "next summer",
    "before dinner",
    "at noon",
    "all day",
    "once a week",
    "in the spring",
    "this afternoon",
)
MANNERS = "quickly slowly quietly carefully happily suddenly finally together".split()
HABITS = "always never often really rarely sometimes".split()
PREPOSITIONS = "near behind inside beside under above across outside".split()
FEELINGS = "glad sure tired afraid proud surprised worried excited sorry ready".split()

TEMPLATES = (
    "{Name} {past} the {adj} {noun} {time}.",
    "The {adj} {noun} was {prep} the {place}.",
    "{Name} {past} a {noun} at the {place}.",
    "Can you {verb} the {noun} {time}?",
    "We will {verb} the {adj} {noun} {time}.",
    "I think {name} {move_past} to the {place} {time}.",
    "Please {verb} the {noun} before {name} comes back.",
    "{Name} and {name} {move_past} {manner} to the {place}.",
    "Did {name} {verb} the {adj} {noun}?",
    "My {noun} is {prep} the {adj} {noun2}.",
    "{Name} was {feeling} that the {noun} was so {adj}.",
    "They are {move_ing} near the {place} {time}.",
    "Where did you {verb} the {adj} {noun}?",
    "I {habit} {verb} a {adj} {noun} {time}.",
    "{Name} is {verb_ing} the {noun} at the {place}.",
    "Why was the {noun} so {adj} {time}?",
    "The {noun} and the {noun2} are both {adj}.",
    "You can {move} to the {place} with {name}.",
    "{Name} said the {place} was {adj} {time}.",
    "Let us {verb} a {adj} {noun} for {name}.",
    "When we {move_past} home, the {noun} was gone.",
    "{Name} {manner} {move_past}, and {name} {past} the {noun}.",
    "{Name} {past} the {noun}.",
    "Look at the {adj} {noun}!",
    "{Name} {habit} {move_past}.",
)


def _clause(rng: np.random.Generator) -> str:
    def pick(options):
        return options[rng.integers(len(options))]

    verb, move = pick(VERBS), pick(MOVES)
    noun = pick(NOUNS)
    noun2 = pick([n for n in NOUNS if n != noun])
    name = pick(NAMES)
    words = dict(
        name=name,
        Name=name,
        noun=noun,
        noun2=noun2,
        adj=pick(ADJECTIVES),
        place=pick(PLACES),
        verb=verb[0],
        past=verb[1],
        verb_ing=verb[2],
        move=move[0],
        move_past=move[1],
        move_ing=move[2],
        time=pick(TIMES),
        manner=pick(MANNERS),
        habit=pick(HABITS),
        prep=pick(PREPOSITIONS),
        feeling=pick(FEELINGS),
    )
    template = pick(TEMPLATES)
    # the second {name} in a template is another person
    if template.count("ame}") > 1:
        first, _, rest = template.partition("ame}")
        other = pick([n for n in NAMES if n != name])
        template = first + "ame}" + rest.replace("{name}", other)
    text = template.format(**words)
    return text[0].upper() + text[1:]


def natural_seconds(text: str) -> float:
    return phone_timeline(text)[-1].end


def sentence_text(sentence: int, seconds: float | None = None) -> str:
    """The transcript of sentence number `sentence`: one clause (sometimes two) at its natural length,
    or, given `seconds`, as many clauses as fill about that long when spoken at a natural rate."""
    rng = np.random.default_rng([SENTENCE_SALT, int(sentence)])
    if seconds is None:
        text = _clause(rng)
        return text + " " + _clause(rng) if rng.random() < 0.25 else text
    # first clause: the first of a few candidates that fits, else the shortest
    candidates = [_clause(rng) for _ in range(10)]
    fitting = [c for c in candidates if natural_seconds(c) <= 1.15 * seconds]
    text = fitting[0] if fitting else min(candidates, key=natural_seconds)
    for _ in range(12):  # then more clauses while they fit
        if natural_seconds(text) >= 0.8 * seconds:
            break
        more = text + " " + _clause(rng)
        if natural_seconds(more) <= 1.15 * seconds:
            text = more
    return text


# ------------------------------------------------------------------ samples


def prosody(phones: list[PhoneSpan], rng: np.random.Generator) -> np.ndarray:
    """Emphasis 0..1 per span: about a third of the vowels are stressed (louder, higher, wider open)."""
    return np.array([float(rng.random() < 0.35) if p.phone in VOWELS else 0.5 for p in phones])


def _streams(seed: int, split: str, index: int) -> list[np.random.Generator]:
    """Independent random streams of one sample: (choice of identity and sentence, video, audio)."""
    ss = np.random.SeedSequence([int(seed) % 2**64, SPLITS.index(split), int(index) % 2**64])
    return [np.random.default_rng(s) for s in ss.spawn(3)]


def make_sample(
    index: int,
    split: str = "train",
    seed: int = 0,
    seconds: float | None = None,
    size: int = 64,
    voice: Voice | None = None,
    espeak: EspeakVoice | None = None,
) -> Sample:
    """Sample `index` of the corpus `seed`'s `split`: the same arguments always give the same sample.

    `seconds=None` gives a sentence at its natural length (about 1.5-5 s); otherwise the clip lasts
    round(seconds * 25) frames and holds as many clauses as fit, their timing fitted to the length.
    `voice` replaces the identity's own voice (`voice_for(identity)`); nothing else changes.
    `espeak` has espeak-ng speak the sentence instead (avgen.data.espeak, a second voice family), at
    its own pace: the face says the phones it spoke, when it spoke them; speech longer than the clip
    is cut, shorter is followed by silence. Not bit-exact: espeak-ng's timing depends by a few
    milliseconds on what it spoke before in the same process (the phones themselves do not)."""
    _check_split(split)
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number of pixels >= 16, not {size}")
    if seconds is not None and not round(seconds * FPS) >= 1:
        raise ValueError(f"seconds must be at least one 40 ms frame, not {seconds}")
    pick, video, audio = _streams(seed, split, index)
    identity = _draw(pick, IDENTITY_POOL, identity_split, split)
    sentence = _draw(pick, SENTENCE_POOL, sentence_split, split)
    text = sentence_text(sentence, seconds)
    if espeak is not None:
        from avgen.data.espeak import fitted, speak

        spoken, spoken_phones = speak(text, espeak)
        n_frames = max(1, round((len(spoken) / SAMPLE_RATE if seconds is None else seconds) * FPS))
        speech, phones = fitted(spoken, spoken_phones, n_frames * SAMPLES_PER_FRAME)
        emphasis = np.zeros(len(phones))
    else:
        n_frames = max(1, round((natural_seconds(text) if seconds is None else seconds) * FPS))
        phones = phone_timeline(text, n_frames / FPS)
        emphasis = prosody(phones, pick)
    mouth = mouth_track(phones, n_frames, emphasis)
    blinks = blink_track(n_frames, video)
    frames = render(face_for(identity), mouth, blinks, head_motion(n_frames, video), size)
    if espeak is None:
        speech = synthesize(
            phones,
            n_frames * SAMPLES_PER_FRAME,
            voice or voice_for(identity),
            audio,
            question=text.rstrip().endswith("?"),
            emphasis=emphasis,
        )
    return Sample(
        frames=frames,
        audio=speech,
        text=text,
        phones=phones,
        phone_ids=frame_phone_ids(phones, n_frames),
        identity=identity,
        sentence=sentence,
        split=split,
        seed=seed,
        index=index,
        mouth_open=mouth[:, 0].copy(),
        eyes_closed=blinks,
    )


def reference_frame(sample_or_identity: Sample | int, size: int | None = None) -> np.ndarray:
    """(S, S, 3) uint8: the sample's identity at rest (lips closed, eyes open, head centred), for
    identity conditioning. Takes a Sample (its frame size by default) or an identity number."""
    if isinstance(sample_or_identity, Sample):
        identity = sample_or_identity.identity
        size = size or sample_or_identity.frames.shape[1]
    else:
        identity = int(sample_or_identity)
    return neutral_frame(face_for(identity), size or 64)


def collate(samples: list[Sample]) -> dict:
    """Stack samples of equal length (make them with a fixed `seconds`) for a DataLoader's collate_fn:
    frames (B, T, S, S, 3) uint8, audio (B, T*640) float32, phone_ids (B, T), reference (B, S, S, 3)
    uint8, identity (B,), text (list)."""
    lengths = {len(s.frames) for s in samples}
    if len(lengths) > 1:
        raise ValueError(f"samples differ in length ({sorted(lengths)} frames); give the corpus a fixed seconds")
    return {
        "frames": torch.from_numpy(np.stack([s.frames for s in samples])),
        "audio": torch.from_numpy(np.stack([s.audio for s in samples])),
        "phone_ids": torch.stack([s.phone_ids for s in samples]),
        "reference": torch.from_numpy(np.stack([reference_frame(s) for s in samples])),
        "identity": torch.tensor([s.identity for s in samples]),
        "text": [s.text for s in samples],
    }


class SyntheticCorpus(IterableDataset):
    """Streams make_sample(start), make_sample(start + 1), ... (forever, or `count` samples).

    DataLoader workers and distributed ranks (`rank` of `world_size`) each take every n-th index, so
    together they produce each index exactly once."""

    def __init__(
        self,
        split: str = "train",
        seed: int = 0,
        count: int | None = None,
        seconds: float | None = None,
        size: int = 64,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        _check_split(split)
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0, not {count}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, not {rank}")
        self.split, self.seed, self.count, self.seconds, self.size = split, seed, count, seconds, size
        self.start, self.rank, self.world_size = start, rank, world_size

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("an endless SyntheticCorpus (count=None) has no length")
        return self.count

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard, shards = self.rank * workers + worker, self.world_size * workers
        stop = math.inf if self.count is None else self.start + self.count
        i = self.start + shard
        while i < stop:
            yield make_sample(i, self.split, self.seed, self.seconds, self.size)
            i += shards


# ------------------------------------------------------------------ clips on disk


def clip_metadata(sample: Sample) -> dict:
    return {
        "transcript": sample.text,
        "phones": [[s.phone, s.start, s.end] for s in sample.phones],
        "identity": sample.identity,
        "sentence": sample.sentence,
        "split": sample.split,
        "seed": sample.seed,
        "index": sample.index,
        "frames": len(sample.frames),
        "seconds": sample.seconds,
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "size": int(sample.frames.shape[1]),
    }


def _json_text(meta: dict) -> str:
    """Indented JSON with one phone span a line (json's indent would give each number its own line)."""
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in meta.items() if k != "phones"]
    phones = ",\n".join(f"  {json.dumps(p)}" for p in meta["phones"])
    lines.insert(1, f' "phones": [\n{phones}\n ]')
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_clips(
    out_dir,
    count: int,
    split: str = "train",
    seed: int = 0,
    seconds: float | None = None,
    size: int = 64,
    progress=None,
) -> list[Path]:
    """Write samples 0..count-1 as out_dir/NNNN.mp4 (H.264 + AAC) and NNNN.json (transcript, phone
    timeline as [phone, start, end] in seconds, identity, sentence, split, seed). Returns the MP4 paths."""
    from avgen.media import write_mp4

    _check_split(split)
    if count < 1:
        raise ValueError(f"the number of clips must be at least 1, not {count}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(count - 1)))
    paths = []
    for i in range(count):
        sample = make_sample(i, split, seed, seconds, size)
        meta = clip_metadata(sample)
        path = out / f"{i:0{digits}d}.mp4"
        tags = {
            "title": sample.text,
            "comment": f"avgen synthetic corpus: split {split}, seed {seed}, index {i}",
            "avgen_identity": sample.identity,
            "avgen_sentence": sample.sentence,
        }
        write_mp4(path, sample.frames, sample.audio, metadata=tags)
        path.with_suffix(".json").write_text(_json_text(meta))
        paths.append(path)
        if progress is not None:
            progress((i + 1) / count, path.name)
    return paths


def corpus_main(
    out_dir,
    clips: int,
    seed: int = 0,
    split: str = "train",
    seconds: float | None = None,
    size: int = 64,
    progress=None,
) -> list[Path]:
    """`avgen corpus`: write a sample set a person can look at (see write_clips)."""
    if seconds is not None and not seconds > 0:
        raise ValueError(f"--seconds must be positive, not {seconds}")
    if size < 16 or size % 2:
        raise ValueError(f"--size must be an even number of pixels >= 16, not {size}")
    return write_clips(out_dir, clips, split=split, seed=seed, seconds=seconds, size=size, progress=progress)
