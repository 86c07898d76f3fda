"""Training: both stages end to end at toy sizes, exact resume, the two objectives, EMA, Self-Flow."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from avgen.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from avgen.config import Config
from avgen.data import espeak
from avgen.model import AVTransformer
from avgen.objectives import EMA, Batch, ProjectionHead, SelfFlowSettings, self_flow_loss
from avgen.sampling import CleanMask, Latents
from avgen.train import (
    CODECS,
    TrainConfig,
    _cache_path,
    _windows_key,
    build_latent_cache,
    check_student,
    check_teacher,
    corpus_sample,
    learning_rate,
    load_config,
    load_heard_phones,
    make_batch,
    train_codecs,
    train_model,
    training_windows,
)

TOY = ["corpus_clips=3", "clip_seconds=0.6", "batch_size=2", "log_every=1", "checkpoint_every=2", "warmup_steps=2"]


@pytest.fixture(scope="module")
def codecs(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    path = train_codecs(load_config(None, TOY + ["steps=3", f"out={out}"], "codecs"))
    return out, path


def test_codec_stage_writes_a_checkpoint_with_latent_statistics_and_a_loss_log(codecs):
    out, path = codecs
    model = load_checkpoint(path)
    assert read_metadata(path)["stage"] == "codecs"
    assert not torch.equal(model.video_codec.latent_std, torch.ones_like(model.video_codec.latent_std))
    rows = [json.loads(line) for line in (out / "codecs.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("loss_video" in r for r in rows)
    assert (out / "codecs.loss.png").stat().st_size > 1000


def _model_state(path):
    return load_checkpoint(path).transformer.state_dict()


@pytest.mark.parametrize("objective", ["selfflow", "flow"])
def test_an_interrupted_run_resumes_to_exactly_the_same_weights(codecs, tmp_path, objective):
    _, codecs_path = codecs
    common = TOY + [f"codecs={codecs_path}", f"objective={objective}"]
    straight = train_model(load_config(None, common + ["steps=4", "keep_every=4", f"out={tmp_path / 'a'}"], "model"))
    train_model(load_config(None, common + ["steps=2", f"out={tmp_path / 'b'}"], "model"))
    resumed = train_model(load_config(None, common + ["steps=4", f"out={tmp_path / 'b'}"], "model"))
    a, b = _model_state(straight), _model_state(resumed)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(line) for line in (tmp_path / "b" / f"model-{objective}.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert ("loss_rep" in rows[-1]) == (objective == "selfflow")
    assert read_metadata(resumed)["objective"] == objective
    kept = sorted(p.name for p in (tmp_path / "a").glob(f"model-{objective}-*.safetensors"))
    assert kept == [f"model-{objective}-4.safetensors"]  # keep_every: a numbered copy, for equal-step comparisons
    assert (tmp_path / "a" / kept[0]).read_bytes() == straight.read_bytes()


def test_fine_tuning_starts_the_transformer_and_its_ema_from_a_generation_checkpoint(codecs, tmp_path):
    _, codecs_path = codecs
    common = TOY + [f"codecs={codecs_path}", "objective=flow", "steps=2"]
    trained = train_model(load_config(None, common + [f"out={tmp_path / 'a'}"], "model"))
    still = train_model(load_config(None, common + ["lr=0", f"init={trained}", f"out={tmp_path / 'b'}"], "model"))
    fresh = train_model(load_config(None, common + ["lr=0", f"out={tmp_path / 'c'}"], "model"))
    start, tuned, scratch = _model_state(trained), _model_state(still), _model_state(fresh)
    assert all(torch.equal(start[key], tuned[key]) for key in start)  # lr 0: the EMA export is the start
    assert not all(torch.equal(start[key], scratch[key]) for key in start)


def test_distilling_a_checkpoint_exports_a_student_that_starts_as_its_teacher(codecs, tmp_path):
    _, codecs_path = codecs
    common = TOY + [f"codecs={codecs_path}", "steps=2", "batch_size=4"]
    teacher = train_model(load_config(None, common + ["objective=flow", f"out={tmp_path / 'a'}"], "model"))
    still = train_model(load_config(None, common + ["objective=distill", "lr=0", f"init={teacher}",
                                                    f"out={tmp_path / 'b'}"], "model"))  # fmt: skip
    moved = train_model(load_config(None, common + ["objective=distill", f"init={teacher}",
                                                    f"out={tmp_path / 'c'}"], "model"))  # fmt: skip
    student = load_checkpoint(still)
    assert student.cfg.distilled and student.cfg.steps == 4 and read_metadata(still)["objective"] == "distill"
    start, tuned = _model_state(teacher), student.transformer.state_dict()
    assert all(torch.equal(start[key], tuned[key]) for key in start)  # lr 0: the teacher, plus
    assert all(not tuned[k].any() for k in tuned if k.startswith(("guidance_in.net.2", "step_in.net.2")))  # zero inputs
    trained = _model_state(moved)
    assert any(trained[k].any() for k in trained if k.startswith(("guidance_in.net.2", "step_in.net.2")))
    rows = [json.loads(line) for line in (tmp_path / "c" / "model-distill.log.jsonl").read_text().splitlines()]
    assert "loss_distill" in rows[-1]
    assert (student.cfg.shift, student.cfg.sampler) == (1.0, "euler")  # the schedule its jumps are learned on
    with pytest.raises(ValueError, match="init="):
        load_config(None, ["objective=distill"], "model")
    with pytest.raises(ValueError, match="at least 4 samples"):
        load_config(None, ["objective=distill", f"init={teacher}", "batch_size=2"], "model")
    with pytest.raises(ValueError, match="already distilled"):
        train_model(
            load_config(None, common + ["objective=distill", f"init={still}", f"out={tmp_path / 'd'}"], "model")
        )


def test_distillation_goes_on_from_a_given_student_whose_phone_prior_stays_as_it_is(codecs, tmp_path):
    _, codecs_path = codecs
    common = TOY + [f"codecs={codecs_path}", "steps=2", "batch_size=4"]
    teacher = train_model(load_config(None, common + ["objective=flow", "phone_prior=true", f"out={tmp_path / 'a'}"],
                                      "model"))  # fmt: skip
    distil = TOY + [f"codecs={teacher}", "steps=2", "batch_size=4", "objective=distill", f"init={teacher}"]
    student = train_model(load_config(None, distil + [f"out={tmp_path / 'b'}"], "model"))
    still = train_model(load_config(None, distil + ["lr=0", f"student={student}", f"out={tmp_path / 'c'}"], "model"))
    moved = train_model(load_config(None, distil + [f"student={student}", f"out={tmp_path / 'd'}"], "model"))
    given, kept, trained = _model_state(student), _model_state(still), _model_state(moved)
    assert all(torch.equal(given[k], kept[k]) for k in given)  # lr 0: the student given, not the teacher's branch
    assert all(torch.equal(given[k], trained[k]) for k in given if k.startswith("phone_prior."))  # kept as it is
    assert not all(torch.equal(given[k], trained[k]) for k in given if not k.startswith("phone_prior."))
    with pytest.raises(ValueError, match="needs objective=distill"):
        TrainConfig(student=str(student))
    with pytest.raises(ValueError, match="not distilled"):
        train_model(load_config(None, distil + [f"student={teacher}", f"out={tmp_path / 'e'}"], "model"))
    teacher_cfg = load_checkpoint(teacher).cfg
    check_student(load_checkpoint(student).cfg.replace(prior_audio=True, chunk_seconds=8.0), teacher_cfg, "s")  # fine
    with pytest.raises(ValueError, match="differs in hidden"):
        check_student(load_checkpoint(student).cfg.replace(hidden=96, heads=3), teacher_cfg, "s")


def test_a_teacher_for_other_codecs_or_another_shape_is_refused():
    codecs = Config(hidden=64, depth=2, heads=2)
    check_teacher(codecs.replace(steps=30, guidance=4.0, shift=3.0, sampler="heun"), codecs, "t.safetensors")  # fine
    with pytest.raises(ValueError, match="differs in hidden, heads"):
        check_teacher(codecs.replace(hidden=96, heads=3), codecs, "t.safetensors")
    with pytest.raises(ValueError, match="differs in video_latent_channels"):
        check_teacher(codecs.replace(video_latent_channels=4), codecs, "t.safetensors")


def test_config_files_and_overrides_are_typed_and_checked(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('[train]\nsteps = 50\nobjective = "flow"\nbf16 = false\n')
    cfg = load_config(str(file), ["lr=0.001", "bf16=true"], "model")
    assert (cfg.steps, cfg.objective, cfg.lr, cfg.bf16) == (50, "flow", 0.001, True)
    with pytest.raises(ValueError, match="known key"):
        load_config(None, ["nonsense=1"], "model")
    with pytest.raises(ValueError, match="objective"):
        load_config(None, ["objective=repa"], "model")
    with pytest.raises(ValueError, match="keep_every takes a int, not 'abc'"):
        load_config(None, ["keep_every=abc"], "model")


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3)
    rates = [learning_rate(cfg, s) for s in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert rates[-1] < rates[50] < rates[10] and rates[-1] >= 1e-4


def test_ema_warm_up_follows_early_steps_and_then_the_set_decay():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.999)
    assert ema.current_decay(0) == pytest.approx(0.1)
    assert ema.current_decay(10**6) == 0.999
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=0)  # decay 0.1: the EMA moves 90% of the way
    assert torch.allclose(ema.module.weight, model.weight - 0.1, atol=1e-6)


def test_self_flow_uses_layers_at_three_and_seven_tenths_of_the_depth():
    assert SelfFlowSettings().layers(10) == (2, 6)
    assert SelfFlowSettings().layers(6) == (1, 3)
    student, teacher = SelfFlowSettings().layers(2)
    assert 0 <= student < teacher <= 1


def _spy_forward(monkeypatch, module, calls):
    """Record what a transformer's forward is given and returns, and call through unchanged."""
    original = module.forward

    def forward(video, audio, video_t, audio_t, *args, features_at=(), **kwargs):
        out = original(video, audio, video_t, audio_t, *args, features_at=features_at, **kwargs)
        calls.append({"video_t": video_t.detach().clone(), "audio_t": audio_t.detach().clone(),
                      "features_at": tuple(features_at), "features": out.features})  # fmt: skip
        return out

    monkeypatch.setattr(module, "forward", forward)


