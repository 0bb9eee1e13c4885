#!/usr/bin/env bash
# Issue 20's speed run on one lent H200, in one call (<= 8 min): end to end vs forward-only throughput (text,
# speech), index build for 100k and 1M passages, query latency (audio file -> top 10) vs the Whisper cascade.
#
#   bash eval/device_speed.sh prepare    # here (registry reachable): .device_speed/ (ignored): wheels the machine
#                                        # lacks (faiss-cpu, soundfile, cffi, pycparser) + the backbone bundle
#   bash eval/device_speed.sh run        # there (run tool, carry [".device_speed"]): results -> $OUT
#   DEVICE=cpu THREADS=2 QUICK=1 MODEL=/work/main/checkpoints/wolofmrl-base PY=.venv/bin/python \
#     bash eval/device_speed.sh run      # here: the same script end to end on 2 CPU threads, tiny sizes
#
# The bundle (wolofmrl.portable pack: Whisper encoder fp16, mE5 exact Q4_0 + the vocabulary rows of the French
# texts the benchmark reads; the Whisper-base encoder as zeros, filled with seeded random values there:
# eval/speed_carry.py) is unpacked to $BACKBONES_DIR (never build/); the model is built with the committed delta (DELTA=auto).
# Speed does not depend on the values. Passages are real French text; clips are SYNTHETIC.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=${CARRY:-.device_speed}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-/tmp/wolofmrl-speed}
DELTA=${DELTA:-auto}
BACKBONES_DIR=${BACKBONES_DIR:-/tmp/speed_backbones}  # unpacked here (and randomized): a private folder
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

prepare() {
  local py=${PYTHON:-python3}
  [ -n "${PYTHON:-}" ] || [ ! -x .venv/bin/python ] || py=.venv/bin/python
  grep -qxF "/$CARRY/" "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
    || echo "/$CARRY/" >> "$(git rev-parse --git-common-dir)/info/exclude"
  mkdir -p "$CARRY/whl"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$CARRY/whl" \
    faiss-cpu==1.15.1 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
  if [ ! -f "$CARRY/carry/bundle.json" ]; then
    "$py" - "$CARRY/carry" "${BACKBONES:-build/backbones}" <<'EOF'
import gzip, json, sys
from wolofmrl.portable import pack
texts = sorted({r["fr_text"] for r in map(json.loads, gzip.open("train/data/speech_texts.jsonl.gz", "rt"))
                if r.get("fr_text")})
texts.append("Quels sont les horaires d'ouverture du marché central le samedi ?")
print(json.dumps(pack(sys.argv[1], texts, backbone_root=sys.argv[2])))
EOF
  fi
  # the Whisper encoder (38 MB) does not fit beside faiss: zeros here, random values there (eval/speed_carry.py)
  [ -f "$CARRY/carry/WHISPER_RANDOM" ] || "$py" eval/speed_carry.py strip "$CARRY/carry"
  du -sh "$CARRY" "$CARRY"/whl "$CARRY"/carry
}

setup() {
  if ! "$PY" -c "import faiss, soundfile" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$CARRY"/whl/*.whl || exit 1
  fi
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  if [ ! -f "$MODEL/config.json" ]; then  # backbones go to a private folder: never over a shared build/
    [ -f "$BACKBONES_DIR/multilingual-e5-small/model.safetensors" ] \
      || "$PY" -m wolofmrl.portable unpack --bundle "$CARRY/carry" --root "$BACKBONES_DIR" || exit 1
    if [ -f "$CARRY/carry/WHISPER_RANDOM" ] && [ ! -f "$BACKBONES_DIR/whisper-base/WHISPER_RANDOM" ]; then
      "$PY" eval/speed_carry.py randomize "$BACKBONES_DIR/whisper-base" || exit 1
    fi
    "$PY" -m wolofmrl.build --out "$MODEL" --delta "$DELTA" --speech "$BACKBONES_DIR/whisper-base" \
      --text "$BACKBONES_DIR/multilingual-e5-small" || exit 1
  fi
  "$PY" -c "import torch, faiss; print('torch', torch.__version__, 'faiss', faiss.__version__,
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
}

run() {
  local t0=$SECONDS out_dir=${OUT:-runs/speed}
  mkdir -p "$out_dir"
  setup
  echo "setup done in $((SECONDS - t0)) s"
  local args=(--model "$MODEL" --device "$DEVICE" --out "$out_dir/speed_${DEVICE}.md" --latency)
  if [ -n "${QUICK:-}" ]; then
    args+=(--n-text 256 --n-speech 8 --min-seconds 1 --index-sizes 2000 --latency-runs 3)
  else
    args+=(--n-text 65536 --n-speech 2048 --min-seconds 3 --index-sizes 100000,1000000)
  fi
  [ -z "${THREADS:-}" ] || args+=(--threads "$THREADS")
  "$PY" eval/throughput.py "${args[@]}" 2>&1 | grep --line-buffered -v -E "it/s\]|s/it\]" | tee "$out_dir/speed_${DEVICE}.log"
  local rc=${PIPESTATUS[0]}
  echo "throughput exit $rc; total $((SECONDS - t0)) s"
  return "$rc"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare | run" >&2; exit 2 ;;
esac
