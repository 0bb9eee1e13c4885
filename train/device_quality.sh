#!/usr/bin/env bash
# The quality recipe (issue 16) on a lent 2-GPU machine, in as few device calls as the 10-minute limit allows.
# Every step skips what a previous call on the same (still warm) machine already finished, so the same command
# line can be sent again; fusion trains on GPU 0 while dual trains on GPU 1 (same data, steps and loss).
#
#   bash train/device_quality.sh synth text s0        # call 1: voice the corpus, stage 1, seed 0 phase 1
#   bash train/device_quality.sh synth text s0 s1     # call 2: ... (finished steps are skipped)
#   bash train/device_quality.sh pack                 # copy logs + deltas to $OUT
#
# Steps: synth (espeak-ng corpus on all cores, train/device_speech_corpus.sh), text (stage 1: head || head+LoRA,
# keep the better by dev), sN (seed N: phase 1 alignment then phase 2 Wolof->French, fusion || dual), pack.
# Carries: build/carry (python -m wolofmrl.portable pack), .device_speech (bash train/device_speech_corpus.sh
# prepare). Outputs: runs/ (ignored) and, with pack, $OUT/quality.tar.gz.part-* (15 MiB pieces). All speech is
# synthetic (espeak-ng).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
CORPUS=${CORPUS:-/tmp/speech_corpus}
TEXT_CORPUS=${TEXT_CORPUS:-/tmp/text_corpus}
STEPS=${STEPS:-400}                 # per phase, equal for fusion and dual
PHASE_MINUTES=${PHASE_MINUTES:-3}   # guard per phase (the step budget normally ends it first)
WORKERS=${WORKERS:-14}
LOGS=runs/device_logs
mkdir -p "$LOGS"

setup() {
  if ! python3 -c "import soundfile" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .device_speech/whl/*.whl
  fi
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  [ -f build/backbones/multilingual-e5-small/model.safetensors ] \
    || python3 -m wolofmrl.portable unpack --bundle build/carry --root build/backbones
  python3 -c "import torch; print('gpus', torch.cuda.device_count(), torch.cuda.get_device_name(0), 'torch', torch.__version__)"
}

train_on() {  # GPU, config, name, then --set overrides
  local gpu=$1 cfg=$2 name=$3; shift 3
  local args=()
  for kv in "$@"; do args+=(--set "$kv"); done
  if [ -f "runs/$name/result.json" ]; then echo "skip $name (done)"; return 0; fi
  CUDA_VISIBLE_DEVICES=$gpu python3 train/train.py --config "train/configs/$cfg.yaml" --set "output_dir=runs/$name" \
    --set "num_workers=$WORKERS" "${args[@]}" > "$LOGS/$name.log" 2>&1
  local rc=$?
  grep -v -E "it/s\]|s/it\]" "$LOGS/$name.log" | tail -4
  echo "$name exit $rc"
  return $rc
}

synth() {
  [ -f "$CORPUS/card.json" ] && { echo "skip synth (done)"; return 0; }
  local t0=$SECONDS
  bash train/device_speech_corpus.sh run "$CORPUS" > "$LOGS/synth.log" 2>&1
  local rc=$?
  tail -30 "$LOGS/synth.log"
  echo "synth exit $rc in $((SECONDS - t0)) s"
  return $rc
}

text() {
  [ -d "$TEXT_CORPUS/train" ] || python3 -m wolofmrl.curation.speech_corpus text-shards \
    --texts train/data/speech_texts.jsonl.gz --out "$TEXT_CORPUS" | tee "$LOGS/text_shards.json"
  train_on 0 text_stage text_stage "data.corpus=$TEXT_CORPUS" "max_train_minutes=2" &
  train_on 1 text_stage_lora text_stage_lora "data.corpus=$TEXT_CORPUS" "max_train_minutes=2" &
  wait
  choose_text
}

choose_text() {  # stage 1's better run -> weights/wolofmrl-text (again in every call: the tree sync re-sends the
  # committed weights/wolofmrl-text over what an earlier call chose)
  if [ -f runs/text_stage/result.json ] && [ -f runs/text_stage_lora/result.json ]; then
    python3 train/choose.py --runs runs/text_stage runs/text_stage_lora --out weights/wolofmrl-text
  fi
}

seed() {  # N: phase 1 then phase 2, fusion on GPU 0 || dual on GPU 1
  local s=$1 common=("data.corpus=$CORPUS" "seed=$1" "max_steps=$STEPS" "max_train_minutes=$PHASE_MINUTES")
  choose_text
  for strategy in fusion dual; do
    gpu=$([ $strategy = fusion ] && echo 0 || echo 1)
    ( train_on "$gpu" "speech_align_$strategy" "speech_align_${strategy}_s$s" "${common[@]}" \
      && train_on "$gpu" "speech_$strategy" "speech_${strategy}_s$s" "${common[@]}" \
           "init_delta=runs/speech_align_${strategy}_s$s/delta" ) &
  done
  wait
}

pack() {  # logs, results and deltas; stage-2 deltas without the stage-1 tensors they repeat (the text delta goes once)
  local dest=/tmp/pack && rm -rf $dest && mkdir -p $dest
  cp -r "$LOGS" $dest/logs
  [ -f "$CORPUS/card.json" ] && cp "$CORPUS/card.json" "$CORPUS/DATACARD.md" $dest/
  cp -r weights/wolofmrl-text $dest/wolofmrl-text 2>/dev/null
  for run in runs/*/; do
    run=${run%/}; name=$(basename "$run"); [ -f "$run/result.json" ] || continue
    mkdir -p "$dest/$name"; cp "$run/result.json" "$run/log.jsonl" "$dest/$name/" 2>/dev/null
    [ -d "$run/delta" ] && python3 - "$run/delta" "$dest/$name/delta" <<'EOF'
import json, shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("delta.safetensors"))
delta = load_file(src / "delta.safetensors")
# the stage-1 delta this run started from: the chosen text run's own copy (a later device call's tree sync may
# remove weights/wolofmrl-text, which is tracked in git and so re-sent as the checkout has it)
choice = Path("weights/wolofmrl-text/choice.json")
runs = [json.loads(choice.read_text())["kept"]] if choice.is_file() else ["runs/text_stage_lora", "runs/text_stage"]
base = {}
for run in runs:
    if (Path(run) / "delta/delta.safetensors").is_file():
        base = load_file(Path(run) / "delta/delta.safetensors")
        break
kept = {k: v for k, v in delta.items() if not (k in base and base[k].shape == v.shape and bool((base[k] == v).all()))}
save_file(kept, dst / "delta.safetensors")
(dst / "STRIPPED").write_text(f"{len(delta) - len(kept)} tensors equal to weights/wolofmrl-text left out\n")
EOF
  done
  # what comes back: at most 8 files of at most 16 MiB each
  tar -czf /tmp/quality.tar.gz -C $dest . && split -b 15m /tmp/quality.tar.gz "${OUT:-/tmp}/quality.tar.gz.part-" \
    && ls -la "${OUT:-/tmp}"   # here: cat quality.tar.gz.part-* | tar -xzf -
}

setup
for step in "$@"; do
  t0=$SECONDS
  case $step in
    synth) synth ;;
    text) text ;;
    s[0-9]) seed "${step#s}" ;;
    pack) pack ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
  echo "== step $step: $((SECONDS - t0)) s"
done
