# Sourced by the training scripts: the steps at which runs kept numbered checkpoints (PREFIX-STEP.safetensors).
kept_steps() { ls "$1" | grep -oP "^$2-\K[0-9]+(?=\.safetensors$)" | sort; }
# largest_common_step DIR_A PREFIX_A DIR_B PREFIX_B: the largest step both runs kept (empty if none).
largest_common_step() { comm -12 <(kept_steps "$1" "$2") <(kept_steps "$3" "$4") | sort -n | tail -1; }
