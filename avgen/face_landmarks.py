"""Faces in video frames, for both the training data (avgen.data.real) and the scorers (eval).

Two detectors, one tracker, one landmark model:

- `haar_face` / `keyframe_face_boxes`: OpenCV's Haar frontal-face cascade (ships in the
  opencv-python-headless wheel) on a grayscale, histogram-equalised copy of a frame at most 160 px
  on the long side; the largest face. Keyframe boxes are cleaned (a missed keyframe takes its nearest
  detection in time; a 3-tap median over keyframes removes one-off false hits). Used for the face
  crop of real training clips (avgen.data.real) and for the mouth patches the learned scorer was
  trained on (eval.landmarks.mouth_patches), whose numerics must not change.
- `blaze_face`: MediaPipe's BlazeFace short-range detector (128x128 input, 896 SSD anchors on
  16x16x2 + 8x8x6 cells, boxes and 6 keypoints decoded relative to the anchor centres, sigmoid
  score >= 0.5; the highest-scoring face is kept). It finds the face box and the eyes, from which
  the landmark model's crop is rotated upright.
- `face_mesh`: MediaPipe's face-landmark model (192x192 crop of 1.5x the face box, RGB in 0..1)
  gives 468 3-D landmarks per frame, mapped back to frame pixels. The crop follows the face: BlazeFace
  on every DETECT_EVERY-th frame (and the last), box centre, size and eye angle interpolated between.
  BlazeFace finds the corpus's drawn 64x64 faces too (on the letterboxed frame upscaled to 128 px).
  Where it finds no face in any keyframe, the whole frame, centred, is the crop: talking-head clips
  are face-centred crops.
- `lip_opening`: inner-lip gap (landmarks 13 upper, 14 lower inner lip) over the distance between
  the outer eye corners (33, 263), per frame: the face's size cancels, and unlike the mouth width it
  does not change with the lip shape (rounding, spreading).

The two model files (face_detection_short_range.tflite, face_landmark.tflite) come from the
mediapipe 0.10.14 wheel (Apache-2.0; avgen/face_models/LICENSE and NOTICE) and run with
ai-edge-litert. Interpreters are not thread-safe, so each call makes its own; the results are
deterministic (same frames, same landmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MODELS = Path(__file__).with_name("face_models")
DETECTOR_FILE = MODELS / "face_detection_short_range.tflite"
MESH_FILE = MODELS / "face_landmark.tflite"

DETECT_EVERY = 5  # run a face detector on every 5th frame, track between

# Haar (OpenCV)
HAAR_MAX_SIDE = 160  # downscale so the long side is at most this before detection

# BlazeFace short range
BLAZE_SIZE = 128
BLAZE_STRIDES = (8, 16, 16, 16)  # SSD layers; 2 anchors per cell each, fixed size 1
BLAZE_MIN_SCORE = 0.5
RIGHT_EYE, LEFT_EYE = 0, 1  # keypoint order: right eye, left eye, nose tip, mouth, right ear, left ear

# face mesh
MESH_SIZE = 192
MESH_SCALE = 1.5  # the crop is 1.5x the detector's face box (MediaPipe's rect transformation)
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
EYE_CORNERS = (33, 263)  # outer eye corners: the face's scale, steady while the mouth moves

_cascade: cv2.CascadeClassifier | None = None


def haar_face(frame: np.ndarray) -> np.ndarray | None:
    """Largest Haar face in an RGB frame as (x, y, w, h) in the frame's pixels, or None."""
    global _cascade
    if _cascade is None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(f"could not load OpenCV's Haar face cascade from {path}")
        _cascade = cascade
    h, w = frame.shape[:2]
    scale = min(1.0, HAAR_MAX_SIDE / max(h, w))
    small = (
        frame
        if scale == 1.0
        else cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    )
    gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY))
    min_side = max(20, int(0.12 * min(gray.shape)))
    faces = _cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
    return np.array([x, y, fw, fh], np.float64) / scale


