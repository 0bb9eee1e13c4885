#!/usr/bin/env bash
# The quality recipe (issue 16), one device call per step (each fits a 10-minute call: max_train_minutes 4-7).
#
#   bash train/recipe.sh text                 # stage 1: head, head + LoRA; keeps the better by dev -> weights/wolofmrl-text
#   bash train/recipe.sh align  fusion 0      # stage 2 phase 1: multilingual speech -> own transcript (seed 0)
#   bash train/recipe.sh finish fusion 0      # stage 2 phase 2: Wolof speech -> French (+ distillation), from phase 1
#   bash train/recipe.sh align  dual 0; bash train/recipe.sh finish dual 0       # same data and steps
#   # ... seeds 1 and 2; then: python train/choose.py --runs runs/speech_fusion_s{0,1,2} --out weights/wolofmrl-fusion
#
# Extra KEY=VALUE arguments after the seed become --set overrides (e.g. data.corpus=build/carry/corpus
# max_train_minutes=5 num_workers=30). Outputs: runs/<config>_s<seed>/ (log.jsonl, result.json, delta/).
set -euo pipefail
step=${1:?usage: recipe.sh text | align STRATEGY SEED | finish STRATEGY SEED [KEY=VALUE ...]}
shift
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 NCCL_NVLS_ENABLE=0
launch() {  # config, then overrides
  local cfg=$1; shift
  local args=()
  for kv in "$@"; do args+=(--set "$kv"); done
  accelerate launch --config_file train/configs/accelerate/single_gpu.yaml train/train.py \
    --config "train/configs/$cfg.yaml" "${args[@]}" 2>&1 | grep --line-buffered -v -E "it/s\]|s/it\]"
}
case $step in
  text)
    launch text_stage "$@"
    launch text_stage_lora "$@"
    python3 train/choose.py --runs runs/text_stage runs/text_stage_lora --out weights/wolofmrl-text ;;
  align|finish)
    strategy=${1:?strategy fusion|dual}; seed=${2:?seed}; shift 2
    cfg=$([ "$step" = align ] && echo "speech_align_$strategy" || echo "speech_$strategy")
    launch "$cfg" "seed=$seed" "$@" ;;
  *) echo "unknown step $step (text | align | finish)" >&2; exit 2 ;;
esac
