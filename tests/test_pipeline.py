"""Generation: lengths, determinism, chunked long clips, conditions held clean, bad requests."""

import numpy as np
import pytest
from conftest import SMALL_CONFIG

from avgen.pipeline import MAX_SECONDS, GenerationError, GenerationRequest, Generator, chunk_spans, resolve
from avgen.timeline import SAMPLE_RATE, SAMPLES_PER_FRAME


@pytest.fixture(scope="module")
def generator(small_checkpoint):
    return Generator.load(small_checkpoint)


@pytest.mark.parametrize(
    "frames, chunk, overlap",
    [(10, 25, 5), (25, 25, 5), (26, 25, 5), (30, 25, 5), (31, 25, 5), (100, 25, 5), (61, 20, 0)],
)
def test_chunks_cover_every_frame_once_each_starting_with_the_overlap(frames, chunk, overlap):
    spans = chunk_spans(frames, chunk, overlap)
    emitted = [f for start, end, context in spans for f in range(start + context, end)]
    assert emitted == list(range(frames))
    assert all(end - start == min(chunk, frames) for start, end, _ in spans[:-1])
    assert all(context == overlap for _, _, context in spans[1:])
    assert all(spans[i + 1][0] + spans[i + 1][2] == spans[i][1] for i in range(len(spans) - 1))
    # no chunk is mostly context: a short remainder joins the last chunk, which stays under chunk + overlap
    assert all(end - start - context > context for start, end, context in spans)
    assert spans[-1][1] - spans[-1][0] <= chunk + overlap
    assert len(spans) == (1 if frames <= chunk + overlap else len(spans))


def test_frames_follow_seconds_and_audio_has_640_samples_per_frame(generator):
    result = generator.generate(GenerationRequest(text="Hello there", seconds=1.5, seed=0))
    assert result.frames.shape == (round(1.5 * 25), 64, 64, 3) and result.frames.dtype == np.uint8
    assert result.audio.shape == (len(result.frames) * SAMPLES_PER_FRAME,)
    assert result.metadata["avgen_ai_generated"] == "true"


def test_without_seconds_the_clip_lasts_as_long_as_the_transcript(generator):
    short = generator.generate(GenerationRequest(text="Hi.", seed=0))
    long = generator.generate(GenerationRequest(text="Hello from the Black Forest, how are you today?", seed=0))
    assert len(short.frames) < len(long.frames)
    assert 1.0 < long.seconds < 5.0


def test_same_seed_gives_identical_clips_and_another_seed_differs(generator):
    request = GenerationRequest(text="Hello from the Black Forest", seconds=1.2, seed=7)
    a, b = generator.generate(request), generator.generate(request)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    c = generator.generate(GenerationRequest(text="Hello from the Black Forest", seconds=1.2, seed=8))
    assert not np.array_equal(a.frames, c.frames)


def test_a_long_clip_begins_with_exactly_the_clip_of_its_first_chunk(generator, monkeypatch):
    # Chunks are generated in order and each sees only the past: the first chunk of a 3 s clip
    # is the same computation as a clip one chunk long (without the first chunk's rest frame as the
    # reference, which makes a long clip generate its first chunk again: tests/test_self_reference.py).
    monkeypatch.setattr(generator, "self_reference", False)
    chunk = SMALL_CONFIG.chunk_frames
    one_chunk = generator.generate(GenerationRequest(text="", seconds=chunk / 25, seed=3))
    long = generator.generate(GenerationRequest(text="", seconds=3.0, seed=3))
    assert len(chunk_spans(len(long.frames), chunk, SMALL_CONFIG.overlap_frames)) > 1
    assert np.array_equal(long.frames[:chunk], one_chunk.frames)


def test_the_transcript_and_the_reference_image_change_the_result(generator):
    base = generator.generate(GenerationRequest(text="Hello", seconds=0.8, seed=1))
    other_text = generator.generate(GenerationRequest(text="Goodbye", seconds=0.8, seed=1))
    face = np.full((90, 120, 3), 200, dtype=np.uint8)
    with_face = generator.generate(GenerationRequest(text="Hello", seconds=0.8, seed=1, reference_image=face))
    assert not np.array_equal(base.frames, other_text.frames)
    assert not np.array_equal(base.frames, with_face.frames)


