#!/usr/bin/env bash
# The reading recipe (issue 23) on ONE lent H200 (16 cores, 10-minute calls, a bare machine every session), resumable
# across sessions. Several runs train AT ONCE on GPU 0, as background processes (setsid nohup: they outlive the call),
# at equal steps: fusion + CTC reading loss, fusion without it (the issue-16 recipe), dual + CTC (the control, with
# the same token-level supervision on its projected frames). Each is phase 1 (every language -> own transcript) then
# phase 2 (Wolof -> French), phase 2 starting from phase 1's delta.
#
#   here, once a session:  bash train/device_speech_corpus.sh prepare &&
#                          bash train/device_carry.sh split build/carry .device_speech
#     (the backbones and voices, ~73 MiB, beside a ~30 MiB tracked tree: 3 parts, one per call, calls back to back)
#   session 1, calls 1..k-1 (carry .carry/<i>):  bash train/device_carry.sh gather
#   session 1, call k (carry .carry/k):  bash train/device_carry.sh gather && SPLITS=train,dev,unseen_dev \
#       MAX_TRAIN_HOURS=30 MAX_HELDOUT_HOURS=1.5 bash train/device_reading.sh synth && TEXT=committed \
#       RUNS="fusion_ctc fusion" WORKERS=7 SESSION_MINUTES=19 bash train/device_reading.sh train wait 200
#   next calls (no carry):                                  bash train/device_reading.sh wait 540 pack
#   here: mkdir -p .reading_resume && cp <files_at>/reading.tar.part-* <files_at>/reading.manifest .reading_resume/
#   a later session: the same gather + synth, then (carry .reading_resume, <= 4 pieces + the manifest a call)
#                                                            bash train/device_reading.sh resume train
#   (`resume` gathers pieces until the manifest's set is complete, then unpacks, stage-1 choice included; `train`
#    continues the same runs; STEPS=<larger> continues them past the old budget)
#
# Steps: synth (espeak-ng corpus, train/device_speech_corpus.sh; SAMPLE_EVERY / MAX_HOURS pass through; rerun
# resumes), text (stage 1 head || head+LoRA, the better on SENTENCE-only dev -> runs/reading/text), train (launch
# the runs in the background; finished phases are skipped, unfinished ones resume), wait [SECONDS] (progress until
# the runs end or SECONDS pass), pack (-> /tmp/reading_packed: reading.tar.part-* of 15 MiB + reading.manifest, and
# as many of them to $OUT as one call returns: 64 MiB), send (the next pieces, next call), resume (unpack).
# Env: STEPS (per phase, default 4000; a larger value later continues the same runs), STEPS1 (phase 1's, default
# STEPS), RUNS (<strategy>[_ctc][_a<N>][_l<R>]: _ctc the reading loss, _a<N> N transformer layers in the fusion
# adapter, _l<R> a rank-R LoRA in the speech encoder;
# several `train` calls may each set their own env, e.g. PHASE1_FROM for one of them), WORKERS, SESSION_MINUTES
# (training stops this many minutes after `train` was called, leaving time to pack), SEED, EVAL_EVERY,
# PHASE1_FROM (a delta folder, e.g. weights/wolofmrl-fusion-read: every run skips phase 1 and starts phase 2 there),
# PHASE1_SET / PHASE2_SET (space-separated key=value train.py --set overrides for that phase, e.g.
# PHASE2_SET="speech_langs=[all]": phase 2 keeps every language, each clip -> its own transcript, Wolof -> French),
# ALIGN_AUGMENT_PROB (phase 1's share of degraded clips: degrading costs ~20 ms of CPU a clip, decoding ~1.5 ms, so
# 0.8 holds a run to ~50 clips/s per loader worker). TEXT=committed starts from weights/wolofmrl-text instead of
# the text step. All speech is synthetic.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2
CORPUS=${CORPUS:-/tmp/speech_corpus}
TEXT_CORPUS=${TEXT_CORPUS:-/tmp/text_corpus}
ROOT=runs/reading
PACKED=${PACKED:-/tmp/reading_packed}   # pack's pieces, sent over as many calls as they need (see send)
SEND_BYTES=${SEND_BYTES:-67108864}      # what one device call returns: 64 MiB together (8 files)
STEPS=${STEPS:-4000}
SEED=${SEED:-0}
RUNS=${RUNS:-"fusion_ctc fusion dual_ctc"}   # <strategy>[_ctc][_a<N>][_l<R>]
WORKERS=${WORKERS:-4}                         # loader workers per run (3 runs x 4 + 3 main processes ~ 16 cores)
SESSION_MINUTES=${SESSION_MINUTES:-15}        # launch + this + ~3 (final evals) + pack must fit the session
CTC_WEIGHT=${CTC_WEIGHT:-1.0}
EVAL_EVERY=${EVAL_EVERY:-250}
ALIGN_AUGMENT_PROB=${ALIGN_AUGMENT_PROB:-}   # phase 1's augment.prob (default: the config's 0.8); the loaders' CPU cost
LOGS=$ROOT/logs
mkdir -p "$LOGS"