def median3(values: np.ndarray) -> np.ndarray:
    """3-tap median along axis 0 (edges repeated)."""
    if len(values) < 3:
        return values
    padded = np.concatenate([values[:1], values, values[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def fill_and_clean(keys: np.ndarray, found: list[np.ndarray | None]) -> tuple[np.ndarray | None, float]:
    """Per-keyframe values (None = missed) -> (K, D): a missed keyframe takes its nearest hit in time,
    then a 3-tap median over keyframes. Returns (None, 0.0) when nothing was found, and the hit fraction."""
    hits = np.array([f is not None for f in found])
    if not hits.any():
        return None, 0.0
    hit_keys, hit_values = keys[hits], np.stack([f for f in found if f is not None])
    nearest = np.abs(keys[:, None] - hit_keys[None, :]).argmin(axis=1)
    return median3(hit_values[nearest]), float(hits.mean())


def keyframe_face_boxes(frames: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Haar face boxes (x, y, w, h) at the frames `keys`, cleaned (see `fill_and_clean`).
    Returns the (K, 4) boxes (None when no keyframe has a face) and the fraction of keyframes with one."""
    return fill_and_clean(keys, [haar_face(frames[i]) for i in keys])


class TFLiteModel:
    """One tflite interpreter (not thread-safe: one per call) with its tensor indices looked up once."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        # outputs largest first: (regressors, scores) for the detector, (landmarks, face flag) for the mesh
        details = sorted(self.interpreter.get_output_details(), key=lambda d: -int(np.prod(d["shape"])))
        self.outputs = [d["index"] for d in details]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(x[None], np.float32))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i)[0] for i in self.outputs]


def _blaze_anchors() -> np.ndarray:
    """(896, 2) anchor centres (x, y) in 0..1, in the model's output order."""
    centres = []
    layer = 0
    while layer < len(BLAZE_STRIDES):
        stride, count = BLAZE_STRIDES[layer], 0
        while layer < len(BLAZE_STRIDES) and BLAZE_STRIDES[layer] == stride:  # same-stride layers share cells
            count += 2
            layer += 1
        cells = BLAZE_SIZE // stride
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, count, axis=0))
    return np.concatenate(centres)


_ANCHORS = _blaze_anchors()


@dataclass
class Face:
    box: np.ndarray  # (x, y, w, h) in frame pixels
    eyes: np.ndarray  # (2, 2): right eye, left eye (x, y) in frame pixels
    score: float


def blaze_face(frame: np.ndarray, detector: TFLiteModel | None = None) -> Face | None:
    """The highest-scoring BlazeFace face in an RGB frame (letterboxed to a square), or None.
    Pass `detector` (a TFLiteModel of DETECTOR_FILE) to reuse one across frames of one thread."""
    detector = detector or TFLiteModel(DETECTOR_FILE)
    h, w = frame.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, 3), np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = frame
    x = cv2.resize(
        square, (BLAZE_SIZE, BLAZE_SIZE), interpolation=cv2.INTER_AREA if side > BLAZE_SIZE else cv2.INTER_LINEAR
    )
    regressors, scores = detector(x.astype(np.float32) / 127.5 - 1.0)
    logits = np.clip(scores[:, 0], -100, 100)
    best = int(np.argmax(logits))
    score = float(1 / (1 + np.exp(-logits[best])))
    if score < BLAZE_MIN_SCORE:
        return None
    raw = regressors[best] / BLAZE_SIZE
    cx, cy = raw[0] + _ANCHORS[best, 0], raw[1] + _ANCHORS[best, 1]
    keypoints = raw[4:16].reshape(6, 2) + _ANCHORS[best]
    eyes = keypoints[[RIGHT_EYE, LEFT_EYE]]
    offset = np.array([left, top])
    box = np.array([(cx - raw[2] / 2) * side - left, (cy - raw[3] / 2) * side - top, raw[2] * side, raw[3] * side])
    return Face(box=box, eyes=eyes * side - offset, score=score)


