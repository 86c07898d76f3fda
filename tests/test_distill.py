"""Distillation: a student that takes the guidance scale and the step size makes a guided step in
one forward; it starts as its teacher, learns the teacher's guided velocity, and the pipeline
serves it with one forward a step (two only for scales it was not trained on)."""

import pytest
import torch
from conftest import SMALL_CONFIG

from avgen.checkpoint import AVGenModel, save_checkpoint
from avgen.model import DISTILLED_GUIDANCE, AVTransformer
from avgen.objectives import Batch, distillation_loss, guided_velocity
from avgen.pipeline import GenerationRequest, Generator, trained_step
from avgen.sampling import CleanMask, Latents

FRAMES = 6


def _nonzero(model: torch.nn.Module, seed: int = 0) -> None:
    """Give zero-initialised layers weights, so that every input matters (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _batch(cfg, b: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, FRAMES, cfg.video_tokens_per_frame, cfg.video_token_dim, generator=g)
    audio = torch.randn(b, FRAMES, cfg.audio_latent_channels, generator=g)
    phones = torch.randint(1, 20, (b, FRAMES), generator=g)
    clean = CleanMask(torch.zeros(video.shape[:3], dtype=torch.bool), torch.zeros(audio.shape[:2], dtype=torch.bool))
    clean.audio[0] = True  # an audio-driven row
    return Batch(Latents(video, audio), phones, clean)


def _student_of(teacher: AVTransformer) -> AVTransformer:
    student = AVTransformer(teacher.cfg.replace(distilled=True))
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("guidance_in.", "step_in.")) for k in missing)
    return student


def test_a_fresh_student_is_its_teachers_conditional_branch_whatever_the_scale_and_step():
    torch.manual_seed(0)
    teacher = AVTransformer(SMALL_CONFIG)
    _nonzero(teacher)
    student, batch = _student_of(teacher), _batch(SMALL_CONFIG)
    x, t = batch.latents, torch.full((4, FRAMES, SMALL_CONFIG.video_tokens_per_frame), 0.5)
    with torch.no_grad():
        want = teacher(x.video, x.audio, t, t[..., 0], batch.phones)
        for scale, step in ((1.0, 0.0), (3.5, 0.25)):
            got = student(x.video, x.audio, t, t[..., 0], batch.phones,
                          guidance=torch.tensor([scale]), step=torch.tensor([step]))  # fmt: skip
            assert torch.allclose(got.video, want.video, atol=1e-6) and torch.allclose(got.audio, want.audio, atol=1e-6)
        with pytest.raises(ValueError, match="guidance scale and the step size"):
            student(x.video, x.audio, t, t[..., 0], batch.phones)


def test_distillation_learns_the_teachers_guided_velocity_and_makes_the_scale_matter():
    torch.manual_seed(0)
    teacher = AVTransformer(SMALL_CONFIG).eval()
    _nonzero(teacher)
    student = _student_of(teacher)
    batch = _batch(SMALL_CONFIG, b=8)
    optimizer = torch.optim.Adam(student.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        loss, logs = distillation_loss(student, teacher, batch, torch.Generator().manual_seed(step % 4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(logs["loss_distill"].item())
        assert torch.isfinite(logs["loss_consistency"])
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4]), losses
    # the guided target at two scales differs, and so now does the student's answer
    x, t = batch.latents, torch.full((8, FRAMES, SMALL_CONFIG.video_tokens_per_frame), 0.7)
    with torch.no_grad():
        low, high = (student(x.video, x.audio, t, t[..., 0], batch.phones, guidance=torch.tensor([s]),
                             step=torch.tensor([0.0])) for s in DISTILLED_GUIDANCE)  # fmt: skip
        target_gap = (guided_velocity(teacher, x, t, t[..., 0], batch, torch.full((8,), DISTILLED_GUIDANCE[1]))
                      .video - guided_velocity(teacher, x, t, t[..., 0], batch, torch.full((8,), 1.0)).video)  # fmt: skip
    gap = high.video - low.video
    assert torch.nn.functional.cosine_similarity(gap.flatten(), target_gap.flatten(), dim=0) > 0.5


@pytest.fixture(scope="module")
def distilled_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = AVGenModel(SMALL_CONFIG.replace(distilled=True, steps=4))
    _nonzero(model.transformer)
    path = tmp_path_factory.mktemp("weights") / "distilled.safetensors"
    save_checkpoint(model, path)
    return path


class ForwardSpy:
    def __init__(self, generator, monkeypatch):
        self.calls = []
        transformer = generator.model.transformer
        forward = transformer.forward

        def spy(*args, **kwargs):
            self.calls.append(
                {"batch": args[0].shape[0], "guidance": kwargs.get("guidance"), "step": kwargs.get("step")}
            )
            return forward(*args, **kwargs)

        monkeypatch.setattr(transformer, "forward", spy)


def test_a_distilled_model_takes_one_forward_a_step_told_the_scale_and_the_step(distilled_checkpoint, monkeypatch):
    generator = Generator.load(distilled_checkpoint)
    spy = ForwardSpy(generator, monkeypatch)
    result = generator.generate(GenerationRequest(text="hello there", seconds=0.8, guidance=3.0))
    assert result.metadata["avgen_steps"] == "4" and result.metadata["avgen_guidance"] == "distilled"
    assert len(spy.calls) == 4 and all(c["batch"] == 1 for c in spy.calls)
    assert all(float(c["guidance"]) == 3.0 for c in spy.calls)
    assert [float(c["step"]) for c in spy.calls] == pytest.approx([0.25] * 4)


def test_a_scale_outside_the_trained_range_falls_back_to_two_forwards(distilled_checkpoint, monkeypatch):
    generator = Generator.load(distilled_checkpoint)
    spy = ForwardSpy(generator, monkeypatch)
    result = generator.generate(
        GenerationRequest(text="hello there", seconds=0.8, guidance=DISTILLED_GUIDANCE[1] + 2, steps=2)
    )
    assert result.metadata["avgen_guidance"] == "classifier-free"
    assert len(spy.calls) == 2 and all(c["batch"] == 2 for c in spy.calls)
    assert all(float(c["guidance"]) == 1.0 for c in spy.calls)  # each branch unguided, mixed outside


def test_off_grid_steps_and_heun_are_told_step_zero_the_velocity_learned_at_every_time(
    distilled_checkpoint, monkeypatch
):
    assert trained_step(0.25) == 0.25 and trained_step(1.0) == 1.0 and trained_step(0.1) == 0.0
    generator = Generator.load(distilled_checkpoint)
    spy = ForwardSpy(generator, monkeypatch)
    generator.generate(GenerationRequest(text="hello there", seconds=0.8, steps=3))  # 1/3: not a learned jump
    generator.generate(GenerationRequest(text="hello there", seconds=0.8, steps=2, sampler="heun"))
    assert len(spy.calls) == 3 + 3 and all(float(c["step"]) == 0.0 for c in spy.calls)
