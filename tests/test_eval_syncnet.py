"""The syncnet backend: published layout, weight loading, MFCCs and the protocol, checked against the
reference's own computations (python_speech_features, syncnet_python's evaluate / calc_pdist and
run_pipeline.py's crop) written out here independently of eval/."""

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from python_speech_features import mfcc
from scipy.signal import medfilt

from eval.syncnet import (
    ScorerWeightsError,
    SyncNet,
    audio_features,
    face_crop,
    load_syncnet,
    score_syncnet,
    window_count,
)


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    net = SyncNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode BN is exercised
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def weights_file(random_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(random_net.state_dict(), path)
    return path


def test_random_weights_in_the_published_key_layout_load_strictly(random_net, weights_file):
    state = torch.load(weights_file, weights_only=True)
    assert {k.split(".")[0] for k in state} == {"netcnnaud", "netfcaud", "netcnnlip", "netfclip"}
    net = load_syncnet(weights_file)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert net.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)


def _broken(state, how):
    state = dict(state)
    if how == "missing":
        state.pop("netfclip.3.weight")
    elif how == "renamed":
        state["module.netcnnaud.0.weight"] = state.pop("netcnnaud.0.weight")
    elif how == "shape":
        state["netfcaud.3.weight"] = torch.zeros(512, 512)
    return state


