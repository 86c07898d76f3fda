"""The `syncnet` backend: the published SyncNet (Chung & Zisserman 2016) as syncnet_python runs it.

- Network: syncnet_python's SyncNetModel.S layer for layer, so the published `syncnet_v2.model`
  (a plain state dict with keys netcnnaud.*, netfcaud.*, netcnnlip.*, netfclip.*) loads strictly.
- Audio: python_speech_features.mfcc (its defaults: 13 cepstra of 25 ms frames every 10 ms) of the
  16 kHz track at int16 scale (the reference reads a pcm_s16le wav; the scale changes c0 only), one
  1x13x20 window per video frame i at MFCC columns 4i..4i+20 (column k covers samples 160k..160k+400).
- Video: 224x224 face crops, 5 consecutive frames per window as a 3x5x224x224 tensor, BGR, raw
  0-255 floats (the reference stacks cv2.imread frames).
- Windows: i in 0..min(frames, samples // 640) - 6, the reference's `lastframe = min_length - 5`.
- Offsets: eval.protocol.sync_offset with vshift 15 (run_syncnet.py's default).

Crop ("reference"): run_pipeline.py's crop_video around a face box: half-size s = max(w, h) / 2 and
the centre, median-filtered over 13 frames; a square of side 2.8 s spanning s above the centre to
1.8 s below it (the whole face shifted down to include the mouth), frame padded with grey 110,
resized to 224x224. The box comes from OpenCV's Haar frontal-face cascade (the reference uses S3FD)
run on a downscaled frame every few frames and interpolated between detections; with no face
found the crop is a centred square, and the returned `face` string says so.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from python_speech_features import mfcc
from scipy.signal import medfilt
from torch import nn

from eval.protocol import VSHIFT, SyncResult, sync_offset

SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
WINDOW = 5  # video frames per window (20 MFCC steps)
CROP = 224
CROP_SCALE = 0.40  # run_pipeline.py --crop_scale
SMOOTH = 13  # run_pipeline.py: signal.medfilt(kernel_size=13) on box size and centre
PAD_VALUE = 110  # run_pipeline.py pads frames with this grey
DETECT_EVERY = 5  # run the face detector on every 5th frame
DETECT_SIZE = 320  # ... downscaled to at most this many pixels on its longer side
PARTS = ("netcnnaud", "netfcaud", "netcnnlip", "netfclip")


class ScorerWeightsError(ValueError):
    """A scorer weight file is missing or does not fit the network."""


class SyncNet(nn.Module):
    """syncnet_python's SyncNetModel.S (1024-d embeddings)."""

    def __init__(self, embed: int = 1024):
        super().__init__()

        def conv2(cin, cout, kernel, relu_inplace=True, **kw):
            return [nn.Conv2d(cin, cout, kernel, **kw), nn.BatchNorm2d(cout), nn.ReLU(inplace=relu_inplace)]

        def conv3(cin, cout, kernel, **kw):
            return [nn.Conv3d(cin, cout, kernel, **kw), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]

        def fc():
            return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed))

        self.netcnnaud = nn.Sequential(
            *conv2(1, 64, (3, 3), stride=(1, 1), padding=(1, 1)),
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
            *conv2(64, 192, (3, 3), stride=(1, 1), padding=(1, 1)),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
            *conv2(192, 384, (3, 3), padding=(1, 1)),
            *conv2(384, 256, (3, 3), padding=(1, 1)),
            *conv2(256, 256, (3, 3), padding=(1, 1)),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
            *conv2(256, 512, (5, 4), relu_inplace=False, padding=(0, 0)),
        )
        self.netfcaud = fc()
        self.netfclip = fc()
        self.netcnnlip = nn.Sequential(
            *conv3(3, 96, (5, 7, 7), stride=(1, 2, 2), padding=0),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *conv3(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *conv3(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *conv3(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *conv3(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *conv3(256, 512, (1, 6, 6), padding=0),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows -> (B, 1024)."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR 0-255 face windows -> (B, 1024)."""
        return self.netfclip(self.netcnnlip(x).flatten(1))


def _read_state(path: Path, allow_pickle: bool) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not allow_pickle:
            raise ScorerWeightsError(
                f"{path} is not a plain tensor state dict (torch.load(weights_only=True) refused it); "
                "if you trust the file, load it with allow_pickle=True"
            ) from None
        warnings.warn(
            f"loading {path} with full unpickling (weights_only=False): only do this for trusted files", stacklevel=2
        )
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001  (torch.load fails in many ways on a bad file; each becomes one line)
        message = f"cannot read SyncNet weights {path}: {type(e).__name__}: {e}".splitlines()[0]
        raise ScorerWeightsError(message) from None
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ScorerWeightsError(f"{path} is not a SyncNet state dict (expected a dict of tensors)")
    return state


def load_syncnet(path, allow_pickle: bool = False) -> SyncNet:
    """Load the published `syncnet_v2.model` (or any state dict in its key layout) into SyncNet, strictly.

    Raises ScorerWeightsError (a ValueError) for a missing file, missing/unexpected keys or wrong shapes.
    BatchNorm `num_batches_tracked` counters (absent from old PyTorch saves) may be missing.
    """
    path = Path(path)
    if not path.is_file():
        raise ScorerWeightsError(f"SyncNet weights not found: {path} (syncnet_v2.model from syncnet_python)")
    state = _read_state(path, allow_pickle)
    net = SyncNet()
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ScorerWeightsError(
            f"{path} does not have SyncNet's keys: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ScorerWeightsError(
                f"{path}: {key} has shape {tuple(value.shape)}, SyncNet needs {tuple(expected[key].shape)}"
            )
    net.load_state_dict(state, strict=False)  # strictness checked above, bar num_batches_tracked
    return net.eval()


# ---------------------------------------------------------------- face crop


def _smooth(track: np.ndarray) -> np.ndarray:
    """run_pipeline.py's smoothing of the box track: scipy.signal.medfilt over 13 frames, zero-padded
    ends (a clip shorter than the kernel is zero-padded too, as the reference does: no warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "kernel_size exceeds volume extent")
        return medfilt(track, SMOOTH)


def detect_face_boxes(frames: np.ndarray, every: int = DETECT_EVERY) -> tuple[np.ndarray | None, str]:
    """Haar frontal-face boxes (T, 4) x1, y1, x2, y2 for every frame (largest face on every `every`-th
    frame, downscaled to <= DETECT_SIZE px, interpolated between detections), or None if none found."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    t, h, w = frames.shape[:3]
    scale = min(1.0, DETECT_SIZE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    found, boxes = [], []
    tried = list(range(0, t, every))
    for i in tried:
        gray = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
        if scale < 1:
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5)
        if len(faces):
            x, y, bw, bh = max(faces, key=lambda f: f[2] * f[3]) / scale
            found.append(i)
            boxes.append((x, y, x + bw, y + bh))
    if not found:
        return None, f"no face found by the Haar cascade in {len(tried)} frames: centred square crop"
    boxes = np.array(boxes, dtype=np.float64)
    all_boxes = np.stack([np.interp(np.arange(t), found, boxes[:, k]) for k in range(4)], axis=1)
    side = float(np.mean(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    return all_boxes, f"haar face in {len(found)}/{len(tried)} detected frames (~{side:.0f} px)"


def _resize(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.shape[:2] == (CROP, CROP):
        return image
    return cv2.resize(image, (CROP, CROP))


def face_crop(frames: np.ndarray, boxes: np.ndarray | None = None, mode: str = "reference") -> tuple[np.ndarray, str]:
    """(T, H, W, 3) uint8 -> ((T, 224, 224, 3) uint8 crops, face description).

    mode "reference": run_pipeline.py's crop around `boxes` ((T, 4) x1, y1, x2, y2), detected with the
    Haar cascade when None; no face -> centred square crop. mode "none": frames resized to 224x224.
    """
    frames = np.asarray(frames)
    t, h, w = frames.shape[:3]
    if mode == "none":
        how = "as given" if (h, w) == (CROP, CROP) else f"resized from {w}x{h}"
        return np.stack([_resize(f) for f in frames]), f"no face crop: frames used {how}"
    if mode != "reference":
        raise ValueError(f"face_crop mode must be 'reference' or 'none', not {mode!r}")
    if boxes is None:
        boxes, face = detect_face_boxes(frames)
    else:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (t, 4):
            raise ValueError(f"boxes must be ({t}, 4) x1, y1, x2, y2 per frame, got {boxes.shape}")
        face = "given face boxes"
    if boxes is None:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return np.stack([_resize(f[top : top + side, left : left + side]) for f in frames]), face

    s = _smooth(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2)
    cy = _smooth((boxes[:, 1] + boxes[:, 3]) / 2)
    cx = _smooth((boxes[:, 0] + boxes[:, 2]) / 2)
    cs = CROP_SCALE
    crops = []
    for frame, bs, y, x in zip(frames, s, cy, cx):
        bs = max(bs, 1.0)
        bsi = int(bs * (1 + 2 * cs))
        padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=PAD_VALUE)
        my, mx = y + bsi, x + bsi
        rows = slice(int(my - bs), int(my + bs * (1 + 2 * cs)))  # s above the centre to 1.8 s below
        cols = slice(int(mx - bs * (1 + cs)), int(mx + bs * (1 + cs)))
        crops.append(_resize(padded[rows, cols]))
    return np.stack(crops), face


# ---------------------------------------------------------------- scoring


def audio_to_int16_scale(audio: np.ndarray) -> np.ndarray:
    """Float [-1, 1] samples -> the int16 values the reference reads from its pcm_s16le wav (as float64)."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768), -32768, 32767)


def audio_features(audio: np.ndarray) -> np.ndarray:
    """(samples,) float 16 kHz audio -> (13, M) MFCCs as the reference computes them from its wav:
    M = 4 * frames - 1 for whole 40 ms frames, so every window's 20 columns exist."""
    return mfcc(audio_to_int16_scale(audio), SAMPLE_RATE).T


def window_count(frames: int, samples: int) -> int:
    """syncnet_python's number of windows: lastframe = min(frames, samples // 640) - 5."""
    return min(frames, samples // SAMPLES_PER_FRAME) - WINDOW


@torch.no_grad()
def embed(net: SyncNet, crops: np.ndarray, cepstra: np.ndarray, count: int, batch_size: int = 20):
    """Video and audio embeddings (count, 1024) of windows 0..count-1 (crops RGB uint8; cepstra (13, M))."""
    net.eval()
    device = next(net.parameters()).device
    video, audio = [], []
    for start in range(0, count, batch_size):
        idx = range(start, min(count, start + batch_size))
        lips = np.stack([crops[i : i + WINDOW, :, :, ::-1] for i in idx])  # (B, 5, 224, 224, 3) BGR
        lips = torch.from_numpy(lips.astype(np.float32)).permute(0, 4, 1, 2, 3)  # (B, 3, 5, 224, 224)
        mfccs = torch.from_numpy(np.stack([cepstra[None, :, 4 * i : 4 * i + 20] for i in idx]).astype(np.float32))
        video.append(net.forward_lip(lips.to(device)).cpu())
        audio.append(net.forward_aud(mfccs.to(device)).cpu())
    return torch.cat(video).numpy(), torch.cat(audio).numpy()


def score_syncnet(
    frames: np.ndarray,
    audio: np.ndarray,
    net: SyncNet,
    face_crop_mode: str = "reference",
    batch_size: int = 20,
    boxes: np.ndarray | None = None,
    vshift: int = VSHIFT,
) -> tuple[SyncResult, str]:
    """SyncNet offset / LSE-D / LSE-C of (T, H, W, 3) uint8 RGB 25 fps frames and float 16 kHz mono audio."""
    frames = np.asarray(frames)
    audio = np.asarray(audio).reshape(-1)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    if len(frames) < WINDOW:
        raise ValueError(f"syncnet needs at least {WINDOW} video frames (one 5-frame window), got {len(frames)}")
    count = window_count(len(frames), len(audio))
    if count < 1:
        raise ValueError(
            f"clip too short for syncnet: {len(frames)} frames and {len(audio)} samples give no window "
            f"(the reference uses min(frames, samples // 640) - 5 windows; needs >= 6 frames and 0.24 s of audio)"
        )
    used = count + WINDOW - 1
    crops, face = face_crop(frames[:used], None if boxes is None else np.asarray(boxes)[:used], face_crop_mode)
    cepstra = audio_features(audio)
    video, aud = embed(net, crops, cepstra, count, batch_size)
    return sync_offset(video, aud, vshift), face
