"""The synthetic talking-head corpus: deterministic samples, disjoint splits, exact lip-sync by construction."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avgen.data import (
    SPLITS,
    SyntheticCorpus,
    collate,
    corpus_main,
    identity_split,
    make_sample,
    reference_frame,
    sentence_split,
    write_clips,
)
from avgen.data.corpus import IDENTITY_POOL, natural_seconds
from avgen.media import read_mp4
from avgen.phones import PHONES, SILENCE, PhoneSpan, frame_phone_ids
from avgen.timeline import FPS, SAMPLES_PER_FRAME

OPEN_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH"}
BILABIALS = {"P", "B", "M"}


def frame_phones(sample):
    return [PHONES[i] for i in sample.phone_ids.tolist()]


def quiet_frames(sample):
    """Silence frames whose neighbours are silence too (a frame next to speech may catch its edge)."""
    sil = np.array([p == SILENCE for p in frame_phones(sample)])
    return sil & np.r_[True, sil[:-1]] & np.r_[sil[1:], True]


def mouth_darkness(frames):
    """255 - mean gray level of the landmark scorer's fixed mouth region (rows 55-85 %, columns 30-70 %)."""
    s = frames.shape[1]
    region = frames[:, int(0.55 * s) : int(0.85 * s), int(0.30 * s) : int(0.70 * s)].astype(float)
    return 255 - (region @ [0.299, 0.587, 0.114]).mean(axis=(1, 2))


def frame_db(sample):
    frames = sample.audio.reshape(len(sample.frames), SAMPLES_PER_FRAME).astype(float)
    return 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-12)


@pytest.fixture(scope="module")
def samples():
    return [make_sample(i) for i in range(8)]


def test_same_index_gives_the_same_sample_and_another_index_a_different_one():
    a, b, c = make_sample(3, seed=7), make_sample(3, seed=7), make_sample(4, seed=7)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert a.text == b.text and a.phones == b.phones and torch.equal(a.phone_ids, b.phone_ids)
    assert a.text != c.text or a.identity != c.identity
    assert not np.array_equal(a.audio[: len(c.audio)], c.audio[: len(a.audio)])
    assert make_sample(3, seed=8).text != a.text


def test_samples_ignore_and_leave_alone_the_global_random_state():
    np.random.seed(1)
    torch.manual_seed(1)
    a = make_sample(0, seconds=1.0)
    state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    np.random.seed(2)
    torch.manual_seed(2)
    b = make_sample(0, seconds=1.0)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    np.random.seed(1)
    torch.manual_seed(1)
    make_sample(0, seconds=1.0)
    assert np.array_equal(np.random.get_state()[1], state[0]) and torch.equal(torch.get_rng_state(), state[1])


def test_train_and_heldout_share_no_identity_and_no_sentence():
    train = [make_sample(i, "train", seed=s, seconds=0.2) for s in (0, 1) for i in range(60)]
    heldout = [make_sample(i, "heldout", seed=s, seconds=0.2) for s in (0, 1) for i in range(60)]
    assert {s.identity for s in train}.isdisjoint({s.identity for s in heldout})
    assert {s.sentence for s in train}.isdisjoint({s.sentence for s in heldout})
    assert {s.text for s in train}.isdisjoint({s.text for s in heldout})
    assert all(identity_split(s.identity) == "train" and sentence_split(s.sentence) == "train" for s in train)
    assert all(identity_split(s.identity) == "heldout" and sentence_split(s.sentence) == "heldout" for s in heldout)
    held = sum(identity_split(i) == "heldout" for i in range(IDENTITY_POOL))
    assert 0.06 * IDENTITY_POOL < held < 0.14 * IDENTITY_POOL  # about one in ten
    assert len({s.identity for s in train}) > 50  # many identities, not a handful


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split"):
        make_sample(0, "test")
    assert SPLITS == ("train", "heldout")


def test_natural_length_clip_has_round_duration_frames_and_640_samples_each(samples):
    for s in samples:
        t = len(s.frames)
        assert t == round(natural_seconds(s.text) * FPS)
        assert s.frames.shape == (t, 64, 64, 3) and s.frames.dtype == np.uint8
        assert s.audio.shape == (t * SAMPLES_PER_FRAME,) and s.audio.dtype == np.float32
        assert s.phone_ids.shape == (t,) and s.phone_ids.dtype == torch.long
        assert torch.equal(s.phone_ids, frame_phone_ids(s.phones, t))
        assert s.phones[0].start == 0 and s.phones[-1].end == pytest.approx(t / FPS)
        assert all(a.end == pytest.approx(b.start) for a, b in zip(s.phones, s.phones[1:]))


