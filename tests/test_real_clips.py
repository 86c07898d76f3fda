"""Real clips: a folder of MP4s becomes face-cropped 25 fps / 16 kHz training windows, bad files skipped.

The "real" clips are eval.drawn_face's drawn talking head (a face OpenCV's Haar cascade finds)
pasted off-centre into a larger green frame, written as H.264 + AAC MP4s.
"""

import json
import warnings
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from avgen.data import SPLITS, RealClips, Sample, clip_split, real_sample
from avgen.data.real import load_clip
from avgen.media import write_mp4
from avgen.phones import NULL_PHONE, PHONE_IDS, frame_phone_ids, words
from avgen.timeline import FPS, SAMPLES_PER_FRAME
from eval.drawn_face import drawn_talking_head

GREEN = (30, 160, 60)
H, W, FACE = 240, 320, 128
A_TEXT = "Anna saw the big book today. Then she went home."
B_TEXT = "Can you fix the old lamp tomorrow?"


def paste(faces: np.ndarray, ys, xs) -> np.ndarray:
    """Faces (T, 128, 128, 3) into green W x H frames, frame i's top-left corner at (xs[i], ys[i])."""
    out = np.empty((len(faces), H, W, 3), np.uint8)
    out[:] = GREEN
    for i, (y, x) in enumerate(zip(np.broadcast_to(ys, len(faces)), np.broadcast_to(xs, len(faces)))):
        out[i, y : y + FACE, x : x + FACE] = faces[i]
    return out


def write_video_only(path, frames, fps=FPS):
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(vs.encode(None))


