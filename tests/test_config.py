"""Config refuses settings that cannot generate, saying which."""

import pytest

from avgen.config import Config


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"overlap_seconds": 4.0}, "overlap_seconds must be >= 0 and shorter than chunk_seconds"),
        ({"self_reference_over_seconds": -1.0}, "self_reference_over_seconds must be >= 0"),
        ({"sampler": "ddim"}, "sampler must be 'euler' or 'heun'"),
    ],
)
def test_an_impossible_setting_is_refused_with_its_name(changes, message):
    with pytest.raises(ValueError, match=message):
        Config(**changes)


def test_the_shipped_chunking_is_accepted():
    cfg = Config(chunk_seconds=8.0, overlap_seconds=0.8, self_reference_over_seconds=4.8)
    assert (cfg.chunk_frames, cfg.overlap_frames) == (200, 20)