def test_requested_length_is_met_exactly_with_speech_filling_it():
    for seconds in (1.0, 3.3, 6.0):
        s = make_sample(5, seconds=seconds, size=32)
        t = round(seconds * FPS)
        assert s.frames.shape == (t, 32, 32, 3) and len(s.audio) == t * SAMPLES_PER_FRAME
        assert s.phones[-1].end == pytest.approx(t / FPS)
        speech = sum(p.end - p.start for p in s.phones if p.phone != SILENCE)
        assert speech > 0.45 * seconds


def test_audio_never_clips_and_speech_is_near_minus_20_dbfs(samples):
    for s in samples:
        assert np.abs(s.audio).max() <= 0.91
        speaking = np.array([p != SILENCE for p in frame_phones(s)])
        rms_db = 10 * np.log10(np.mean(s.audio.reshape(len(s.frames), -1)[speaking].astype(float) ** 2))
        assert -24 < rms_db < -16


def test_speech_energy_is_high_in_vowels_and_near_silent_in_pauses(samples):
    for s in samples:
        db, phones = frame_db(s), frame_phones(s)
        vowels = [db[i] for i, p in enumerate(phones) if p in OPEN_VOWELS]
        assert min(vowels) > -30 and np.mean(vowels) > -22
        assert db[quiet_frames(s)].max() < -50  # only the -60 dBFS noise floor


def test_mouth_is_open_in_vowels_and_closed_for_p_b_m_and_silence(samples):
    margins = []
    for s in samples:
        phones = frame_phones(s)
        vowel = np.array([p in OPEN_VOWELS for p in phones])
        closed = np.array([p in BILABIALS for p in phones]) | quiet_frames(s)
        assert s.mouth_open[vowel].mean() > 0.4 and s.mouth_open[closed].max() < 0.15
        dark = mouth_darkness(s.frames)
        margins.append(dark[vowel].mean() - dark[closed].mean())
    # the open mouth's dark inside shows in the scorer's mouth region, for every identity
    assert min(margins) > 1.0 and np.mean(margins) > 5.0, margins


def test_mouth_opening_follows_the_speech_loudness_and_shows_in_the_pixels(samples):
    for s in samples:
        db = frame_db(s)
        loudness = np.maximum(db, np.percentile(db, 95) - 40)  # floored like the landmark scorer
        assert np.corrcoef(s.mouth_open, loudness)[0, 1] > 0.4, s.index
        assert np.corrcoef(mouth_darkness(s.frames), s.mouth_open)[0, 1] > 0.6, s.index


def test_ground_truth_clips_score_in_sync_with_the_landmark_scorer():
    from eval.landmarks import score_landmarks

    clips = [make_sample(i, "heldout", seconds=6.0) for i in range(6)]
    matched = [score_landmarks(c.frames, c.audio)[0] for c in clips]
    swapped = [score_landmarks(c.frames, clips[(i + 1) % 6].audio)[0] for i, c in enumerate(clips)]
    assert [r.av_offset_frames for r in matched] == [0] * 6
    assert np.mean([r.sync_confidence for r in matched]) > 1.4 * np.mean([r.sync_confidence for r in swapped])


def test_eyes_blink_every_few_seconds_for_three_or_four_frames():
    s = make_sample(2, seconds=12.0)
    shut = s.eyes_closed > 0
    starts = np.flatnonzero(shut & ~np.r_[False, shut[:-1]])
    ends = np.flatnonzero(shut & ~np.r_[shut[1:], False])
    assert len(starts) >= 2
    assert all(3 <= e - b + 1 <= 4 for b, e in zip(starts, ends))
    assert np.diff(starts).min() >= 2 * FPS - 1
    # visible in pixels: from the last open frame to the shut one (2 frames later) the eye band changes
    # far more than it does over 2 frames of open eyes
    band = s.frames[:, 16:32, 13:51].astype(float)
    blink = np.mean([np.abs(band[b + 1] - band[b - 1]).mean() for b in starts if b >= 1])
    still = np.mean(
        [np.abs(band[k] - band[k - 2]).mean() for k in range(2, len(band)) if not shut[k - 2 : k + 1].any()]
    )
    assert blink > 3 * still


