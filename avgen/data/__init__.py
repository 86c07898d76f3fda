"""Training data: the synthetic talking-head corpus (drawn faces, synthesised speech, exact lip-sync)."""

from avgen.data.corpus import (SPLITS, Sample, SyntheticCorpus, collate, corpus_main, identity_split, make_sample,
                               reference_frame, sentence_split, sentence_text, write_clips)

__all__ = ["SPLITS", "Sample", "SyntheticCorpus", "collate", "corpus_main", "identity_split", "make_sample",
           "reference_frame", "sentence_split", "sentence_text", "write_clips"]
from avgen.data.real import BadClip, RealClips, clip_split, real_sample  # noqa: E402  real talking-head clips

__all__ += ["BadClip", "RealClips", "clip_split", "real_sample"]