def heldout_name() -> str:
    return next(f"held{k}.mp4" for k in range(1000) if clip_split(f"held{k}.mp4") == "heldout")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    # a: 4 s, static face off-centre, .txt transcript -> 2 windows of 2 s
    faces, audio = drawn_talking_head(4.0, seed=0, size=FACE)
    write_mp4(root / "a.mp4", paste(faces, 90, 170), audio)
    (root / "a.txt").write_text(A_TEXT + "\n")
    # sub/b: 3 s at 30 fps, .json transcript -> 75 frames at 25 fps, 1 window
    faces, audio = drawn_talking_head(3.6, seed=1, size=FACE)  # 90 frames
    (root / "sub").mkdir()
    write_mp4(root / "sub" / "b.mp4", paste(faces, 20, 20), audio[: 3 * 16000], fps=30)
    (root / "sub" / "b.json").write_text(json.dumps({"text": B_TEXT}))
    # c: 2.4 s, the face drifts right by 150 px, no transcript -> 1 window
    faces, audio = drawn_talking_head(2.4, seed=2, size=FACE)
    write_mp4(root / "c.mp4", paste(faces, 60, np.linspace(20, 170, len(faces)).round().astype(int)), audio)
    # a clip whose name puts it in the held-out split
    faces, audio = drawn_talking_head(2.0, seed=3, size=FACE)
    write_mp4(root / heldout_name(), paste(faces, 50, 100), audio)
    # bad ones
    faces, audio = drawn_talking_head(2.4, seed=4, size=FACE)
    write_video_only(root / "noaudio.mp4", paste(faces, 50, 100))
    write_mp4(root / "silent.mp4", paste(faces, 50, 100), np.zeros_like(audio))
    write_mp4(root / "short.mp4", paste(faces[:25], 50, 100), audio[: 25 * SAMPLES_PER_FRAME])
    noise = np.random.default_rng(0).integers(0, 255, (60, H, W, 3), dtype=np.uint8)
    write_mp4(root / "noface.mp4", noise, audio[: 60 * SAMPLES_PER_FRAME])
    (root / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    (root / "badjson.mp4").write_bytes((root / "a.mp4").read_bytes())
    (root / "badjson.json").write_text("{not json")
    # not clips: a hidden file and other files
    (root / ".partial.mp4").write_bytes(b"half a file")
    (root / "notes.md").write_text("not a clip")
    return root


@pytest.fixture(scope="module")
def dataset(folder):
    data = RealClips(folder, split=None, seconds=2.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        len(data)  # prepares
    data.caught = caught
    return data


def clip_named(data, name):
    return next(c for c in data.clips if c.relpath == name)


def face_region(path_frames, y, x, size=64):
    return cv2.resize(path_frames[y : y + FACE, x : x + FACE], (size, size), interpolation=cv2.INTER_AREA)


def corr(a, b):
    return np.corrcoef(np.asarray(a, float).ravel(), np.asarray(b, float).ravel())[0, 1]


def test_finds_clips_recursively_ignoring_hidden_and_other_files(dataset):
    found = [p.relative_to(dataset.root).as_posix() for p in dataset.paths]
    assert found == sorted(
        [
            "a.mp4",
            "sub/b.mp4",
            "c.mp4",
            heldout_name(),
            "noaudio.mp4",
            "silent.mp4",
            "short.mp4",
            "noface.mp4",
            "garbage.mp4",
            "badjson.mp4",
        ]
    )
    assert sorted(c.relpath for c in dataset.clips) == sorted(["a.mp4", "sub/b.mp4", "c.mp4", heldout_name()])


def test_windows_are_samples_of_exact_length(dataset):
    assert len(dataset) == 2 + 1 + 1 + 1  # a: 4 s, b: 3 s, c: 2.4 s, held: 2 s; 2 s windows back to back
    for i in range(len(dataset)):
        s = dataset.sample(i)
        assert isinstance(s, Sample) and s.index == i
        assert s.frames.shape == (50, 64, 64, 3) and s.frames.dtype == np.uint8
        assert s.audio.shape == (50 * SAMPLES_PER_FRAME,) and s.audio.dtype == np.float32
        assert s.phone_ids.shape == (50,) and s.phone_ids.dtype == torch.long
        assert np.abs(s.audio).max() > 0.05  # speech, not padding
    clip = clip_named(dataset, "a.mp4")
    assert [s.identity for s in (dataset[0], dataset[1])] == [clip.number] * 2
    np.testing.assert_array_equal(dataset[1].frames, clip.frames[50:100])
    with pytest.raises(IndexError):
        dataset.sample(len(dataset))


@pytest.mark.filterwarnings("ignore:.* clips under")
def test_hop_overlaps_windows(folder):
    data = RealClips(folder, split="train", seconds=2.0, hop=1.0)
    frames = {c.relpath: len(c.frames) for c in data.clips}
    assert frames == {"a.mp4": 100, "sub/b.mp4": 75, "c.mp4": 60}
    assert len(data) == 3 + 2 + 1  # starts 0, 25, 50 / 0, 25 / 0


def test_crop_holds_the_face_off_centre(folder, dataset):
    frames = paste(drawn_talking_head(4.0, seed=0, size=FACE)[0], 90, 170)
    # a tight margin frames the face as drawn: the crop matches the face region resized, not
    # the whole frame nor a region beside the face
    tight = load_clip(folder / "a.mp4", size=64, margin=0.06)

    def match(y, x):
        return np.mean([corr(tight.frames[i], face_region(frames[i], y, x)) for i in range(0, 100, 5)])

    assert match(90, 170) > 0.75
    assert match(90, 130) < 0.4 and match(60, 170) < 0.4
    assert np.mean([corr(tight.frames[i], cv2.resize(frames[i], (64, 64))) for i in range(0, 100, 5)]) < 0.3
    # the default margin: centred on the face, little of the green background left
    clip = clip_named(dataset, "a.mp4")
    x0, y0, side = clip.squares[40]
    assert abs(x0 + side / 2 - (170 + FACE / 2)) < 4 and abs(y0 + side / 2 - (90 + FACE / 2)) < 4
    assert FACE < side < 1.4 * FACE
    green = lambda f: (np.abs(f.astype(int) - GREEN).sum(-1) < 60).mean()
    assert green(frames) > 0.75
    assert green(clip.frames) < 0.25
    assert corr(clip.frames[40], cv2.resize(frames[40], (64, 64))) < 0.5  # not the whole frame


def test_crop_box_is_steady_on_a_still_face_and_follows_a_moving_one(dataset):
    still = clip_named(dataset, "a.mp4").squares
    assert np.abs(np.diff(still, axis=0)).max() <= 1  # at most a pixel from frame to frame
    assert (still.max(axis=0) - still.min(axis=0)).max() <= 0.06 * still[:, 2].mean()
    moving = clip_named(dataset, "c.mp4")
    truth = np.linspace(20, 170, 60).round() + FACE / 2
    centre = moving.squares[:, 0] + moving.squares[:, 2] / 2
    assert np.abs(centre - truth).max() < 8
    assert np.all(np.diff(moving.squares[:, 0]) >= 0)  # no back-and-forth jitter
    assert np.abs(np.diff(moving.squares[:, 2])).max() <= 2


def test_other_frame_rates_are_resampled_to_25_fps(dataset):
    clip = clip_named(dataset, "sub/b.mp4")
    assert clip.source_fps == pytest.approx(30)
    assert len(clip.frames) == 75 and clip.audio.shape == (75 * SAMPLES_PER_FRAME,)


def test_phones_come_from_the_transcript_fitted_to_the_clip(dataset):
    clip = clip_named(dataset, "a.mp4")
    assert clip.text == A_TEXT and clip.phones[-1].end == pytest.approx(4.0)
    windows = [dataset[0], dataset[1]]
    for s in windows:
        assert s.phones[0].start == 0.0 and s.phones[-1].end == pytest.approx(2.0)
        assert all(a.end == pytest.approx(b.start) for a, b in zip(s.phones, s.phones[1:]))
        assert torch.equal(s.phone_ids, frame_phone_ids(s.phones, 50))
        assert (s.phone_ids != PHONE_IDS[NULL_PHONE]).all()
    assert torch.equal(torch.cat([s.phone_ids for s in windows]), frame_phone_ids(clip.phones, 100))
    said = " ".join(s.text for s in windows).split()
    assert said == [w for w in words(A_TEXT) if w.isalpha()]
    b = clip_named(dataset, "sub/b.mp4")  # from clip.json
    assert b.text == B_TEXT and b.phones


def test_no_transcript_gives_null_phones(dataset):
    index = next(i for i in range(len(dataset)) if dataset.window_of(i)[0].relpath == "c.mp4")
    s = dataset.sample(index)
    assert s.text == "" and s.phones == []
    assert (s.phone_ids == PHONE_IDS[NULL_PHONE]).all()


def test_bad_clips_are_skipped_with_reasons(dataset):
    reasons = {p.name: r for p, r in dataset.skipped}
    assert set(reasons) == {"noaudio.mp4", "silent.mp4", "short.mp4", "noface.mp4", "garbage.mp4", "badjson.mp4"}
    assert "no audio" in reasons["noaudio.mp4"]
    assert "silent" in reasons["silent.mp4"]
    assert "too short" in reasons["short.mp4"]
    assert "no face" in reasons["noface.mp4"]
    assert "garbage.mp4" in reasons["garbage.mp4"] and "readable" in reasons["garbage.mp4"]
    assert "transcript" in reasons["badjson.mp4"]
    assert len(dataset.caught) == 1 and "6 of 10 clips" in str(dataset.caught[0].message)


@pytest.mark.filterwarnings("ignore:.* clips under")
def test_split_is_by_clip_deterministic_and_disjoint(folder, dataset):
    # the hash is pinned: the same clips are held out on every machine, in every version
    assert [k for k in range(40) if clip_split(f"clip{k:03d}.mp4") == "heldout"] == [8, 11, 15, 23]
    assert clip_split("speaker/clip008.mp4") == "train"  # the relative path counts, not the name
    assert clip_split(Path("clip008.mp4")) == "heldout"
    share = np.mean([clip_split(f"speaker{k}/take{k % 7}.mp4") == "heldout" for k in range(2000)])
    assert 0.08 < share < 0.12
    train, held = RealClips(folder, split="train"), RealClips(folder, split="heldout")
    train_names, held_names = {c.relpath for c in train.clips}, {c.relpath for c in held.clips}
    assert held_names == {heldout_name()} and train_names == {"a.mp4", "sub/b.mp4", "c.mp4"}
    assert all(c.split == "train" for c in train.clips) and held[0].split == "heldout"
    # identities are the clip's place among all clips, whichever split is asked for
    assert {c.relpath: c.number for c in train.clips + held.clips} == {c.relpath: c.number for c in dataset.clips}
    assert len({c.number for c in dataset.clips}) == len(dataset.clips)
    assert set(SPLITS) == {"train", "heldout"}


def test_reference_frame_and_whole_clip_sample(folder, dataset):
    ref = dataset.reference_frame(0)
    assert ref.shape == (64, 64, 3) and ref.dtype == np.uint8
    s = real_sample(folder / "c.mp4", size=32)
    assert s.frames.shape == (60, 32, 32, 3) and s.audio.shape == (60 * SAMPLES_PER_FRAME,)
    assert s.phones == [] and s.text == ""


def test_bad_arguments_are_refused(folder, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        RealClips(tmp_path / "missing")
    with pytest.raises(ValueError, match="split"):
        RealClips(folder, split="test")
    with pytest.raises(ValueError, match="size"):
        RealClips(folder, size=63)
    assert len(RealClips(tmp_path)) == 0  # an empty folder is an empty dataset


def test_the_training_command_trains_both_stages_on_a_clip_folder(folder, tmp_path):
    from avgen.checkpoint import load_checkpoint
    from avgen.train import load_config, train_codecs, train_model

    out = tmp_path / "run"
    common = ["data=" + str(folder), "corpus_clips=4", "clip_seconds=1.0", "batch_size=2", "steps=1", f"out={out}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bad clips of the folder are skipped with a warning
        codecs = train_codecs(load_config(None, common, "codecs"))
        model = train_model(load_config(None, common + [f"codecs={codecs}"], "model"))
    windows = RealClips(folder, split="train", seconds=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(windows) > 4
    cache = torch.load(next(out.glob("latents-*-4-1s-*.pt")))  # named after the folder
    assert cache["video"].shape[:2] == (4, 25)
    phones = cache["phones"]
    assert (phones != PHONE_IDS[NULL_PHONE]).any()  # transcripts became phones
    assert load_checkpoint(model).cfg.height == 64


def test_the_training_command_says_when_a_folder_has_no_usable_clips(tmp_path):
    from avgen.train import load_config, train_codecs

    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "garbage.mp4").write_bytes(b"not a video")
    cfg = load_config(None, [f"data={tmp_path / 'clips'}", f"out={tmp_path / 'run'}", "steps=1"], "codecs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no training windows"):
            train_codecs(cfg)
