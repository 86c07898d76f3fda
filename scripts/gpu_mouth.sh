#!/usr/bin/env bash
# Issue 10's remaining lever, prepared for one GPU call (one H200, 16 cores; ~9 minutes at the defaults):
# does a flow loss weighted to the moving tokens (TrainConfig.motion_weight, docs/training.md) give the
# shipped model a surer mouth once it is trained at GPU scale? Side by side on one card:
#   1. the latent cache of CLIPS 2 s windows, once (render workers, the teacher's codecs);
#   2. the teacher (avgen/weights/teacher) fine-tuned for MINUTES_FT with motion_weight=4 and, as the
#      control, with motion_weight=0: everything else equal;
#   3. each fine-tuned teacher distilled for MINUTES_DISTIL (objective=distill, as the shipped student);
#   4. each student made a shippable file (scripts/ship_weights.py) and split into parts under 15 MiB
#      (a device call returns files of at most 16 MiB), with the training logs, into $OUT.
# Back on the CPU: `cat mw4.part-* > mw4.safetensors`, then scripts/make_results.py --baseline mw0
# --selfflow mw4 (and scripts/audio_driven.py on each) against the shipped weights.
# The heard phones are made beforehand where pocketsphinx is (the GPU machine has none; ~0.2 s a clip
# on 2 CPU cores), then carried (`devcarry/` is ignored by git: name it in the call's carry):
#   PREPARE=1 [CLIPS=4096] bash scripts/gpu_mouth.sh
# Usage: OUT=/some/folder [MINUTES_FT=3 MINUTES_DISTIL=3.5 CLIPS=4096 DEVICE=cuda] bash scripts/gpu_mouth.sh
set -uo pipefail
OUT=${OUT:-runs/gpu-mouth}
RUNS=${RUNS:-/tmp/gpu-mouth}  # checkpoints and caches: large, not returned
MINUTES_FT=${MINUTES_FT:-3}
MINUTES_DISTIL=${MINUTES_DISTIL:-3.5}
DEVICE=${DEVICE:-cuda}
CLIPS=${CLIPS:-4096}
BATCH=${BATCH:-64}
HEARD=${HEARD:-devcarry/heard-$CLIPS.pt}
WORKERS=${WORKERS:-14}
TEACHER=avgen/weights/teacher/tiny.safetensors
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export AVGEN_ATTENTION_BACKEND=${AVGEN_ATTENTION_BACKEND:-dense}  # 2 s windows: a small dense mask, nothing compiled
mkdir -p "$OUT" "$RUNS"/{mw0,mw4,distill-mw0,distill-mw4}
WINDOWS="corpus_clips=$CLIPS clip_seconds=2.0 wide_voice_prob=0.6 augment_prob=0.5 heard_phones=$PWD/$HEARD"
COMMON="$WINDOWS codecs=$TEACHER device=$DEVICE threads=2 log_every=25 audio_driven_prob=0.35"
begin=$SECONDS
if [[ ${PREPARE:-0} == 1 ]]; then
    python -c "import sys; from avgen.train import load_config, load_heard_phones
load_heard_phones(load_config('configs/tiny.toml', sys.argv[1:], 'model'))" $WINDOWS
    exit
fi
[[ -f $HEARD ]] || { echo "no $HEARD: make the heard phones first (see the top of this script)"; exit 2; }
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# 1. The latent cache, once, copied to every run.
python scripts/build_latent_cache.py $COMMON "data_workers=$WORKERS" "out=$RUNS/mw0" \
    --copy-to "$RUNS/mw4" "$RUNS/distill-mw0" "$RUNS/distill-mw4" || exit 1
echo "cache ready after $((SECONDS - begin)) s"
# 2. The two teacher fine-tunes at once.
for w in 0 4; do
    python -m avgen train model --config configs/tiny.toml $COMMON "out=$RUNS/mw$w" objective=selfflow \
        "init=$TEACHER" lr=0.0001 warmup_steps=50 "batch_size=$BATCH" steps=1000000 "minutes=$MINUTES_FT" \
        checkpoint_every=250 "motion_weight=$w" > "$RUNS/mw$w/train.log" 2>&1 &
done
wait
echo "fine-tunes done after $((SECONDS - begin)) s"
# 3. Each distilled, at once.
for w in 0 4; do
    python -m avgen train model --config configs/tiny.toml $COMMON "out=$RUNS/distill-mw$w" objective=distill \
        "init=$RUNS/mw$w/model-selfflow.safetensors" lr=0.00015 warmup_steps=50 "batch_size=$BATCH" \
        steps=1000000 "minutes=$MINUTES_DISTIL" checkpoint_every=250 > "$RUNS/distill-mw$w/train.log" 2>&1 &
done
wait
echo "distillations done after $((SECONDS - begin)) s"
# 4. Shippable students in parts, and the logs.
status=0
for w in 0 4; do
    for run in "mw$w" "distill-mw$w"; do echo "== $run"; tail -c 400 "$RUNS/$run/train.log"; echo; done
    student="$RUNS/distill-mw$w/model-distill.safetensors"
    if [[ -f $student ]] && python scripts/ship_weights.py "$student" "$RUNS/mw$w.safetensors" --cfg 3 --chunk-seconds 8; then
        split -b 15M -d "$RUNS/mw$w.safetensors" "$OUT/mw$w.part-"
    else
        echo "no student for motion_weight=$w"; status=1
    fi
done
tail -n 3 "$RUNS"/mw{0,4}/*.jsonl "$RUNS"/distill-mw{0,4}/*.jsonl > "$OUT/logs.txt" 2>/dev/null
echo "done after $((SECONDS - begin)) s"
exit $status
