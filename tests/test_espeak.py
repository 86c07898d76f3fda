"""espeak-ng as a second voice family with exact phone timing (avgen.data.espeak), and corpus samples
spoken by it: the timeline it reports is where the sounds are."""

import numpy as np
import pytest

from avgen.data import espeak
from avgen.data.corpus import VOWELS, make_sample
from avgen.phones import ARPABET, SILENCE, PhoneSpan
from avgen.timeline import SAMPLE_RATE

STOPS = {"P", "B", "T", "D", "K", "G"}
needs_espeak = pytest.mark.skipif(not espeak.available(), reason="espeak-ng is not installed")


def contiguous(spans: list[PhoneSpan], seconds: float) -> bool:
    return (
        spans[0].start == 0.0
        and abs(spans[-1].end - seconds) < 1e-9
        and all(a.end == b.start for a, b in zip(spans, spans[1:]))
        and all(s.end > s.start for s in spans)
    )


def vowel_over_stop_loudness(audio: np.ndarray, spans: list[PhoneSpan], shift: float = 0.0) -> float:
    def rms(s: PhoneSpan) -> float:
        a = audio[int((s.start + shift) * SAMPLE_RATE) : int((s.end + shift) * SAMPLE_RATE)]
        return float(np.sqrt(np.mean(a**2))) if a.size else 0.0

    vowels = np.mean([rms(s) for s in spans if s.phone in VOWELS])
    return float(vowels / np.mean([rms(s) for s in spans if s.phone in STOPS]))


def test_every_mnemonic_maps_to_avgen_phones_and_unknown_ones_fall_back():
    for mnemonic, phones in espeak.ARPABET_OF.items():
        assert phones and all(p in ARPABET or p == SILENCE for p in phones), mnemonic
    assert espeak.phones_of(";") is None
    assert espeak.phones_of("t#") == ["D"] and espeak.phones_of("k2") == ["K"] and espeak.phones_of("Q9") == ["AH"]


def test_the_timeline_runs_from_onset_to_onset_and_splits_mnemonics_of_several_phones():
    rate = 1000
    events = [(100, "h"), (200, "@L"), (400, ";"), (400, "_:"), (500, "_"), (600, "b")]
    spans = espeak.timeline(events, 800, rate)
    assert contiguous(spans, 0.8)
    assert [(s.phone, round(s.start, 3), round(s.end, 3)) for s in spans] == [
        (SILENCE, 0.0, 0.1), ("HH", 0.1, 0.2), ("AH", 0.2, 0.3), ("L", 0.3, 0.4), (SILENCE, 0.4, 0.6), ("B", 0.6, 0.8)
    ]  # fmt: skip
    assert espeak.timeline([], 500, rate) == [PhoneSpan(SILENCE, 0.0, 0.5)]


def test_fitting_cuts_or_pads_speech_and_timeline_to_the_clip():
    audio = np.ones(SAMPLE_RATE, np.float32)
    spans = [PhoneSpan("AA", 0.0, 0.6), PhoneSpan("M", 0.6, 1.0)]
    cut, cut_spans = espeak.fitted(audio, spans, SAMPLE_RATE // 2)
    assert len(cut) == SAMPLE_RATE // 2 and cut_spans == [PhoneSpan("AA", 0.0, 0.5)]
    padded, padded_spans = espeak.fitted(audio, spans, 2 * SAMPLE_RATE)
    assert len(padded) == 2 * SAMPLE_RATE and padded[SAMPLE_RATE:].max() == 0
    assert padded_spans[-1] == PhoneSpan(SILENCE, 1.0, 2.0) and contiguous(padded_spans, 2.0)


@needs_espeak
@pytest.mark.parametrize("voice", [espeak.EVALUATION_VOICES[2], espeak.EspeakVoice("en-gb-scotland+m4", 190, 30)])
def test_the_reported_timeline_is_where_the_sounds_are(voice):
    """Vowels are loud and stop closures quiet exactly where espeak-ng says they are: the contrast
    measured on its timeline (~4.5x) falls below 2.1x when the timeline is moved by 60 ms either way."""
    text = "Nobody expected the river to rise so quickly after the storm, but we stayed."
    audio, spans = espeak.speak(text, voice)
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0 and len(audio) > 2 * SAMPLE_RATE
    assert contiguous(spans, len(audio) / SAMPLE_RATE)
    assert {"N", "OW", "B", "D", "IY", "R", "S", "K"} <= {s.phone for s in spans}
    exact = vowel_over_stop_loudness(audio, spans)
    assert exact > 3.0
    for shift in (-0.06, 0.06):
        assert vowel_over_stop_loudness(audio, spans, shift) < exact / 1.5


@needs_espeak
def test_no_training_voice_is_an_evaluation_voice_and_all_of_them_speak():
    evaluation = {v.name.split("+")[0] for v in espeak.EVALUATION_VOICES}
    assert not evaluation & set(espeak.TRAINING_ACCENTS)
    rng = np.random.default_rng(0)
    for _ in range(12):
        audio, _ = espeak.speak("One more test.", espeak.training_voice(rng))
        assert len(audio) > SAMPLE_RATE // 4
    with pytest.raises(espeak.EspeakError, match="no voice"):
        espeak.speak("hello", espeak.EspeakVoice("xx-nonesuch"))


@needs_espeak
def test_a_corpus_sample_spoken_by_espeak_keeps_its_face_sentence_and_length():
    voice = espeak.EspeakVoice("en-029+klatt", 170, 60)
    own, spoken = make_sample(3, "heldout", seconds=4.0), make_sample(3, "heldout", seconds=4.0, espeak=voice)
    assert (spoken.identity, spoken.text) == (own.identity, own.text)
    assert spoken.frames.shape == own.frames.shape and spoken.audio.shape == own.audio.shape
    assert contiguous(spoken.phones, 4.0) and len(spoken.phone_ids) == len(spoken.frames)
    assert not np.allclose(spoken.audio, own.audio)
    espeak.speak("Something else first, in another voice.", espeak.EspeakVoice("en-gb-scotland+m4"))
    again = make_sample(3, "heldout", seconds=4.0, espeak=voice)  # the same up to espeak-ng's few milliseconds
    assert [s.phone for s in again.phones] == [s.phone for s in spoken.phones]
    assert max(abs(a.start - b.start) for a, b in zip(again.phones, spoken.phones)) < 0.02
    assert np.abs(again.frames.astype(int) - spoken.frames).mean() < 1.0
