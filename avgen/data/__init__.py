"""Training data: the synthetic talking-head corpus (drawn faces, synthesised speech, exact lip-sync)
and real talking-head clips from a folder of MP4s, as the same `Sample`s."""

from avgen.data.corpus import (
    SPLITS,
    Sample,
    SyntheticCorpus,
    collate,
    corpus_main,
    identity_split,
    make_sample,
    reference_frame,
    sentence_split,
    sentence_text,
    write_clips,
)
from avgen.data.real import BadClip, RealClips, clip_split, real_sample

__all__ = [
    "SPLITS",
    "Sample",
    "SyntheticCorpus",
    "collate",
    "corpus_main",
    "identity_split",
    "make_sample",
    "reference_frame",
    "sentence_split",
    "sentence_text",
    "write_clips",
    "BadClip",
    "RealClips",
    "clip_split",
    "real_sample",
]
