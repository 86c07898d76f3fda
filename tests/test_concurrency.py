"""One loaded Generator serving several threads at once, as the service's workers do."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from avgen.pipeline import GenerationRequest, Generator


@pytest.fixture(scope="module")
def generator(small_checkpoint):
    return Generator.load(small_checkpoint)


def test_four_threads_get_byte_identical_clips_to_one_at_a_time(generator):
    # Lengths from 0.2 s to 2.5 s (1 to 3 chunks of the small model, many chunk shapes, so the
    # layout cache fills and is cleared while other threads read it), half with a reference face.
    face = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    requests = [GenerationRequest(text="Hello from the Black Forest", seconds=0.2 + 0.12 * i, seed=i,
                                  reference_image=face if i % 2 else None) for i in range(20)]  # fmt: skip
    alone = [generator.generate(r) for r in requests]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(generator.generate, requests))
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert a.frames.tobytes() == b.frames.tobytes(), f"request {i}: frames differ"
        assert a.audio.tobytes() == b.audio.tobytes(), f"request {i}: audio differs"
