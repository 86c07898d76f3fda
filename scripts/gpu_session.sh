#!/usr/bin/env bash
# One short GPU session (issue 10; run on one H200 with 16 cores): four trainings side by side on
# one card, all from the repository root, all for MINUTES of wall-clock:
#   ft        the shipped Self-Flow model fine-tuned on wide voices, channel augmentation and, for
#             audio-driven rows, the phones pocketsphinx hears in the audio (`heard_phones`);
#   scratch-* Self-Flow and the flow-matching baseline from scratch on the same windows, the same
#             step-based schedule, numbered checkpoints every 250 steps: compared at equal steps;
#   vocoder   the learned vocoder, continued from the shipped weights on data-loader workers.
# The heard phones are made beforehand on a machine with pocketsphinx (the GPU machine has none):
#   python -c 'from avgen.train import *; load_heard_phones(load_config("configs/tiny.toml",
#              [...the WINDOWS overrides below..., "heard_phones=devcarry/heard-4096.pt", "data_workers=2"], "model"))'
# Usage: OUT=/some/folder MINUTES=6.5 DEVICE=cuda bash scripts/gpu_session.sh
set -uo pipefail
source "$(dirname "$0")/kept_steps.sh"
OUT=${OUT:-runs/gpu}
MINUTES=${MINUTES:-6.5}
DEVICE=${DEVICE:-cuda}
CLIPS=${CLIPS:-4096}
HEARD=${HEARD:-devcarry/heard-$CLIPS.pt}
WORKERS=${WORKERS:-14}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# 2 s windows are 866 tokens: dense attention's (L, L) mask is under 1 MB, and nothing is compiled.
export AVGEN_ATTENTION_BACKEND=${AVGEN_ATTENTION_BACKEND:-dense}
mkdir -p "$OUT"/{ft,scratch-selfflow,scratch-flow,vocoder}
WINDOWS="corpus_clips=$CLIPS clip_seconds=2.0 wide_voice_prob=0.6 augment_prob=0.5 heard_phones=$HEARD"
COMMON="$WINDOWS codecs=avgen/weights/tiny.safetensors device=$DEVICE threads=2 log_every=25 audio_driven_prob=0.35"
begin=$SECONDS
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# 1. The latent cache, once: workers render the corpus, the codecs encode it; copied to each run.
python scripts/build_latent_cache.py $COMMON "data_workers=$WORKERS" "out=$OUT/ft" \
    --copy-to "$OUT/scratch-selfflow" "$OUT/scratch-flow" || exit 1
echo "cache ready after $((SECONDS - begin)) s"
# 2. Four trainings at once.
python scripts/train_vocoder.py --out "$OUT/vocoder" --minutes "$MINUTES" --device "$DEVICE" --workers 6 --batch 64 \
    --lr 5e-4 --init avgen/weights/vocoder.safetensors --save-every 500 > "$OUT/vocoder/train.log" 2>&1 &
python -m avgen train model --config configs/tiny.toml $COMMON "out=$OUT/ft" objective=selfflow init=avgen/weights/tiny.safetensors lr=0.0001 warmup_steps=100 \
    batch_size=64 steps=100000 "minutes=$MINUTES" checkpoint_every=250 > "$OUT/ft/train.log" 2>&1 &
for objective in selfflow flow; do
    timeout "$(python -c "print(int($MINUTES * 60))")" python -m avgen train model --config configs/tiny.toml $COMMON \
        "out=$OUT/scratch-$objective" objective=$objective batch_size=64 steps=3000 warmup_steps=100 \
        checkpoint_every=250 keep_every=250 > "$OUT/scratch-$objective/train.log" 2>&1 &
done
wait
echo "trainings done after $((SECONDS - begin)) s"
for run in ft scratch-selfflow scratch-flow vocoder; do echo "== $run"; tail -c 600 "$OUT/$run/train.log"; echo; done
# 3. The scratch pair at the largest step both kept.
common=$(largest_common_step "$OUT/scratch-selfflow" model-selfflow "$OUT/scratch-flow" model-flow)
echo "scratch runs compared at step ${common:-none}"