setup() {
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  if ! python3 -c "import soundfile" 2>/dev/null && ls .device_speech/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .device_speech/whl/*.whl
  fi
  [ -f build/backbones/multilingual-e5-small/model.safetensors ] || [ ! -d build/carry ] \
    || python3 -m wolofmrl.portable unpack --bundle build/carry --root build/backbones
}

done_run() {  # run folder, steps: finished when result.json records at least that many steps
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]+'/result.json')); sys.exit(0 if r.get('step',0)>=int(sys.argv[2]) else 1)" \
    "$1" "$2" 2>/dev/null
}

synth() {
  # no shortcut on card.json: a card may cover fewer splits than asked now; a rerun verifies chunks and voices the rest
  local t0=$SECONDS
  timeout "${SYNTH_SECONDS:-560}" bash train/device_speech_corpus.sh run "$CORPUS" > "$LOGS/synth.log" 2>&1
  local rc=$?
  tail -15 "$LOGS/synth.log"
  echo "synth exit $rc in $((SECONDS - t0)) s (124: the time limit; call synth again, it resumes)"
  return $rc
}

text_run() {  # config, name
  done_run "$ROOT/$2" 1 && { echo "skip $2 (done)"; return 0; }
  python3 train/train.py --config "train/configs/$1.yaml" --set "output_dir=$ROOT/$2" --set delta_out=null \
    --set "data.corpus=$TEXT_CORPUS" --set max_train_minutes=3 --set num_workers=4 > "$LOGS/$2.log" 2>&1
  echo "$2 exit $? $(grep -o '"dev_score": [0-9.]*' "$ROOT/$2/result.json" 2>/dev/null)"
}

text() {
  [ -f "$ROOT/text/choice.json" ] && { echo "skip text (chosen: $(cat "$ROOT/text/choice.json" | tr -d '\n '))"; return 0; }
  [ -d "$TEXT_CORPUS/train" ] || python3 -m wolofmrl.curation.speech_corpus text-shards \
    --texts train/data/speech_texts.jsonl.gz --out "$TEXT_CORPUS" > "$LOGS/text_shards.json"
  text_run text_stage text_head & text_run text_stage_lora text_lora & wait
  # chosen on sentence-only dev pairs (dev_score: text_wo2fr_sent); an untracked folder the tree sync leaves alone
  python3 train/choose.py --runs "$ROOT/text_head" "$ROOT/text_lora" --out "$ROOT/text" && cat "$ROOT/text/choice.json"
}

chain() {  # one run in the background: phase 1 then phase 2, each stopping at the session deadline
  # run = <strategy>[_ctc][_a<N>][_l<R>]: _ctc adds the reading loss, _a<N> N transformer layers in the fusion
  # adapter, _l<R> a rank-R LoRA inside the speech encoder
  local run=$1 strategy=${1%%_*} deadline=$2 ctc=0 layers=0 lora=0
  [[ "_$run" == *_ctc* ]] && ctc=$CTC_WEIGHT
  [[ "$run" =~ _a([0-9]+) ]] && layers=${BASH_REMATCH[1]}
  [[ "$run" =~ _l([0-9]+) ]] && lora=${BASH_REMATCH[1]}
  local common=(--set "data.corpus=$CORPUS" --set "seed=$SEED" --set "ctc_weight=$ctc"
                --set "num_workers=$WORKERS" --set save_every=200 --set "eval_every=$EVAL_EVERY" --set delta_out=null
                --set save_model=false)
  [ "$layers" = 0 ] || common+=(--set "model.builder.adapter_layers=$layers")
  [ "$lora" = 0 ] || common+=(--set "model.builder.speech_lora_rank=$lora")
  local phase cfg init out left steps
  for phase in 1 2; do
    local extra=()
    if [ $phase = 1 ]; then
      [ -z "${PHASE1_FROM:-}" ] || { echo "phase 1: from $PHASE1_FROM"; continue; }
      cfg=speech_align_$strategy; init=$ROOT/text; out=$ROOT/align_${run}_s$SEED; steps=${STEPS1:-$STEPS}
      [ -z "$ALIGN_AUGMENT_PROB" ] || extra=(--set "augment.prob=$ALIGN_AUGMENT_PROB")
    else
      cfg=speech_$strategy; init=${PHASE1_FROM:-$ROOT/align_${run}_s$SEED/delta}; out=$ROOT/${run}_s$SEED
      steps=$STEPS
    fi
    local sets=PHASE${phase}_SET kv kvs=()
    read -r -a kvs <<< "${!sets:-}"   # e.g. PHASE2_SET="speech_langs=[all] augment.prob=0.5" (split, never globbed)
    for kv in "${kvs[@]}"; do extra+=(--set "$kv"); done
    extra+=(--set "max_steps=$steps")
    done_run "$out" "$steps" && { echo "skip $out (done)"; continue; }
    # phase 1 is over once phase 2 has begun (a larger STEPS later continues phase 2 only)
    [ $phase = 1 ] && [ -f "$ROOT/${run}_s$SEED/log.jsonl" ] && { echo "skip $out (phase 2 begun)"; continue; }
    left=$(( (deadline - $(date +%s)) / 60 - 2 ))   # minutes left, less the final evaluation and save
    [ "$left" -ge 1 ] || { echo "no time left for $out"; return 0; }
    echo "$(date +%T) start $out (guard $left min)"
    python3 train/train.py --config "train/configs/$cfg.yaml" "${common[@]}" "${extra[@]}" --set "output_dir=$out" \
      --set "init_delta=$init" --set "max_train_minutes=$left" >> "$LOGS/$(basename "$out").log" 2>&1
    echo "$(date +%T) $out exit $?"
    done_run "$out" "$steps" || return 0   # stopped by the guard: phase 2 waits for the next session
  done
}

train() {
  if [ "${TEXT:-}" = committed ] && [ ! -f "$ROOT/text/delta.safetensors" ]; then
    mkdir -p "$ROOT/text" && cp weights/wolofmrl-text/* "$ROOT/text/" && echo "stage 1: the committed weights/wolofmrl-text"
  fi
  [ -f "$ROOT/text/delta.safetensors" ] || { echo "no $ROOT/text: run the text step first" >&2; return 1; }
  [ -f "$CORPUS/card.json" ] || { echo "the corpus $CORPUS is not complete: call synth again" >&2; return 1; }
  local deadline=$(( $(date +%s) + SESSION_MINUTES * 60 )) run
  for run in $RUNS; do
    if [ -f "$LOGS/$run.pid" ] && kill -0 "$(cat "$LOGS/$run.pid")" 2>/dev/null; then echo "$run running"; continue; fi
    CUDA_VISIBLE_DEVICES=0 setsid nohup bash "$0" chain "$run" "$deadline" > "$LOGS/chain_$run.log" 2>&1 &
    echo $! > "$LOGS/$run.pid"
    echo "launched $run (pid $!, stops by $(date -d @"$deadline" +%T))"
  done
}

progress() {
  for f in "$ROOT"/*/log.jsonl; do
    [ -f "$f" ] || continue
    python3 - "$f" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [l for l in lines if l.get("event") == "train"]
batch = next((l["config"]["batch_size"] for l in lines if l.get("event") == "start"), 1)
evals = [l for l in lines if l.get("event") == "eval"]
name = sys.argv[1].split("/")[-2]
if train:
    t = train[-1]
    extra = f" ctc {t['ctc']:.3f} skipped {t.get('ctc_skipped', 0):.0f}" if "ctc" in t else ""
    print(f"{name}: step {t['step']} loss {t['loss']:.3f} {t['samples_per_s']:.0f} samples/s "
          f"({t['samples_per_s'] / batch:.2f} steps/s){extra}")
if evals:
    e = evals[-1]
    keys = [k for k in e if k.endswith("/R@10/384") or k.startswith("dev/cer_")]
    print(f"  eval step {e['step']} hours {e.get('hours_seen')}: " + ", ".join(f"{k} {e[k]}" for k in keys))
EOF
  done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
}

