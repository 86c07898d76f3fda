"""avgen.face_landmarks: BlazeFace + face mesh (shipped tflite files), the Haar keyframe tracker, and
the layering (the training data must not import the scorers)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avgen.data import make_sample
from avgen.face_landmarks import (
    DETECTOR_FILE,
    LOWER_INNER_LIP,
    MESH_FILE,
    UPPER_INNER_LIP,
    blaze_face,
    face_mesh,
    lip_opening,
)

REPO = Path(__file__).resolve().parents[1]
REAL_CLIPS = REPO.parent / "shared" / "data" / "real-clips"


def test_model_files_and_their_licence_ship_with_the_package():
    for path in (DETECTOR_FILE, MESH_FILE, DETECTOR_FILE.with_name("LICENSE"), DETECTOR_FILE.with_name("NOTICE")):
        assert path.is_file(), path
    assert "Apache License" in DETECTOR_FILE.with_name("LICENSE").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "face_models/*.tflite" in pyproject and "ai-edge-litert" in pyproject


def test_blazeface_finds_the_drawn_face_around_its_mouth():
    sample = make_sample(0, "heldout", seconds=1.0)
    face = blaze_face(sample.frames[0])
    assert face is not None and face.score > 0.5
    x, y, w, h = face.box
    # the drawn mouth is centred at (0.50 S, 0.70 S) of the 64 px frame, the eyes above it
    assert x < 32 < x + w and y < 0.70 * 64 < y + h
    assert np.all(face.eyes[:, 1] < 0.70 * 64) and face.eyes[0, 0] < face.eyes[1, 0]  # right eye on the image's left


def test_face_mesh_is_deterministic_and_follows_the_drawn_mouth():
    sample = make_sample(1, "heldout", seconds=3.0)
    points, presence, how = face_mesh(sample.frames)
    again, presence2, _ = face_mesh(sample.frames)
    assert points.shape == (75, 468, 3) and np.array_equal(points, again) and np.array_equal(presence, presence2)
    assert presence.min() > 0.5 and how.startswith("blazeface: face in 100%")
    lips = points[:, [UPPER_INNER_LIP, LOWER_INNER_LIP], :2].mean(axis=1)
    assert np.all(np.abs(lips - [32, 0.70 * 64]) < 6)  # pixels
    assert np.corrcoef(lip_opening(points), sample.mouth_open)[0, 1] > 0.8


def test_face_mesh_rejects_bad_frames():
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        face_mesh(np.zeros((4, 64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        face_mesh(np.zeros((4, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"T >= 1"):
        face_mesh(np.zeros((0, 64, 64, 3), np.uint8))


@pytest.mark.skipif(
    not REAL_CLIPS.is_dir(), reason=f"real clips not found in {REAL_CLIPS} (evaluation data, not shipped)"
)
def test_lips_are_inside_blazeface_box_on_a_real_face():
    from avgen.media import read_mp4

    frames = read_mp4(min(REAL_CLIPS.glob("*.mp4")), fps=25).frames[:10]
    face = blaze_face(frames[0])
    points, presence, _ = face_mesh(frames)
    x, y, w, h = face.box
    lip = points[0, UPPER_INNER_LIP, :2]
    assert x < lip[0] < x + w and y + h / 2 < lip[1] < y + h and presence.min() > 0.9


def test_training_data_does_not_import_the_scorers():
    code = (
        "import sys; from avgen.data import make_sample; from avgen.data.real import face_track; "
        "face_track(make_sample(0, seconds=1.0).frames); "
        "print(sorted(m for m in sys.modules if m == 'eval' or m.startswith('eval.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
