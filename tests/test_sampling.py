"""Flow matching: the path, the schedule, Euler and Heun, tokens held clean."""

import pytest
import torch

from avgen.sampling import CleanMask, Latents, denoise, get_schedule, interpolate, time_shift


def test_path_goes_from_data_at_t0_to_noise_at_t1():
    x0, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    t = torch.tensor([[0.0, 0.5, 1.0], [0.25, 0.0, 1.0]])
    xt = interpolate(x0, noise, t)
    assert torch.equal(xt[0, 0], x0[0, 0]) and torch.equal(xt[0, 2], noise[0, 2])
    assert torch.allclose(xt[0, 1], 0.5 * x0[0, 1] + 0.5 * noise[0, 1])
    assert torch.allclose(xt[1, 0], 0.75 * x0[1, 0] + 0.25 * noise[1, 0])


def test_schedule_runs_from_noise_to_data_and_shift_spends_longer_at_high_noise():
    plain, shifted = get_schedule(8), get_schedule(8, shift=3.0)
    assert plain[0] == 1.0 and plain[-1] == 0.0 and len(plain) == 9
    assert all(a > b for a, b in zip(shifted, shifted[1:]))
    assert all(s >= p for s, p in zip(shifted, plain))
    assert time_shift(0.5, 1.0) == 0.5


def shapes(batch=1, frames=6):
    return Latents(torch.randn(batch, frames, 4, 8), torch.randn(batch, frames, 5))


def no_clean(x):
    return CleanMask(torch.zeros(x.video.shape[:3], dtype=torch.bool), torch.zeros(x.audio.shape[:2], dtype=torch.bool))


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_samplers_land_on_the_data_under_the_exact_velocity(sampler):
    # For a single data point x0 the exact flow velocity is v(x, t) = (x - x0) / t: straight lines.
    target = shapes()

    def velocity(x, video_t, audio_t, step):
        return Latents((x.video - target.video) / video_t[..., None], (x.audio - target.audio) / audio_t[..., None])

    noise = shapes()
    out = denoise(velocity, noise, shapes(), no_clean(noise), get_schedule(4, shift=2.0), sampler)
    assert torch.allclose(out.video, target.video, atol=1e-5)
    assert torch.allclose(out.audio, target.audio, atol=1e-5)


def test_clean_tokens_are_held_at_their_condition_and_see_t0():
    noise, condition = shapes(), shapes()
    clean = no_clean(noise)
    clean.audio[:] = True  # audio-driven: every audio token given
    clean.video[:, :2] = True  # continuation: the first two frames given
    seen, sizes = [], []

    def velocity(x, video_t, audio_t, step):
        seen.append((x, video_t.clone(), audio_t.clone()))
        sizes.append(step)
        return Latents(torch.ones_like(x.video), torch.ones_like(x.audio))

    steps = []
    out = denoise(velocity, noise, condition, clean, get_schedule(3), "heun", on_step=steps.append)
    assert steps == [1, 2, 3]
    assert torch.equal(out.audio, condition.audio)
    assert torch.equal(out.video[:, :2], condition.video[:, :2])
    assert not torch.equal(out.video[:, 2:], condition.video[:, 2:])
    for x, video_t, audio_t in seen:
        assert torch.equal(x.audio, condition.audio) and torch.equal(x.video[:, :2], condition.video[:, :2])
        assert torch.all(audio_t == 0) and torch.all(video_t[:, :2] == 0) and torch.all(video_t[:, 2:] > 0)
    assert len(seen) == 5  # Heun: 2 evaluations per step, none for the corrector at t=0
    assert sizes == pytest.approx([1 / 3] * 5)  # each evaluation is told the size of its step


def test_unknown_sampler_is_rejected():
    noise = shapes()
    with pytest.raises(ValueError, match="sampler"):
        denoise(lambda *a: noise, noise, noise, no_clean(noise), get_schedule(2), "ddim")
