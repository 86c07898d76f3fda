#!/usr/bin/env python
"""Issue 4, section 5: results of ground truth, baseline flow matching and Self-Flow on held-out clips.

    python scripts/make_results.py --baseline runs/tiny/model-flow.safetensors \
        --selfflow runs/tiny/model-selfflow.safetensors --logs runs/tiny --clips 32 --out docs

writes OUT/results.md and OUT/results/*.png (loss curves, metric bars, a contact sheet of frames,
mouth signals). Every number in them comes from the run that wrote them. The code is in scripts/results/:
clips.py (generate and score), metrics.py and stats.py (the table), acceptance.py (the checks),
plots.py, report.py (the markdown), training_log.py, main.py (the command line).

What it does
- Held-out set: clips i = 0..N-1 of `make_sample(i, split="heldout", seed=0)` (identities and
  sentences no training clip has), at their natural length. Ground truth is the sample itself,
  written to MP4 like the generated clips, so every system goes through the same H.264/AAC round
  trip before it is scored. `--split train` takes the training corpus's clips instead (same
  indices): how well a model fits what it was trained on, beside how it generalises.
- Each model generates the same transcript with the same number of frames (seconds = T / 25), the
  identity's reference frame (`reference_frame(sample)`) as `reference_image`, generation seed
  `--seed + i` (the same for both models), the checkpoint's default steps/cfg/shift unless --steps/--cfg/--shift.
  Each checkpoint is copied into the work folder before it is read, so a training run that
  rewrites it meanwhile cannot mix two versions.
- Scores (eval.run.score_clip, both sync backends "learned" and "landmarks"): AV offset, sync
  confidence, temporal flickering, warping error, audio flicker (the flicker scores do not depend
  on the backend; they are taken from the learned row).
- Mouth motion: the mean absolute frame-to-frame change of eval.landmarks.mouth_signal (the
  face-mesh lip opening, inner-lip gap over the eye-corner distance, high-passed) of the decoded
  MP4. A frozen face scores 0.
- Mismatched-audio control: the same video muxed with the audio of clip (i + 1) mod N of the same
  system (repeated if shorter, cut if longer, so it is speech all along), scored with the learned
  backend. Its sync confidence must be clearly lower than the matched clip's.
- Training: steps from each checkpoint's metadata; wall-clock from the training log (the logged
  "seconds" are per training session; sessions of a resumed run are summed).

Acceptance checks (issue 4), evaluated from this run's numbers:
- mean |AV offset| <= 1 frame and sync confidence >= 60 % of ground truth's (ratio of the means
  over the same transcripts), learned scorer;
- mismatched audio clearly lower: the 95 % CI of the paired difference (matched - mismatched
  confidence, learned) lies above 0;
- |temporal_flickering - ground truth's| <= 0.01, and mouth motion comparable: between 50 % and
  200 % of ground truth's mean (a frozen face has 0 %);
- Self-Flow vs baseline at equal steps: reported (the check fails only if it cannot be reported).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/: the `results` package

from results.acceptance import acceptance
from results.clips import tiled
from results.common import LABELS, System, fmt
from results.main import main
from results.metrics import summarise
from results.stats import mean_ci, ratio_of_means, wilson
from results.training_log import read_training_log, wall_at

__all__ = ["LABELS", "System", "acceptance", "fmt", "main", "mean_ci", "ratio_of_means", "read_training_log",
           "summarise", "tiled", "wall_at", "wilson"]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
