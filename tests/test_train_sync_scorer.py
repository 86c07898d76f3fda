"""Training the learned sync scorer (avgen.train_sync_scorer) end to end on a tiny real corpus:
cache, resumable checkpoint, weights that eval.learned loads."""

import subprocess
import sys

from avgen.train_sync_scorer import main
from eval.learned import load_learned


def test_a_tiny_run_writes_weights_the_scorer_loads_and_a_rerun_resumes(tmp_path):
    work, out = tmp_path / "work", tmp_path / "sync.safetensors"
    args = ["--clips", "2", "--seconds", "1", "--batch", "2", "--frames", "10", "--eval", "0",
            "--work", str(work), "--out", str(out)]  # fmt: skip
    main(["--steps", "2", *args])
    assert load_learned(out).steps == 2
    assert sorted(p.name for p in work.iterdir()) == [
        "cache_1s_seed0_voices0.75_00000-00002.npz",
        "ckpt.pt",
        "train.log",
    ]
    main(["--steps", "3", *args])  # the cache is reused and training goes on from step 2
    assert load_learned(out).steps == 3 and "resumed from" in (work / "train.log").read_text()
    assert len(list(work.iterdir())) == 3  # no temporary files left behind


def test_the_module_runs_under_its_name_and_refuses_bad_sizes():
    run = subprocess.run([sys.executable, "-m", "avgen.train_sync_scorer", "--frames", "3"],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert run.returncode == 2 and "--frames must be at least 5" in run.stderr
