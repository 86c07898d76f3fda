"""One loaded Generator serving several threads at once, as the service's workers do."""

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from avgen.pipeline import GenerationRequest, Generator


@pytest.fixture(scope="module")
def generator(small_checkpoint):
    return Generator.load(small_checkpoint)


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    # Each Python thread computes on one core, as the service's worker threads will; OpenMP
    # workers waiting for busy cores made the one-at-a-time runs crawl on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_four_threads_get_byte_identical_clips_to_one_at_a_time(generator):
    # Lengths from 0.12 s to 1.26 s (1 or 2 chunks of the small model, many chunk shapes, so the
    # layout cache fills and is cleared while other threads read it), half with a reference face.
    face = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    requests = [GenerationRequest(text="Hello from the Black Forest", seconds=0.12 + 0.06 * i, seed=i,
                                  reference_image=face if i % 2 else None) for i in range(20)]  # fmt: skip
    alone = [generator.generate(r) for r in requests]
    together = in_four_threads([lambda r=r: generator.generate(r) for r in requests])
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert a.frames.tobytes() == b.frames.tobytes(), f"request {i}: frames differ"
        assert a.audio.tobytes() == b.audio.tobytes(), f"request {i}: audio differs"


def in_four_threads(calls: list, switch_interval: float = 1e-6) -> list:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval)  # threads switch as often as they can: races show, not hide
    try:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda call: call(), calls))
    finally:
        sys.setswitchinterval(previous)


def test_the_vocoder_gives_each_thread_its_own_seeds_phases(generator):
    codec = generator.model.audio_codec
    latents = torch.randn(1, 3, generator.cfg.audio_latent_channels, generator=torch.Generator().manual_seed(0))
    calls = [lambda seed=seed: codec.decode(latents, seed=seed) for seed in range(200)]
    alone = [call() for call in calls]
    together = in_four_threads(calls)
    differ = [seed for seed, (a, b) in enumerate(zip(alone, together, strict=True)) if not torch.equal(a, b)]
    assert not differ, f"{len(differ)} of {len(calls)} vocodings differ in threads"


class YieldingDict(dict):
    """A dict that lets other threads run before each lookup: a check-then-read race shows at once."""

    def __contains__(self, key):
        time.sleep(0)
        return super().__contains__(key)

    def __getitem__(self, key):
        time.sleep(0)
        return super().__getitem__(key)

    def get(self, key, default=None):
        time.sleep(0)
        return super().get(key, default)


def test_the_layout_cache_serves_threads_while_it_is_cleared(small_checkpoint):
    transformer = Generator.load(small_checkpoint).model.transformer  # its own model: its cache is replaced
    transformer._layout_cache = YieldingDict()
    shapes = [(frames, refs) for frames in range(1, 7) for refs in (0, 16)]  # more than the cache holds
    calls = [lambda shape=shape: tuple(transformer.rope_and_mask(*shape, "cpu")[0].shape) for shape in shapes * 100]
    assert in_four_threads(calls) == [call() for call in calls]