def _crop_transforms(frames: np.ndarray, keys: np.ndarray, faces: np.ndarray | None) -> np.ndarray:
    """Per-frame 2x3 affine maps from frame pixels to the 192x192 mesh crop, (T, 2, 3).
    faces: (K, 4) per keyframe (centre x, centre y, side, angle) or None (whole frame)."""
    t, h, w = frames.shape[:3]
    if faces is None:
        track = np.tile([w / 2, h / 2, max(w, h), 0.0], (t, 1))
    else:
        track = np.stack([np.interp(np.arange(t), keys, faces[:, c]) for c in range(4)], axis=1)
    maps = np.empty((t, 2, 3))
    for i, (cx, cy, side, angle) in enumerate(track):
        maps[i] = _affine(cx, cy, side, angle)
    return maps


def _affine(cx: float, cy: float, side: float, angle: float) -> np.ndarray:
    """2x3 map from frame pixels to the mesh crop: rotate by -angle about (cx, cy) (eyes level),
    scale `side` pixels to MESH_SIZE, centre in the crop."""
    scale = MESH_SIZE / side
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, s, MESH_SIZE / 2 - c * cx - s * cy], [-s, c, MESH_SIZE / 2 + s * cx - c * cy]])


def face_mesh(frames: np.ndarray, detect: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """468 face landmarks per frame: (T, 468, 3) float64 (x, y in frame pixels, z in crop pixels),
    the model's face-presence probability per frame (T,), and a description of how the face was found.
    `detect=False` skips BlazeFace and crops the whole frame."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB with T >= 1, got {frames.dtype} {frames.shape}")
    t = len(frames)
    detector, mesh = TFLiteModel(DETECTOR_FILE), TFLiteModel(MESH_FILE)
    keys = np.unique(np.r_[np.arange(0, t, DETECT_EVERY), t - 1])
    found = []
    for i in keys if detect else []:
        face = blaze_face(frames[i], detector)
        if face is None:
            found.append(None)
            continue
        x, y, bw, bh = face.box
        (rx, ry), (lx, ly) = face.eyes
        angle = np.arctan2(ly - ry, lx - rx)  # the eye line's tilt; the crop is rotated to level it
        found.append(np.array([x + bw / 2, y + bh / 2, MESH_SCALE * max(bw, bh), angle]))
    faces, fraction = fill_and_clean(keys[: len(found)], found)
    maps = _crop_transforms(frames, keys, faces)
    crops = np.empty((t, 468, 3))
    flags = np.empty(t)
    for i in range(t):
        crop = cv2.warpAffine(
            frames[i], maps[i], (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        landmarks, flag = mesh(crop.astype(np.float32) * (1 / 255))
        crops[i] = landmarks.reshape(468, 3)
        flags[i] = flag.ravel()[0]
    # back to frame pixels: invert each frame's crop map (rotation-scale A, shift b: x = A^-1 (y - b))
    inverse = np.linalg.inv(maps[:, :, :2])
    points = crops.copy()
    points[:, :, :2] = np.einsum("tij,tnj->tni", inverse, crops[:, :, :2] - maps[:, None, :, 2])
    presence = 1 / (1 + np.exp(-flags))
    mesh_found = f"face mesh sure of a face in {round(100 * float((presence >= 0.5).mean()))}% of frames"
    if faces is not None:
        how = f"blazeface: face in {round(100 * fraction)}% of sampled frames; {mesh_found}"
    else:
        how = f"{'no face detected' if detect else 'detector skipped'}: mesh on the whole frame; {mesh_found}"
    return points, presence, how


def lip_opening(points: np.ndarray) -> np.ndarray:
    """(T, 468, 3) landmarks -> (T,) inner-lip gap over the outer-eye-corner distance (0 = closed)."""
    gap = np.linalg.norm(points[:, UPPER_INNER_LIP, :2] - points[:, LOWER_INNER_LIP, :2], axis=1)
    eyes = np.linalg.norm(points[:, EYE_CORNERS[0], :2] - points[:, EYE_CORNERS[1], :2], axis=1)
    return gap / np.maximum(eyes, 1e-6)
