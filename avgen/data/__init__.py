"""Training data: the synthetic talking-head corpus (drawn faces, synthesised speech, exact lip-sync)."""

from avgen.data.corpus import (SPLITS, Sample, SyntheticCorpus, collate, corpus_main, identity_split, make_sample,
                               reference_frame, sentence_split, sentence_text, write_clips)

__all__ = ["SPLITS", "Sample", "SyntheticCorpus", "collate", "corpus_main", "identity_split", "make_sample",
           "reference_frame", "sentence_split", "sentence_text", "write_clips"]
