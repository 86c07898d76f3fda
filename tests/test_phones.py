import pytest
import torch

from avgen.phones import (
    NULL_PHONE,
    PHONE_IDS,
    PHONES,
    SILENCE,
    PhoneSpan,
    frame_phone_ids,
    phone_timeline,
    text_to_phones,
    timeline_seconds,
    words,
)
from avgen.timeline import FPS

WEIRD_TEXTS = [
    "😀🎉",
    "日本語",
    "\x00",
    "!!!",
    "",
    "   \n\t",
    "—",
    "\u200b\ufeff",
    "ｆｕｌｌ１２",
    "Ωμέγα Straße café",
    "a" * 5000,
    "Hello, world! " * 360,
]


def contains(seq, sub):
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_phone_inventory_has_null_silence_and_39_arpabet_phones():
    assert PHONES[0] == NULL_PHONE and PHONES[1] == SILENCE
    assert len(PHONES) == 41 and len(set(PHONES)) == 41
    assert all(PHONE_IDS[p] == i for i, p in enumerate(PHONES))


def test_known_word_gives_cmudict_phones_without_stress():
    assert text_to_phones("hello") == ["HH", "AH", "L", "OW"]
    assert text_to_phones("Hello") == text_to_phones("HELLO")


def test_numbers_expand_to_words():
    assert words("I have 42 cats") == ["i", "have", "forty", "two", "cats"]
    assert contains(text_to_phones("I have 42 cats"), text_to_phones("forty two"))
    assert words("3.5") == ["three", "point", "five"]
    assert words("1999") == ["nineteen", "ninety", "nine"]
    assert words("1,000,000") == ["one", "million"]
    assert words("the 2nd and 21st") == ["the", "second", "and", "twenty", "first"]
    assert words("A & B 50%") == ["a", "and", "b", "fifty", "percent"]


def test_apostrophes_inside_words_are_kept():
    assert words("Don't 'quote' me") == ["don't", "quote", "me"]
    assert text_to_phones("don't") == ["D", "OW", "N", "T"]


def test_punctuation_yields_silence_between_words_only():
    assert words("Hello, world. Bye!") == ["hello", ",", "world", ".", "bye"]
    phones = text_to_phones("Hello, world. Bye!")
    assert phones.count(SILENCE) == 2 and phones[0] != SILENCE and phones[-1] != SILENCE
    assert text_to_phones("Wait -- what?!...").count(SILENCE) == 1


def test_unknown_word_gets_plausible_letter_to_sound_phones():
    phones = text_to_phones("Zorblax")
    assert phones[:2] == ["Z", "AO"] and phones[-2:] == ["K", "S"]
    assert text_to_phones("Xqzt")  # no vowels: spelled as letter names


@pytest.mark.parametrize("text", WEIRD_TEXTS)
def test_weird_inputs_never_raise_and_give_valid_phones(text):
    phones = text_to_phones(text)
    assert isinstance(phones, list) and all(p in PHONE_IDS and p != NULL_PHONE for p in phones)
    timeline = phone_timeline(text, 4.0)
    assert timeline_seconds(timeline) == 4.0


@pytest.mark.parametrize("text", ["", "  ", "!!!", "日本語", "\x00"])
def test_text_with_nothing_to_say_gives_no_phones_and_a_silent_timeline(text):
    assert text_to_phones(text) == []
    assert phone_timeline(text) == [PhoneSpan(SILENCE, 0.0, 1.0)]
    assert phone_timeline(text, 2.5) == [PhoneSpan(SILENCE, 0.0, 2.5)]


def assert_contiguous_from_zero(timeline):
    assert timeline[0].start == 0.0
    assert all(a.end == b.start for a, b in zip(timeline, timeline[1:]))
    assert all(s.end > s.start for s in timeline)


def test_natural_timeline_is_contiguous_with_plausible_total_and_edge_silence():
    text = "Hello from the Black Forest"
    timeline = phone_timeline(text)
    assert_contiguous_from_zero(timeline)
    assert 1.2 <= timeline_seconds(timeline) <= 3.5
    assert [s.phone for s in timeline] == [SILENCE, *text_to_phones(text), SILENCE]
    speech = (
        timeline_seconds(timeline) - (timeline[0].end - timeline[0].start) - (timeline[-1].end - timeline[-1].start)
    )
    assert 10 <= (len(timeline) - 2) / speech <= 16  # phones per second


def test_sentence_pause_is_longer_than_comma_pause():
    timeline = phone_timeline("One, two. Three")
    pauses = [s.end - s.start for s in timeline[1:-1] if s.phone == SILENCE]
    assert len(pauses) == 2 and pauses[1] > pauses[0]


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.0, 5.0, 30.0])
def test_fitted_timeline_ends_exactly_at_requested_seconds_and_keeps_phone_order(seconds):
    text = "Hello, from the Black Forest!"
    natural = phone_timeline(text)
    fitted = phone_timeline(text, seconds)
    assert abs(timeline_seconds(fitted) - seconds) < 1e-9
    assert_contiguous_from_zero(fitted)
    assert [s.phone for s in fitted] == [s.phone for s in natural]


def test_frame_phone_ids_maps_frame_centers_and_pads_with_silence():
    # frame j center = (j + 0.5) * 40 ms: 20, 60, 100, 140, 180, 220 ms
    timeline = [PhoneSpan(SILENCE, 0.0, 0.05), PhoneSpan("HH", 0.05, 0.1), PhoneSpan("AY", 0.1, 0.19)]
    ids = frame_phone_ids(timeline, 6)
    assert ids.shape == (6,) and ids.dtype == torch.long
    s, hh, ay = PHONE_IDS[SILENCE], PHONE_IDS["HH"], PHONE_IDS["AY"]
    assert ids.tolist() == [s, hh, ay, ay, ay, s]  # 100 ms is HH's end, so AY; 220 ms is past the end
    assert frame_phone_ids(timeline, 0).shape == (0,)


def test_frame_phone_ids_of_a_real_timeline_are_valid_and_cover_the_speech():
    timeline = phone_timeline("Hello from the Black Forest", 3.0)
    ids = frame_phone_ids(timeline, 3 * FPS + 10)
    assert ids.shape == (3 * FPS + 10,) and ids.dtype == torch.long
    assert int(ids.max()) < len(PHONES) and int(ids.min()) >= 1
    assert ids[-10:].eq(PHONE_IDS[SILENCE]).all()
    assert {PHONE_IDS[p] for p in ("HH", "B", "F")} <= set(ids.tolist())


def test_everything_is_deterministic():
    text = "Zorblax met 42 friends in 1999, then left."
    assert phone_timeline(text, 3.3) == phone_timeline(text, 3.3)
    assert torch.equal(frame_phone_ids(phone_timeline(text), 80), frame_phone_ids(phone_timeline(text), 80))