def _self_flow_setup(depth=4):
    torch.manual_seed(0)
    cfg = Config(hidden=64, depth=depth, heads=2)
    model, head = AVTransformer(cfg), ProjectionHead(64)
    teacher = EMA(model, 0.99).module
    x = Latents(torch.randn(2, 3, 16, cfg.video_token_dim), torch.randn(2, 3, cfg.audio_latent_channels))
    clean = CleanMask(torch.zeros(2, 3, 16, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool))
    clean.video[0, 0] = True  # a continuation condition on sample 0's first frame
    clean.audio[0, 0] = True
    return model, head, teacher, Batch(x, torch.randint(0, 40, (2, 3)), clean)


def test_the_self_flow_teacher_sees_every_token_at_min_t_s_from_its_deeper_layer(monkeypatch):
    model, head, teacher, batch = _self_flow_setup()
    student_calls, teacher_calls = [], []
    _spy_forward(monkeypatch, model, student_calls)
    _spy_forward(monkeypatch, teacher, teacher_calls)
    self_flow_loss(model, teacher, head, batch, torch.Generator().manual_seed(1), SelfFlowSettings())
    assert len(student_calls) == len(teacher_calls) == 1
    student, taught = student_calls[0], teacher_calls[0]
    student_layer, teacher_layer = SelfFlowSettings().layers(4)
    assert student_layer != teacher_layer
    assert student["features_at"] == (student_layer,) and taught["features_at"] == (teacher_layer,)
    clean = batch.clean
    for b in range(2):  # the student's tokens are at t or s (dual timesteps); the teacher's all at min(t, s)
        times = torch.cat([student["video_t"][b][~clean.video[b]], student["audio_t"][b][~clean.audio[b]]])
        t_and_s = times.unique()
        assert len(t_and_s) == 2, "the test needs both timesteps in each sample"
        expected = t_and_s.min()
        assert torch.equal(taught["video_t"][b][~clean.video[b]], expected.expand(int((~clean.video[b]).sum())))
        assert torch.equal(taught["audio_t"][b][~clean.audio[b]], expected.expand(int((~clean.audio[b]).sum())))
    assert not taught["video_t"][clean.video].any() and not taught["audio_t"][clean.audio].any()  # conditions at t=0


