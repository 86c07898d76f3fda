"""scripts/landmarks_protocol.py on three drawn held-out clips: both settings are measured, the
"-audio-of-" controls are skipped, and drawn ground truth is in sync under both."""

import json
from pathlib import Path

from conftest import load_script

from avgen.data import make_sample
from avgen.media import write_mp4

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "landmarks_protocol.py"


def test_measures_both_settings_on_a_folder_of_mp4s(tmp_path):
    folder = tmp_path / "drawn"
    folder.mkdir()
    for i in range(3):
        s = make_sample(i, split="heldout", seed=1, seconds=3.0)
        write_mp4(folder / f"clip{i}.mp4", s.frames, s.audio, fps=25, sample_rate=16000)
    write_mp4(folder / "clip0-audio-of-clip1.mp4", s.frames, s.audio, fps=25, sample_rate=16000)  # skipped

    out, md = tmp_path / "report.json", tmp_path / "report.md"
    assert load_script(SCRIPT).main([str(folder), "--out", str(out), "--md", str(md)]) == 0

    report = json.loads(out.read_text())
    group = report["groups"]["drawn"]
    assert group["clips"] == 3
    for mode in ("padded", "overlap"):
        assert len(group[mode]["offsets"]) == 3
        assert all(abs(o) <= 1 for o in group[mode]["offsets"]), group[mode]["offsets"]
        assert group[mode]["own_other_of_means"] > 1.0
        assert report["unrelated_pairs"][mode]["pairs"] == 6  # every clip against both others' audio
    assert report["smooth_noise_control"]["pairs"] == 3
    assert "| drawn | 3 |" in md.read_text()


def test_a_folder_without_two_clips_is_a_clear_error(tmp_path, capsys):
    import pytest

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        load_script(SCRIPT).main([str(tmp_path / "empty"), "--out", str(tmp_path / "r.json")])
    assert exit_.value.code == 2 and "2 or more MP4s" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