@pytest.mark.parametrize("how", ["missing", "renamed", "shape", "not a state dict", "arbitrary pickle", "no file"])
def test_weights_with_missing_renamed_or_misshaped_keys_are_rejected_with_one_line(how, random_net, tmp_path):
    path = tmp_path / "w.model"
    if how == "not a state dict":
        torch.save([1, 2, 3], path)
    elif how == "arbitrary pickle":  # refused by weights_only loading, never unpickled silently
        torch.save({"x": Fraction(1, 2)}, path)
    elif how != "no file":
        torch.save(_broken(random_net.state_dict(), how), path)
    with pytest.raises(ScorerWeightsError) as info:
        load_syncnet(path)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def _reference_scores(net, frames_rgb, audio, vshift=15):
    """syncnet_python's SyncNetInstance.evaluate + calc_pdist, step by step."""
    pcm = np.clip(np.round(audio.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)  # the wav
    images = [f[:, :, ::-1] for f in frames_rgb]  # cv2.imread gives BGR
    im = np.transpose(np.expand_dims(np.stack(images, axis=3), 0), (0, 3, 4, 1, 2))
    imtv = torch.from_numpy(im.astype(float)).float()
    cc = np.expand_dims(np.expand_dims(np.stack(list(zip(*mfcc(pcm, 16000)))), 0), 0)
    cct = torch.from_numpy(cc.astype(float)).float()
    lastframe = min(len(images), math.floor(len(pcm) / 640)) - 5
    with torch.no_grad():
        im_feat = torch.cat([net.forward_lip(imtv[:, :, v : v + 5]) for v in range(lastframe)])
        cc_feat = torch.cat([net.forward_aud(cct[:, :, :, v * 4 : v * 4 + 20]) for v in range(lastframe)])
    feat2p = torch.nn.functional.pad(cc_feat, (0, 0, vshift, vshift))
    dists = [
        torch.nn.functional.pairwise_distance(im_feat[[i], :].repeat(2 * vshift + 1, 1), feat2p[i : i + 2 * vshift + 1])
        for i in range(len(im_feat))
    ]
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    fconf = torch.median(mdist).numpy() - np.stack([d[minidx].numpy() for d in dists])
    return vshift - int(minidx), float(minval), float(torch.median(mdist) - minval), mdist.numpy(), fconf


def test_score_syncnet_computes_the_reference_protocol_exactly(random_net):
    rng = np.random.default_rng(1)
    frames_n = 32
    base = rng.integers(0, 256, (224, 224, 3))
    frames = np.clip(base + rng.integers(-40, 41, (frames_n, 224, 224, 3)), 0, 255).astype(np.uint8)
    t = np.arange(frames_n * 640 + 300) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(len(t))
    audio = audio.astype(np.float32)

    result, face = score_syncnet(frames, audio, random_net, face_crop_mode="none", batch_size=8)
    offset, lse_d, lse_c, mdist, fconf = _reference_scores(random_net, frames, audio)

    scale = float(np.abs(mdist).max())
    assert len(result.mean_distances) == 31 and len(result.frame_confidence) == frames_n - 5
    np.testing.assert_allclose(result.mean_distances, mdist, rtol=0, atol=1e-5 * scale)
    assert result.av_offset_frames == offset
    assert abs(result.sync_distance - lse_d) <= 1e-5 * scale
    assert abs(result.sync_confidence - lse_c) <= 1e-5 * scale
    np.testing.assert_allclose(result.frame_confidence, fconf, rtol=0, atol=1e-5 * scale)
    assert "as given" in face


@pytest.mark.parametrize("frames", [6, 7, 25, 101])
def test_audio_features_cover_every_window_and_line_up_with_the_video_frames(frames):
    rng = np.random.default_rng(frames)
    audio = np.zeros(frames * 640)
    clicks = rng.choice(np.arange(1, frames - 1), 3, replace=False)
    audio[clicks * 640] = 0.5  # a click at the start of video frame j
    features = audio_features(audio)
    assert features.shape == (13, 4 * frames - 1) and np.isfinite(features).all()  # silence: floored, finite
    last = window_count(frames, len(audio)) - 1
    assert 4 * last + 20 <= features.shape[1]  # the last window's 20 columns exist
    loud = set(np.flatnonzero(features[0] > features[0].min() + 5))  # c0 = log frame energy
    # column k covers samples 160k..160k+400: a click at 640j is heard in columns 4j-2..4j only
    assert loud == {k for j in clicks for k in (4 * j - 2, 4 * j - 1, 4 * j)}


def test_audio_features_take_the_int16_scale_of_the_reference_wav_which_moves_c0_only():
    audio = 0.1 * np.random.default_rng(0).standard_normal(16000)  # 10 sigma below full scale: no clipping
    scaled, unit = audio_features(audio), mfcc(audio, 16000).T
    np.testing.assert_allclose(scaled[0] - unit[0], 2 * np.log(32768), atol=1e-3)
    np.testing.assert_allclose(scaled[1:], unit[1:], atol=1e-2)  # int16 rounding


def test_reference_crop_follows_run_pipeline_crop_video():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (20, 120, 160, 3), dtype=np.uint8)
    x1 = 40 + 3 * np.sin(np.arange(20))
    y1 = 20 + np.arange(20) * 0.5
    boxes = np.stack([x1, y1, x1 + 50 + np.arange(20) % 3, y1 + 60], axis=1)
    crops, _ = face_crop(frames, boxes, "reference")

    import cv2

    s = medfilt(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2, kernel_size=13)
    y = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, kernel_size=13)
    x = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, kernel_size=13)
    cs = 0.40
    for i, image in enumerate(frames):
        bs = s[i]
        bsi = int(bs * (1 + 2 * cs))
        frame = np.pad(image, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(110, 110))
        my, mx = y[i] + bsi, x[i] + bsi
        ref = frame[int(my - bs) : int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs))]
        np.testing.assert_array_equal(crops[i], cv2.resize(ref, (224, 224)))
    # shorter than the 13-frame filter: zero-padded like the reference, quietly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short, _ = face_crop(frames[:8], boxes[:8], "reference")
    assert short.shape == (8, 224, 224, 3)


def test_no_face_found_falls_back_to_a_centred_crop_and_says_so():
    frames = np.full((6, 90, 120, 3), 128, dtype=np.uint8)
    crops, face = face_crop(frames, None, "reference")
    assert crops.shape == (6, 224, 224, 3) and "no face" in face


@pytest.mark.parametrize("frames_n", [0, 4])
def test_fewer_than_five_frames_is_a_clear_error(frames_n, random_net):
    frames = np.zeros((frames_n, 224, 224, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="at least 5 video frames"):
        score_syncnet(frames, np.zeros(16000, np.float32), random_net, face_crop_mode="none")