wait_runs() {  # SECONDS: until every launched run has ended or SECONDS have passed
  local until=$(( SECONDS + ${1:-540} )) alive
  while :; do
    alive=0
    for pid in "$LOGS"/*.pid; do [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && alive=$((alive + 1)); done
    echo "== $(date +%T): $alive run(s) alive"; progress
    [ $alive = 0 ] || [ $SECONDS -ge $until ] && break
    sleep $(( until - SECONDS < 120 ? (until - SECONDS > 5 ? until - SECONDS : 5) : 120 ))
  done
  tail -3 "$LOGS"/chain_*.log 2>/dev/null
}

pack() {  # pack once into $PACKED (it survives between calls on a warm machine), then send what one call returns
  for pid in "$LOGS"/*.pid; do [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && echo "warning: $pid still runs; pack holds its last checkpoint"; done
  rm -rf "$PACKED" && python3 train/reading_pack.py pack --root "$ROOT" --out "$PACKED" && send
}
send() {  # copy to $OUT the manifest + the pieces not yet sent, as far as one call returns (8 files, 64 MiB together);
  # RESEND="<piece> ..." sends those pieces again (one that a call did not bring back), whatever was sent before
  local dest=${OUT:-/tmp/reading_send} f size used files=1 left=()
  [ -f "$PACKED/reading.manifest" ] || { echo "send: nothing packed in $PACKED: run pack first" >&2; return 1; }
  mkdir -p "$dest" && cp "$PACKED/reading.manifest" "$dest/"
  used=$(stat -c %s "$PACKED/reading.manifest")
  for f in "$PACKED"/reading.tar.part-*; do
    [ -z "${RESEND:-}" ] && grep -qxF "$(basename "$f")" "$PACKED/sent" 2>/dev/null && continue
    [ -n "${RESEND:-}" ] && [[ " $RESEND " != *" $(basename "$f") "* ]] && continue
    size=$(stat -c %s "$f")
    if [ $((used + size)) -le "$SEND_BYTES" ] && [ "$files" -lt 8 ]; then
      cp "$f" "$dest/" && basename "$f" >> "$PACKED/sent" && used=$((used + size)) && files=$((files + 1))
    else
      left+=("$(basename "$f")")
    fi
  done
  ls -la "$dest"
  if [ ${#left[@]} -gt 0 ]; then
    echo "send: ${#left[@]} piece(s) still to come (${left[*]}): call \`bash train/device_reading.sh send\` next, on this machine"
  else
    echo "send: every piece sent (a piece that did not arrive: RESEND=\"reading.tar.part-ab ...\" bash train/device_reading.sh send)"
  fi
}
resume() { python3 train/reading_pack.py unpack --pieces .reading_resume --root "$ROOT"; }

if [ "${1:-}" = chain ]; then setup; chain "$2" "$3"; exit; fi
setup
while [ $# -gt 0 ]; do
  step=$1; shift; t0=$SECONDS
  case $step in
    synth) synth ;;
    text) text ;;
    train) train ;;
    wait) if [[ "${1:-}" =~ ^[0-9]+$ ]]; then wait_runs "$1"; shift; else wait_runs; fi ;;
    pack) pack ;;
    send) send ;;
    resume) resume ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
  echo "== step $step: $((SECONDS - t0)) s"
done