def test_head_moves_slowly_and_a_little():
    s = make_sample(1, seconds=8.0)
    still = np.abs(s.frames[1:].astype(int) - s.frames[:-1]).mean(axis=(1, 2, 3))
    assert 0 < np.median(still) < 3  # consecutive frames are nearly alike, but not frozen
    first, last = s.frames[0].astype(int), s.frames[-1].astype(int)
    assert np.abs(first - last).mean() < 20  # the face stays put


def test_reference_frame_is_the_identity_at_rest():
    a, b = make_sample(0, seconds=1.0), make_sample(1, seconds=1.0)
    ref = reference_frame(a)
    assert ref.shape == (64, 64, 3) and ref.dtype == np.uint8
    assert np.array_equal(ref, reference_frame(a.identity))
    assert not np.array_equal(ref, reference_frame(b)) or a.identity == b.identity
    assert reference_frame(a, size=128).shape == (128, 128, 3)
    # a neutral closed-mouth frame looks like the clip's closed-mouth frames
    closed = quiet_frames(a)
    assert np.abs(a.frames[closed].astype(float).mean(axis=0) - ref).mean() < 8


def test_corpus_streams_each_index_once_across_workers_and_ranks():
    def texts(ds, workers=0):
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        return sorted((s.index, s.text) for s in loader)

    expected = sorted((i, make_sample(i, "heldout", 3, 0.4).text) for i in range(5, 11))
    assert texts(SyntheticCorpus("heldout", seed=3, count=6, seconds=0.4, start=5)) == expected
    assert texts(SyntheticCorpus("heldout", seed=3, count=6, seconds=0.4, start=5), workers=2) == expected
    ranks = [
        texts(SyntheticCorpus("heldout", seed=3, count=6, seconds=0.4, start=5, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert sorted(ranks[0] + ranks[1]) == expected and not set(ranks[0]) & set(ranks[1])
    assert len(SyntheticCorpus(count=6)) == 6
    endless = iter(SyntheticCorpus(seconds=0.2))
    assert [next(endless).index for _ in range(3)] == [0, 1, 2]


def test_collate_stacks_equal_length_samples():
    batch = collate([make_sample(i, seconds=0.8) for i in range(3)])
    assert batch["frames"].shape == (3, 20, 64, 64, 3) and batch["frames"].dtype == torch.uint8
    assert batch["audio"].shape == (3, 20 * SAMPLES_PER_FRAME)
    assert batch["phone_ids"].shape == (3, 20) and batch["reference"].shape == (3, 64, 64, 3)
    with pytest.raises(ValueError, match="length"):
        collate([make_sample(0), make_sample(1, seconds=0.8)])


def test_write_clips_gives_mp4s_and_json_that_read_back(tmp_path):
    paths = write_clips(tmp_path / "set", 2, split="heldout", seed=4)
    assert [p.name for p in paths] == ["0000.mp4", "0001.mp4"]
    for i, path in enumerate(paths):
        sample = make_sample(i, "heldout", seed=4)
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["transcript"] == sample.text and meta["split"] == "heldout" and meta["seed"] == 4
        assert meta["identity"] == sample.identity and meta["sentence"] == sample.sentence
        assert [PhoneSpan(*p) for p in meta["phones"]] == sample.phones
        clip = read_mp4(path)
        assert len(clip.frames) == len(sample.frames) == meta["frames"]
        assert abs(len(clip.audio) - len(sample.audio)) <= SAMPLES_PER_FRAME
        assert clip.metadata.get("title") == sample.text
        assert np.abs(clip.frames.astype(int) - sample.frames).mean() < 6  # H.264 at crf 18


def test_corpus_main_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="clips"):
        corpus_main(tmp_path, 0, 0, "train", None)
    with pytest.raises(ValueError, match="split"):
        corpus_main(tmp_path, 1, 0, "valid", None)
    with pytest.raises(ValueError, match="seconds"):
        corpus_main(tmp_path, 1, 0, "train", -1.0)
    with pytest.raises(ValueError, match="size"):
        corpus_main(tmp_path, 1, 0, "train", None, size=63)
