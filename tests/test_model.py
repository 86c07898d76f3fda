"""The unified transformer: shapes, the shared timeline, the sliding window, the reference tokens."""

import pytest
import torch

from avgen.config import PRESETS, Config, preset
from avgen.model import AVTransformer, patchify, unpatchify

SMALL = Config(hidden=64, depth=2, heads=2, window_seconds=0.08)  # window: +-2 frames


def inputs(cfg: Config, frames: int, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    nv = cfg.video_tokens_per_frame
    return dict(
        video=torch.randn(batch, frames, nv, cfg.video_token_dim, generator=g),
        audio=torch.randn(batch, frames, cfg.audio_latent_channels, generator=g),
        video_t=torch.rand(batch, frames, nv, generator=g),
        audio_t=torch.rand(batch, frames, generator=g),
        phones=torch.randint(0, 40, (batch, frames), generator=g),
    )


def randomised_model(cfg: Config) -> AVTransformer:
    torch.manual_seed(0)
    model = AVTransformer(cfg).eval()
    with torch.no_grad():  # zero-initialised output/modulation layers would hide everything
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return model


def test_presets_are_valid_and_tiny_is_the_cpu_default():
    assert preset("tiny") == Config()
    assert (Config().height, Config().width, Config().latent_height) == (64, 64, 8)
    assert Config().video_tokens_per_frame == 16
    assert PRESETS["base"].height == 256 and PRESETS["base"].hidden > Config().hidden
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(height=60), "multiples of 16"),
        (dict(hidden=100, heads=3), "divisible"),
        (dict(overlap_seconds=5.0), "overlap"),
        (dict(sampler="ddim"), "sampler"),
    ],
)
def test_invalid_configs_are_rejected_at_construction(change, message):
    with pytest.raises(ValueError, match=message):
        Config(**change)


def test_config_round_trips_through_json():
    cfg = PRESETS["base"]
    assert Config.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        Config.from_json('{"no_such_field": 1}')


def test_patchify_inverts_unpatchify():
    x = torch.randn(2, 5, 8, 8, 8)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 5, 16, 32)
    assert torch.equal(unpatchify(tokens, 2, 8, 8), x)


def test_output_shapes_match_inputs_with_and_without_reference():
    model = randomised_model(SMALL)
    x = inputs(SMALL, frames=7, batch=2)
    with torch.no_grad():
        v = model(**x)
        assert v.video.shape == x["video"].shape and v.audio.shape == x["audio"].shape
        ref = torch.randn(2, SMALL.video_tokens_per_frame, SMALL.video_token_dim)
        v_ref = model(**x, reference=ref, features_at=(0, 1))
    assert v_ref.video.shape == x["video"].shape
    assert set(v_ref.features) == {0, 1}
    assert v_ref.features[0].shape == (2, 16 + 7 * 17, SMALL.hidden)


def test_audio_latent_and_video_frame_share_a_time_position():
    model = AVTransformer(SMALL)
    positions, mask = model.token_layout(frames=3, reference_tokens=0, device="cpu")
    per_frame = SMALL.video_tokens_per_frame + 1
    times = positions[:, 0].reshape(3, per_frame)
    assert torch.all(times == times[:, :1])  # every token of a frame, audio included, shares its time
    assert torch.allclose(times[:, 0], torch.tensor([0.0, 1.0, 2.0]))  # 40 ms apart = 1 rotary unit
    assert torch.equal(mask.frame_index.reshape(3, per_frame)[:, -1], torch.arange(3))


def test_tokens_beyond_the_window_do_not_influence_each_other():
    # Two blocks with a +-2 frame window: information travels at most 4 frames.
    model = randomised_model(SMALL)
    x = inputs(SMALL, frames=12)
    changed = {k: v.clone() for k, v in x.items()}
    changed["video"][:, 0] += 1.0
    changed["audio"][:, 0] += 1.0
    with torch.no_grad():
        a, b = model(**x), model(**changed)
    near = (a.video[:, :5] - b.video[:, :5]).abs().amax()
    far = (a.video[:, 5:] - b.video[:, 5:]).abs().amax()
    assert near > 1e-4
    assert far == 0
    assert torch.equal(a.audio[:, 5:], b.audio[:, 5:])