def test_self_flow_adds_gamma_times_the_negative_cosine_of_the_head_and_the_teacher_features(monkeypatch):
    model, head, teacher, batch = _self_flow_setup()
    student_calls, teacher_calls = [], []
    _spy_forward(monkeypatch, model, student_calls)
    _spy_forward(monkeypatch, teacher, teacher_calls)
    losses = {}
    for gamma in (0.0, 0.8):
        loss, _ = self_flow_loss(
            model, teacher, head, batch, torch.Generator().manual_seed(1), SelfFlowSettings(gamma=gamma)
        )
        losses[gamma] = loss
    student_layer, teacher_layer = SelfFlowSettings().layers(4)
    prediction = head(student_calls[-1]["features"][student_layer])
    target = teacher_calls[-1]["features"][teacher_layer]
    cosine = (prediction * target).sum(-1) / (prediction.norm(dim=-1) * target.norm(dim=-1))
    assert losses[0.8].item() - losses[0.0].item() == pytest.approx(-0.8 * cosine.mean().item(), rel=1e-4, abs=1e-6)
    losses[0.8].backward()
    assert head.net[0].weight.grad is not None and all(p.grad is None for p in teacher.parameters())


def test_the_documented_ray_command_with_a_relative_out_trains_on_two_local_workers(codecs, tmp_path, monkeypatch):
    # README: `avgen train model --config configs/tiny.toml workers=2`, whose out is relative
    # ("runs/tiny") and whose codecs default to out/codecs.safetensors. Ray workers run in another
    # folder, so the paths must reach them resolved.
    import ray

    from avgen.cli import main

    _, codecs_path = codecs
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "rel").mkdir(parents=True)
    shutil.copyfile(codecs_path, tmp_path / "runs" / "rel" / "codecs.safetensors")
    config = tmp_path / "tiny.toml"
    config.write_text('[train]\nout = "runs/rel"\n')
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        code = main(["train", "model", "--config", "tiny.toml", "workers=2", "cpus_per_worker=0.5", "steps=2", *TOY])
    finally:
        ray.shutdown()
    assert code == 0
    out = tmp_path / "runs" / "rel"
    assert read_metadata(out / "model-selfflow.safetensors")["steps"] == "2"
    rows = [json.loads(line) for line in (out / "model-selfflow.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] == r["loss"] for r in rows)


def test_the_latent_cache_is_keyed_by_the_codecs_the_corpus_seed_and_the_preset(codecs, tmp_path):
    _, codecs_path = codecs
    shutil.copyfile(codecs_path, tmp_path / "codecs.safetensors")
    cfg = load_config(None, TOY + [f"out={tmp_path}"], "model")  # codecs: out/codecs.safetensors

    def cache(cfg):  # as train_model finds or builds it
        return build_latent_cache(cfg, load_checkpoint(tmp_path / "codecs.safetensors", only=CODECS), _cache_path(cfg))

    first = cache(cfg).video
    other_corpus = cache(dataclasses.replace(cfg, seed=1)).video
    assert len(list(tmp_path.glob("latents-*.pt"))) == 2 and not torch.equal(first, other_corpus)
    retrained = load_checkpoint(tmp_path / "codecs.safetensors")  # retrained codecs: other latents
    with torch.no_grad():
        retrained.video_codec.latent_mean.add_(1.0)
    save_checkpoint(retrained, tmp_path / "codecs.safetensors")
    assert not torch.equal(cache(cfg).video, first)  # the new codecs' latents, not the stale ones
    assert len(list(tmp_path.glob("latents-*.pt"))) == 3
    assert _cache_path(dataclasses.replace(cfg, preset="base")) != _cache_path(cfg)


def test_an_interrupted_latent_cache_write_leaves_no_cache_behind(codecs, tmp_path, monkeypatch):
    _, codecs_path = codecs
    cfg = load_config(None, TOY + [f"codecs={codecs_path}", f"out={tmp_path}"], "model")
    model = load_checkpoint(codecs_path, only=CODECS)
    save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        save(obj, f, *args, **kwargs)
        raise KeyboardInterrupt  # e.g. Ctrl-C while the file is being written

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(cfg, model, _cache_path(cfg))
    assert list(tmp_path.iterdir()) == []  # neither a cache a rerun would trust nor a temporary file
    monkeypatch.setattr(torch, "save", save)
    cache = build_latent_cache(cfg, model, _cache_path(cfg))
    assert torch.equal(build_latent_cache(cfg, model, _cache_path(cfg)).video, cache.video)  # read back


def test_wide_voices_and_augmentation_change_the_speech_not_the_faces_and_workers_render_the_same():
    plain = TrainConfig(corpus_clips=3, clip_seconds=0.6)
    varied = dataclasses.replace(plain, wide_voice_prob=1.0, augment_prob=1.0)
    mc = Config(height=64, width=64)
    a, b = corpus_sample(1, plain, mc), corpus_sample(1, varied, mc)
    assert (a.frames == b.frames).all() and a.text == b.text
    assert a.audio.shape == b.audio.shape and not np.allclose(a.audio, b.audio, atol=1e-3)
    serial = [s.audio for s, _ in training_windows(varied, mc)[1]]
    pooled = [s.audio for s, _ in training_windows(dataclasses.replace(varied, data_workers=2), mc)[1]]
    assert all((x == y).all() for x, y in zip(serial, pooled, strict=True))
    assert _windows_key(varied) != _windows_key(plain)  # the latent cache and heard phones are keyed by it


@pytest.mark.skipif(not espeak.available(), reason="espeak-ng is not installed")
def test_espeak_voices_speak_the_same_sentence_and_the_face_follows_them():
    plain = TrainConfig(corpus_clips=3, clip_seconds=2.0)
    spoken = dataclasses.replace(plain, espeak_voice_prob=1.0)
    mc = Config(height=64, width=64)
    a, b = corpus_sample(2, plain, mc), corpus_sample(2, spoken, mc)
    assert a.text == b.text and a.identity == b.identity and len(b.frames) >= 50
    assert not torch.equal(a.phone_ids[:50], b.phone_ids[:50])  # espeak-ng's own timing drives the mouth
    assert not (a.frames[:50] == b.frames[:50]).all()
    assert _windows_key(spoken) != _windows_key(plain)


def test_audio_driven_rows_train_on_the_phones_heard_in_their_audio(codecs, tmp_path):
    _, codecs_path = codecs
    cfg = load_config(None, TOY + [f"codecs={codecs_path}", f"out={tmp_path}", f"heard_phones={tmp_path / 'heard.pt'}",
                                   "audio_driven_prob=1", "cfg_dropout=0"], "model")  # fmt: skip
    cache = build_latent_cache(cfg, load_checkpoint(codecs_path, only=CODECS), _cache_path(cfg))
    assert cache.heard.shape == cache.phones.shape and not torch.equal(cache.heard, cache.phones)
    batch = make_batch(cache, cfg, torch.Generator().manual_seed(0), "cpu", batch_size=6)
    assert any(torch.equal(row, heard) for row in batch.phones for heard in cache.heard)
    assert not any(torch.equal(row, exact) for row in batch.phones for exact in cache.phones)
    text_driven = make_batch(cache, dataclasses.replace(cfg, audio_driven_prob=0), torch.Generator(), "cpu", 6)
    assert all(any(torch.equal(row, exact) for exact in cache.phones) for row in text_driven.phones)
    with pytest.raises(ValueError, match="other training windows"):
        load_heard_phones(dataclasses.replace(cfg, seed=1))


def test_a_minutes_budget_ends_the_session_with_an_exported_checkpoint(codecs, tmp_path):
    _, codecs_path = codecs
    cfg = load_config(None, TOY + [f"codecs={codecs_path}", f"out={tmp_path}", "steps=50", "minutes=1e-6"], "model")
    path = train_model(cfg)
    assert read_metadata(path)["steps"] == "1"  # the step it stopped at, not the 50 asked for
    assert learning_rate(cfg, 10, time_spent=1.0) == pytest.approx(0.1 * cfg.lr)


def test_hidden_and_depth_train_another_transformer_shape_on_the_same_codecs(codecs, tmp_path):
    from avgen.pipeline import GenerationRequest, Generator

    _, codecs_path = codecs
    path = train_model(load_config(None, TOY + [f"codecs={codecs_path}", "objective=flow", "steps=1", "hidden=48",
                                                "depth=3", f"out={tmp_path}"], "model"))  # fmt: skip
    model = load_checkpoint(path)
    assert (model.cfg.hidden, model.cfg.depth, len(model.transformer.blocks)) == (48, 3, 3)
    assert model.video_codec.state_dict().keys() == load_checkpoint(codecs_path).video_codec.state_dict().keys()
    frames = Generator.load(path).generate(GenerationRequest(text="hello", seconds=0.4, steps=1)).frames
    assert frames.shape[0] == 10
    for bad, why in ((["hidden=50"], "divisible"), ([f"init={path}", "hidden=48"], "from scratch"),
                     (["depth=-1"], ">= 0")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            train_model(load_config(None, TOY + [f"codecs={codecs_path}", "steps=1", f"out={tmp_path / 'x'}", *bad],
                                    "model"))  # fmt: skip


def test_motion_weight_weighs_the_moving_video_tokens_up_and_keeps_the_loss_a_weighted_mean():
    from avgen.objectives import _masked_mse, motion_weight

    video = torch.zeros(2, 6, 4, 3)
    video[0, ::2, 1] = 1.0  # clip 0: token 1 moves; token 3 moves half as much
    video[0, ::2, 3] = 0.5
    video[1] = torch.randn(6, 4, 3)
    weight = motion_weight(video, 4.0)
    assert weight.shape == (2, 6, 4)
    assert torch.allclose(weight[0, :, 1], torch.tensor(5.0)) and torch.allclose(weight[0, :, 3], torch.tensor(3.0))
    assert torch.allclose(weight[0, :, [0, 2]], torch.tensor(1.0)) and weight[1].max() == 5.0
    assert torch.equal(motion_weight(video, 0.0), torch.ones(2, 6, 4))
    keep = torch.ones(2, 6, 4, dtype=torch.bool)
    error = torch.zeros_like(video)
    error[0, :, 1] = 1.0  # the whole error on the moving token
    plain = _masked_mse(error[:1], video[:1] * 0, keep[:1])
    weighted = _masked_mse(error[:1], video[:1] * 0, keep[:1], weight[:1])
    assert torch.isclose(plain, torch.tensor(1 / 4)) and torch.isclose(weighted, torch.tensor(5 / 10))
    assert torch.isclose(_masked_mse(torch.ones_like(video), video * 0, keep, weight), torch.tensor(1.0))
    with pytest.raises(ValueError, match="motion_weight"):
        TrainConfig(motion_weight=-1)


def test_a_fine_tune_that_adds_the_phone_prior_starts_as_its_checkpoint_and_logs_the_prior_loss(codecs, tmp_path):
    from avgen.pipeline import GenerationRequest, Generator

    _, codecs_path = codecs
    common = TOY + [f"codecs={codecs_path}", "objective=flow", "steps=2"]
    plain = train_model(load_config(None, common + [f"out={tmp_path / 'a'}"], "model"))
    added = train_model(load_config(None, common + ["lr=0", "phone_prior=true", f"init={plain}",
                                                    f"out={tmp_path / 'b'}"], "model"))  # fmt: skip
    before, after = load_checkpoint(plain).transformer, load_checkpoint(added).transformer
    assert after.cfg.phone_prior and not before.cfg.phone_prior
    torch.manual_seed(0)
    video, audio = torch.randn(1, 5, 16, after.cfg.video_token_dim), torch.randn(1, 5, after.cfg.audio_latent_channels)
    t, phones = torch.full((1, 5, 16), 0.7), torch.tensor([[3, 7, 7, 12, 0]])
    with torch.no_grad():
        a, b = before(video, audio, t, t[..., 0], phones), after(video, audio, t, t[..., 0], phones)
    assert torch.allclose(a.video, b.video, atol=1e-6) and b.prior.shape == video.shape and a.prior is None
    rows = [json.loads(line) for line in (tmp_path / "b" / "model-flow.log.jsonl").read_text().splitlines()]
    assert all(row["loss_prior"] > 0 for row in rows)
    frames = Generator.load(added).generate(GenerationRequest(text="hello", seconds=0.4, steps=1)).frames
    assert frames.shape[0] == 10
    with pytest.raises(ValueError, match="phone_prior"):
        TrainConfig(phone_prior=True, objective="distill", init=str(plain))
    with pytest.raises(ValueError, match="add phone_prior=true"):  # fine-tuning it again needs the flag
        train_model(load_config(None, common + [f"init={added}", f"out={tmp_path / 'c'}"], "model"))
    # the prior's audio input added to that checkpoint starts at zero too: the same velocity with audio given
    hears = train_model(load_config(None, common + ["lr=0", "phone_prior=true", "prior_audio=true", f"init={added}",
                                                    f"out={tmp_path / 'd'}"], "model"))  # fmt: skip
    with_audio = load_checkpoint(hears).transformer
    assert with_audio.cfg.prior_audio
    given = torch.zeros_like(t[..., 0])
    with torch.no_grad():
        b, c = after(video, audio, t, given, phones), with_audio(video, audio, t, given, phones)
    assert torch.allclose(b.video, c.video, atol=1e-6) and torch.allclose(b.prior, c.prior, atol=1e-6)
    with pytest.raises(ValueError, match="prior_audio=true"):
        train_model(load_config(None, common + ["phone_prior=true", f"init={hears}", f"out={tmp_path / 'e'}"], "model"))
    with pytest.raises(ValueError, match="add phone_prior=true"):
        TrainConfig(prior_audio=True)


def test_the_phone_prior_reads_the_audio_only_where_it_is_given_clean():
    torch.manual_seed(0)
    model = AVTransformer(Config(hidden=32, depth=1, heads=2, phone_prior=True, prior_audio=True)).eval()
    cfg = model.cfg
    video, audio = torch.randn(1, 12, cfg.video_tokens_per_frame, cfg.video_token_dim), torch.randn(1, 12, 16)
    video_t, phones = torch.full(video.shape[:3], 0.5), torch.randint(1, 20, (1, 12))
    audio_t = torch.tensor([[0.0] * 6 + [0.5] * 6])  # the first half given clean, the rest noisy
    other = audio.clone()
    other[:, 6:] = torch.randn(1, 6, 16)
    with torch.no_grad():
        prior = model(video, audio, video_t, audio_t, phones).prior
        assert torch.equal(prior, model(video, other, video_t, audio_t, phones).prior)  # noisy audio: unread
        other[:, :6] = torch.randn(1, 6, 16)
        assert not torch.allclose(prior, model(video, other, video_t, audio_t, phones).prior)  # clean: read
        assert torch.equal(model(video, audio, video_t, torch.full_like(audio_t, 0.5), phones).prior,
                           model.phone_prior(phones))  # nothing given: the phones alone  # fmt: skip
        # told not to (a transcript's phones, aligned to the audio): the phones alone, given audio or not
        assert torch.equal(
            model(video, audio, video_t, audio_t, phones, prior_audio=False).prior, model.phone_prior(phones)
        )


def test_the_phone_prior_is_trained_towards_each_frames_latents_minus_their_clip_mean():
    from avgen.objectives import flow_loss

    torch.manual_seed(0)
    model = AVTransformer(Config(hidden=32, depth=1, heads=2, phone_prior=True))
    cfg = model.cfg
    x0 = Latents(torch.randn(2, 6, cfg.video_tokens_per_frame, cfg.video_token_dim),
                 torch.randn(2, 6, cfg.audio_latent_channels))  # fmt: skip
    clean = CleanMask(torch.zeros(x0.video.shape[:3], dtype=torch.bool), torch.zeros(2, 6, dtype=torch.bool))
    batch = Batch(x0, torch.randint(1, 20, (2, 6)), clean)
    noise = Latents(torch.randn_like(x0.video), torch.randn_like(x0.audio))
    t = torch.full(x0.video.shape[:3], 0.5)
    loss, out, logs = flow_loss(model, batch, t, t[..., 0], noise)
    moving = x0.video - x0.video.mean(dim=1, keepdim=True)
    assert torch.allclose(logs["loss_prior"], (out.prior - moving).pow(2).mean())
    assert torch.allclose(loss, logs["loss_video"] + logs["loss_audio"] + 10.0 * logs["loss_prior"])
    loss.backward()
    assert model.phone_prior.out.weight.grad.abs().sum() > 0
