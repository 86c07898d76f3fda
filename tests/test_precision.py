"""bf16 autocast at generation where the hardware has it; fp32 stays the ODE state and the fallback."""

import numpy as np
import pytest
import torch

from avgen.model import bf16_native
from avgen.pipeline import GenerationRequest, Generator


def test_the_precision_follows_the_hardware_and_is_recorded(small_checkpoint):
    generator = Generator.load(small_checkpoint)
    assert generator.precision == ("bf16" if bf16_native(torch.device("cpu")) else "fp32")
    assert not bf16_native(torch.device("meta"))  # no native bf16 known there: fp32
    result = generator.generate(GenerationRequest(text="hi", seconds=0.4))
    assert result.metadata["avgen_precision"] == generator.precision


@pytest.mark.skipif(not bf16_native(torch.device("cpu")), reason="this CPU has no native bf16 (avx512_bf16/AMX)")
def test_bf16_frames_stay_close_to_fp32_and_repeat_exactly(small_checkpoint):
    generator = Generator.load(small_checkpoint)
    request = GenerationRequest(text="hello there", seconds=1.2, seed=5)
    clips = {}
    for precision in ("fp32", "bf16", "bf16"):
        generator.precision = precision
        clips.setdefault(precision, []).append(generator.generate(request))
    fp32, (bf16, again) = clips["fp32"][0], clips["bf16"]
    assert (bf16.frames == again.frames).all() and (bf16.audio == again.audio).all()  # deterministic
    diff = np.abs(fp32.frames.astype(float) - bf16.frames.astype(float))
    assert 0 < diff.mean() < 8, diff.mean()  # bf16 did run, and lands near fp32
