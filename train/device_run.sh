#!/usr/bin/env bash
# Train on a lent GPU machine that has torch/transformers/accelerate but no asset wheels and no registry.
# What it needs travels with the working tree (64 MiB): the backbone + corpus bundle made here by
#   python -m wolofmrl.portable pack --out build/carry --corpus data/offline_small --with-audio
# and three small wheels in .whl/ (soundfile, cffi, pycparser for the machine's Python).
#
#   bash train/device_run.sh fusion   # text stage (Matryoshka head) + speech fusion      (~8 min on an H100)
#   bash train/device_run.sh dual     # speech dual (+ the text stage again if absent) + GPU speed benchmark
#
# Outputs go to runs/device/ (git-ignored) and, packed as one tarball, to $OUT when set.
set -euo pipefail
phase=${1:?usage: device_run.sh fusion|dual}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
python3 - <<'EOF'
import torch, transformers, accelerate
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| transformers",
      transformers.__version__, "| accelerate", accelerate.__version__)
EOF
[ -f build/backbones/multilingual-e5-small/model.safetensors ] || python3 -m wolofmrl.portable unpack --bundle build/carry --root build/backbones
corpus=build/carry/corpus
out=runs/device
mkdir -p "$out"
train() {  # config, then --set overrides
  local cfg=$1; shift
  local args=()
  for kv in "$@"; do args+=(--set "$kv"); done
  accelerate launch --config_file train/configs/accelerate/single_gpu.yaml train/train.py --config "$cfg" \
    --set data.corpus=$corpus "${args[@]}" 2>&1 | grep -v -E "it/s\]|s/it\]" || return 1
}
if [ ! -f "$out/weights/wolofmrl-text/delta.safetensors" ]; then
  train train/configs/text_stage.yaml output_dir=$out/text_stage delta_out=$out/weights/wolofmrl-text \
    max_train_minutes=1.5 num_workers=8
fi
if [ "$phase" = fusion ]; then
  train train/configs/speech_fusion.yaml output_dir=$out/speech_fusion delta_out=$out/weights/wolofmrl-fusion \
    init_delta=$out/weights/wolofmrl-text max_train_minutes=4.5 num_workers=12
else
  train train/configs/speech_dual.yaml output_dir=$out/speech_dual delta_out=$out/weights/wolofmrl-dual \
    init_delta=$out/weights/wolofmrl-text max_train_minutes=4.5 num_workers=12
  if [ -f "$out/weights/wolofmrl-fusion/delta.safetensors" ] && [ -f eval/bench.py ]; then
    python3 -m wolofmrl.build --out "$out/model-fusion" --delta "$out/weights/wolofmrl-fusion" \
      --speech build/backbones/whisper-base --text build/backbones/multilingual-e5-small
    python3 eval/bench.py --model "$out/model-fusion" --out "$out/bench" --device cuda || echo "bench failed"
  fi
fi
if [ -n "${OUT:-}" ]; then
  tar -czf "$OUT/device-$phase.tar.gz" --exclude='*/checkpoints/*' --exclude='model-*' --exclude='*.pt' "$out"
  ls -la "$OUT"
fi