def test_reference_tokens_reach_every_frame():
    model = randomised_model(SMALL)
    x = inputs(SMALL, frames=12)
    ref = torch.randn(1, SMALL.video_tokens_per_frame, SMALL.video_token_dim)
    with torch.no_grad():
        a, b = model(**x, reference=ref), model(**x, reference=ref + 1.0)
    per_frame_change = (a.video - b.video).abs().amax(dim=(0, 2, 3))
    assert torch.all(per_frame_change > 1e-5)


def test_chunked_attention_backend_equals_dense_in_the_full_model():
    model = randomised_model(Config(hidden=64, depth=2, heads=2, window_seconds=0.2))
    x = inputs(model.cfg, frames=40)
    ref = torch.randn(1, 16, model.cfg.video_token_dim)
    with torch.no_grad():
        dense = model(**x, reference=ref, attention_backend="dense")
        chunked = model(**x, reference=ref, attention_backend="chunked")
    assert (dense.video - chunked.video).abs().max() < 1e-5
    assert (dense.audio - chunked.audio).abs().max() < 1e-5


def test_per_token_timesteps_condition_each_token():
    model = randomised_model(SMALL)
    x = inputs(SMALL, frames=4)
    later = {**x, "audio_t": x["audio_t"].clone()}
    later["audio_t"][:, 2] = 0.0  # one audio token declared clean
    with torch.no_grad():
        a, b = model(**x), model(**later)
    assert (a.audio[:, 2] - b.audio[:, 2]).abs().max() > 1e-4


def test_rotary_scores_depend_only_on_the_time_difference():
    from avgen.layers import apply_rope, rope_frequencies

    q, k = torch.randn(1, 1, 1, 64), torch.randn(1, 1, 1, 64)

    def score(tq, tk):
        phases = rope_frequencies(torch.tensor([[tq, 0.0, 0.0], [tk, 0.0, 0.0]]), 64, 10_000.0)
        return (apply_rope(q, phases[:1]) * apply_rope(k, phases[1:])).sum()

    assert torch.allclose(score(3.0, 1.0), score(12.0, 10.0), atol=1e-4)
    assert not torch.allclose(score(3.0, 1.0), score(3.0, 2.0), atol=1e-3)
    assert torch.allclose(score(0.0, 0.0), (q * k).sum(), atol=1e-5)  # no rotation at position 0


def test_each_patch_carries_a_learned_absolute_position():
    # Rotary positions are relative; a small patch grid needs an absolute code per patch, or
    # every patch of an early model draws the same thing. Patch 3's code must reach the output.
    model = randomised_model(SMALL)
    x = inputs(SMALL, frames=2)
    with torch.no_grad():
        before = model(**x).video
        model.patch_position[3] += torch.randn(SMALL.hidden)  # (a constant shift would vanish in LayerNorm)
        after = model(**x).video
    change = (after - before).abs().amax(dim=(0, 1, 3))
    assert change[3] > 1e-3


def test_a_frame_sees_the_reference_the_same_at_any_time_in_any_chunk_length():
    # Identical frames everywhere: away from the chunk's edges (beyond the window) every frame
    # sees the same neighbourhood, so with a time-free reference every frame's output is the
    # same, in a 12-frame chunk and in a 24-frame one. A reference placed in time (e.g. at the
    # chunk's mean time, as training on 2 s windows and generating in 4 s chunks once did)
    # gives frames at different times different offsets to it.
    model = randomised_model(SMALL)
    one = inputs(SMALL, frames=1)
    ref = torch.randn(1, SMALL.video_tokens_per_frame, SMALL.video_token_dim)

    def interior(frames: int) -> torch.Tensor:
        x = {k: v.expand(-1, frames, *v.shape[2:]) if v.dim() > 2 else v.expand(-1, frames) for k, v in one.items()}
        with torch.no_grad():
            out = model(**x, reference=ref).video[0]
        window = SMALL.window_frames
        return out[window + 1 : frames - window - 1]

    short, long = interior(12), interior(24)
    assert (short - short[:1]).abs().max() < 1e-5
    assert (long - short[:1]).abs().max() < 1e-5