def test_audio_driven_generation_keeps_the_given_audio(generator):
    rng = np.random.default_rng(0)
    speech = (0.1 * rng.standard_normal(30 * SAMPLES_PER_FRAME + 100)).astype(np.float32)
    result = generator.generate(GenerationRequest(audio=speech, seed=0))
    assert len(result.frames) == 30  # round(len / 640)
    assert np.array_equal(result.audio, speech[: 30 * SAMPLES_PER_FRAME])
    assert result.metadata["avgen_audio"] == "given"
    padded = generator.generate(GenerationRequest(audio=speech, seconds=2.0, seed=0))
    assert len(padded.audio) == 50 * SAMPLES_PER_FRAME and not padded.audio[-1000:].any()


def test_progress_reports_rise_to_done(generator):
    seen = []
    generator.generate(GenerationRequest(text="Hello", seconds=2.0, seed=0), lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and seen[-1][1] == "done"
    assert any("chunk 2/" in m for _, m in seen)


@pytest.mark.parametrize(
    "request_, message",
    [
        (GenerationRequest(text="hi", seconds=0), "positive"),
        (GenerationRequest(text="hi", seconds=-3), "positive"),
        (GenerationRequest(text="hi", seconds=float("nan")), "positive"),
        (GenerationRequest(text="hi", seconds=MAX_SECONDS + 1), "at most"),
        (GenerationRequest(text="hi", seconds=0.01), "one frame"),
        (GenerationRequest(text="hi", steps=0), "steps"),
        (GenerationRequest(text="hi", guidance=-1), "cfg"),
        (GenerationRequest(text="hi", sampler="ddim"), "sampler"),
        (GenerationRequest(text=""), "nothing to generate"),
        (GenerationRequest(text="x" * 30_000), "characters"),
        (GenerationRequest(audio=np.zeros(0, dtype=np.float32), seconds=1), "empty"),
    ],
)
def test_bad_requests_raise_generation_errors(request_, message):
    with pytest.raises(GenerationError, match=message):
        resolve(request_, SMALL_CONFIG)


GOOD_FACE = np.full((64, 48, 3), 128, dtype=np.uint8)
GOOD_AUDIO = np.zeros(16_000, dtype=np.float32)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("reference_image", GOOD_FACE.astype(np.float32) / 255, "uint8"),
        ("reference_image", GOOD_FACE[..., 0], r"RGB, shape \(height, width, 3\), not \(64, 48\)"),
        ("reference_image", np.dstack([GOOD_FACE, GOOD_FACE[..., :1]]), r"RGB.*not \(64, 48, 4\)"),
        ("reference_image", GOOD_FACE[:8, :8], "8x8 pixels; give one at least 16"),
        ("audio", np.stack([GOOD_AUDIO, GOOD_AUDIO]), r"mono, shape \(samples,\), not \(2, 16000\)"),
        ("audio", (GOOD_AUDIO * 32767).astype(np.int16), "float samples in .* not int16"),
        ("audio", np.where(np.arange(16_000) == 5, np.nan, GOOD_AUDIO).astype(np.float32), "1 NaN or infinite"),
        ("audio", np.full(16_000, np.inf, dtype=np.float32), "16000 NaN or infinite"),
        ("audio", np.full(16_000, 3000.0, dtype=np.float32), r"in \[-1, 1\], not up to 3000"),
        ("audio", np.zeros(0, dtype=np.float32), "empty"),
    ],
)
def test_check_refuses_bad_reference_images_and_audio_before_any_work(generator, field, value, message):
    request = GenerationRequest(text="Hello", seconds=1.0, **{field: value})
    with pytest.raises(GenerationError, match=message):
        generator.check(request)


def test_check_accepts_good_reference_images_and_audio(generator):
    generator.check(GenerationRequest(text="Hello", reference_image=GOOD_FACE, audio=GOOD_AUDIO + 0.5))


def test_without_weights_the_default_model_is_untrained_and_says_so(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("AVGEN_WEIGHTS_DIR", str(tmp_path))  # a folder without weights
    generator = Generator.load(checkpoint=None, seed=5, warn=print)
    assert not generator.trained and "untrained" in generator.checkpoint_id
    assert "UNTRAINED" in capsys.readouterr().out


def test_phones_count_as_heard_only_when_recognised_in_given_audio_not_aligned_to_its_transcript():
    from avgen.data.corpus import make_sample

    s = make_sample(0, "train", seed=0, size=16)
    seconds = len(s.audio) / SAMPLE_RATE
    assert not resolve(GenerationRequest(text=s.text, seconds=seconds), SMALL_CONFIG).phones_heard
    assert not resolve(GenerationRequest(text=s.text, audio=s.audio), SMALL_CONFIG).phones_heard  # aligned
    assert resolve(GenerationRequest(audio=s.audio), SMALL_CONFIG).phones_heard  # recognised from the sound
