#!/usr/bin/env bash
# Issue 22 in ONE device call on a 2-GPU machine (kind nvidia-h200-x2; ask the device tool's `status` first):
#   1. NCCL exactness: gathered-negatives InfoNCE + Matryoshka loss on 2 processes vs one process on the full batch
#      (tests/dist_worker.py --device cuda; tolerance 1e-4 x max |grad|) -> $OUT/nccl_exactness.{json,log}
#   2. like-for-like scaling: the phase-1 recipe (train/configs/speech_align_fusion.yaml), same global batch, data,
#      seed and steps, on 1 GPU then on 2 GPUs (per-GPU batch halved; negatives all-gathered, so the loss is the
#      same function) -> samples/s, scaling efficiency, peak memory, dev metric at the end -> $OUT/scaling.{md,json}
# Carries: build/carry (python -m wolofmrl.portable pack) and .device_speech (bash train/device_speech_corpus.sh
# prepare). The corpus is a sampled subset voiced first (synthetic espeak-ng speech, not Wolof speakers).
#   tool call: run(kind="nvidia-h200-x2", carry=["build/carry", ".device_speech"], timeout_s=600,
#                  command="bash train/device_multigpu.sh")
# Environment knobs: STEPS (200), GLOBAL_BATCH (256), SAMPLE_EVERY (8: voice every 8th clip), MINUTES (3 per run).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1   # never NVLink multicast
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/multigpu}; mkdir -p "$OUT"
STEPS=${STEPS:-200}; GLOBAL_BATCH=${GLOBAL_BATCH:-256}; MINUTES=${MINUTES:-3}
CORPUS=${CORPUS:-/tmp/speech_corpus}
n_gpu=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$n_gpu" -lt 2 ]; then echo "needs 2 GPUs, this machine has $n_gpu" >&2; exit 2; fi

echo "== 1. NCCL exactness (2 processes vs 1 on the full batch)"
torchrun --standalone --nproc_per_node 2 tests/dist_worker.py "$OUT/nccl_exactness.json" --device cuda \
  2>&1 | grep -v -i warn | tee "$OUT/nccl_exactness.log"
exact_rc=${PIPESTATUS[0]}

echo "== 2. like-for-like scaling"
[ -f "$CORPUS/card.json" ] || SAMPLE_EVERY=${SAMPLE_EVERY:-8} bash train/device_speech_corpus.sh run "$CORPUS" \
  > "$OUT/synth.log" 2>&1 || { tail -20 "$OUT/synth.log"; exit 1; }
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
[ -f build/backbones/multilingual-e5-small/model.safetensors ] \
  || python3 -m wolofmrl.portable unpack --bundle build/carry --root build/backbones
cores=$(nproc)
for n in 1 2; do
  accel=$([ "$n" = 1 ] && echo single_gpu || echo multi_gpu)
  accelerate launch --config_file "train/configs/accelerate/$accel.yaml" --num_processes "$n" train/train.py \
    --config train/configs/speech_align_fusion.yaml --set "output_dir=runs/scale_${n}gpu" --set "data.corpus=$CORPUS" \
    --set "batch_size=$((GLOBAL_BATCH / n))" --set "max_steps=$STEPS" --set "max_train_minutes=$MINUTES" \
    --set "num_workers=$((cores / n - 1))" --set eval_every=0 --set save_every=0 --set resume=none --set seed=0 \
    > "$OUT/scale_${n}gpu.log" 2>&1
  echo "$n GPU(s): exit $?"; grep -v -E "it/s\]|s/it\]" "$OUT/scale_${n}gpu.log" | tail -3
done
python3 train/scaling_report.py runs/scale_1gpu runs/scale_2gpu --json "$OUT/scaling.json" | tee "$OUT/scaling.md"
exit "$exact_rc"
