#!/usr/bin/env bash
# Is the tiny transformer too small for the mouth (docs/results.md, "Where the gap is")? The CPU form
# of gpu_mouth.sh's capacity arm: the tiny transformer (3.2M parameters) and a larger one (hidden 288,
# depth 8: 9.0M) trained from scratch on the same 1024 windows and the teacher's codecs, flow loss,
# the same 2000-step schedule (where the tiny one reached its plateau, 0.6x ground truth, in session
# 2), a numbered checkpoint every 250 steps, one thread each, side by side in the background.
# ~2 s a step for the tiny one and ~4 s for the other on this 2-core CPU: a session does not finish
# it; rerun this script and both resume from their last state (every 50 steps). Then, at each step
# both kept:  python scripts/make_results.py --baseline runs/capacity-tiny/model-flow-S.safetensors \
#                 --selfflow runs/capacity-wide/model-flow-S.safetensors --clips 32 --steps 8 --cfg 3 --shift 1
# (both are flow-matching runs; the labels are the script's). Stop both before CI runs: kill them by
# the pids this prints.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
PY=${PYTHON:-python}
[[ -z ${PYTHON:-} && -x .venv/bin/python ]] && PY=.venv/bin/python
COMMON="objective=flow codecs=avgen/weights/teacher/tiny.safetensors corpus_clips=1024 clip_seconds=2.0 steps=2000
        keep_every=250 checkpoint_every=50 threads=1"
mkdir -p "$RUNS/capacity-tiny" "$RUNS/capacity-wide"
if ! ls "$RUNS"/capacity-tiny/latents-*.pt > /dev/null 2>&1; then
    $PY scripts/build_latent_cache.py $COMMON data_workers=2 "out=$RUNS/capacity-tiny" --copy-to "$RUNS/capacity-wide"
fi
nohup $PY -m avgen train model --config configs/tiny.toml $COMMON "out=$RUNS/capacity-tiny" \
    >> "$RUNS/capacity-tiny/train.out" 2>&1 &
echo "tiny: pid $!"
nohup $PY -m avgen train model --config configs/tiny.toml $COMMON hidden=288 depth=8 "out=$RUNS/capacity-wide" \
    >> "$RUNS/capacity-wide/train.out" 2>&1 &
echo "wide: pid $!"
