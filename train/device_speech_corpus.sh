#!/usr/bin/env bash
# The speech corpus (issues 16, 23), voiced on the GPU machine's CPU cores with espeak-ng and MBROLA.
#
# Here (registry reachable), once:   bash train/device_speech_corpus.sh prepare   (also packs build/carry)
#   -> enables Debian contrib/non-free (train/apt_contrib.sh: MBROLA), then .device_speech/ (ignored): espeak-ng
#      .deb files (dictionaries of the config's languages only), the mbrola binary and the voices the config names,
#      a libpcaudio stub, the wheels the machine lacks; the text JSONL (train/data/speech_texts.jsonl.gz,
#      committed) is built first if missing.
# There (run tool, carry [".device_speech"]):   bash train/device_speech_corpus.sh run [OUT_DIR]
#   -> unpacks espeak-ng + mbrola into a prefix (never into /), voices every clip with all cores into OUT_DIR
#      (default /tmp/speech_corpus; rerun resumes, verifying finished chunks), copies the data card to $OUT when
#      that is set. MAX_TRAIN_HOURS=H voices a deterministic train subset of about H hours, MAX_HELDOUT_HOURS=H caps
#      dev and test each (unseen_dev / unseen_test are always voiced whole). SPLITS=train,dev,unseen_dev voices only
#      those (a training session needs no unseen_test; a later call with more splits resumes).
# All audio is synthetic (espeak-ng, MBROLA diphones), not Wolof speakers. MBROLA fr1/fr4 and libttspico: never.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=${CARRY:-.device_speech}
CONFIG=${CONFIG:-train/configs/data/reading.yaml}
TEXTS=${TEXTS:-train/data/speech_texts.jsonl.gz}
PY=${PY:-python3}

prepare() {
  local py=${PYTHON:-python3}
  [ -n "${PYTHON:-}" ] || [ ! -x .venv/bin/python ] || py=.venv/bin/python
  grep -qxF "/$CARRY/" "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
    || echo "/$CARRY/" >> "$(git rev-parse --git-common-dir)/info/exclude"
  mkdir -p "$CARRY/debs" "$CARRY/whl"
  (cd "$CARRY/debs" && ls espeak-ng_*.deb >/dev/null 2>&1 \
    || apt-get download espeak-ng espeak-ng-data libespeak-ng1 libpcaudio0 libsonic0)
  # MBROLA: the engine and the voices the config names (train + held out); never fr1 / fr4 (reserved)
  local mb
  mb=$("$py" -c "import sys, yaml; v = yaml.safe_load(open(sys.argv[1])).get('voices', {})
names = [*v.get('mbrola_train', []), *v.get('mbrola_heldout', [])] if float(v.get('mbrola_share', 0)) > 0 else []
assert not set(names) & {'fr1', 'fr4'}, 'MBROLA fr1 / fr4 are reserved'
print(' '.join(names))" "$CONFIG")
  if [ -n "$mb" ]; then
    bash train/apt_contrib.sh
    (cd "$CARRY/debs" && for v in mbrola $(printf 'mbrola-%s ' $mb); do
       ls "${v}"_*.deb >/dev/null 2>&1 || apt-get download "$v"; done)
  fi
  local langs
  langs=$("$py" -c "import sys, yaml; c = yaml.safe_load(open(sys.argv[1]))
print('|'.join(sorted({*c['multilingual']['langs'], *c['voices']['wo_readers'], 'en'})))" "$CONFIG")
  # espeak-ng-data holds ~110 language dictionaries (4.2 MB): keep the ones the voice plan reads, so the
  # carry (backbones + this) stays under the device's 64 MiB
  local data_deb
  data_deb=$(ls "$CARRY"/debs/espeak-ng-data_*.deb)
  if [ ! -f "$CARRY/debs/.dicts" ] || [ "$(cat "$CARRY/debs/.dicts")" != "$langs" ]; then
    if [ -f "$CARRY/debs/.dicts" ]; then  # trimmed for other languages: start again from Debian's
      rm "$data_deb"; (cd "$CARRY/debs" && apt-get download espeak-ng-data); data_deb=$(ls "$CARRY"/debs/espeak-ng-data_*.deb)
    fi
    local tmp; tmp=$(mktemp -d)
    dpkg-deb -R "$data_deb" "$tmp/d"
    for f in "$tmp"/d/usr/lib/x86_64-linux-gnu/espeak-ng-data/*_dict; do
      [[ "|$langs|" == *"|$(basename "$f" _dict)|"* ]] || rm "$f"
    done
    dpkg-deb -Zxz -b "$tmp/d" "$data_deb" >/dev/null && rm -rf "$tmp"
    echo "$langs" > "$CARRY/debs/.dicts"
  fi
  # libpcaudio0 needs ALSA + PulseAudio, which that machine lacks: a stub stands in (no sound device is opened)
  mkdir -p "$CARRY/stub"
  cc -shared -fPIC -O2 -Wall -o "$CARRY/stub/libpcaudio.so.0" -Wl,-soname,libpcaudio.so.0 train/pcaudio_stub.c
  # soundfile (FLAC) is not on the machine; it needs cffi
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$CARRY/whl" \
    soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
  [ -f "$TEXTS" ] || "$py" -m wolofmrl.curation.speech_corpus texts --config "$CONFIG" --fetch --out "$TEXTS"
  # the backbones for the device, with the text tower's vocabulary rows of every text the corpus holds
  # (re)packed when the texts changed since the last pack (the stamp holds their sha256)
  local sha; sha=$(sha256sum "$TEXTS" | cut -d' ' -f1)
  if [ ! -f build/carry/bundle.json ] || [ "$(cat build/carry/texts.sha256 2>/dev/null)" != "$sha" ]; then
    local texts_txt; texts_txt=$(mktemp)  # (not in the carry: 9 MB of text)
    "$py" -c "import sys; from wolofmrl.curation.speech_texts import read_texts
texts = {r[k].replace(chr(10), ' ') for r in read_texts(sys.argv[1]) for k in ('transcript', 'wo_text', 'fr_text') if r.get(k)}
open(sys.argv[2], 'w').write(chr(10).join(sorted(texts)))" "$TEXTS" "$texts_txt"
    "$py" -m wolofmrl.portable pack --out build/carry --extra-texts "$texts_txt"
    rm -f "$texts_txt"
    echo "$sha" > build/carry/texts.sha256
  fi
  du -sh "$CARRY" build/carry
}

run() {
  local out=${1:-/tmp/speech_corpus} prefix=${PREFIX:-/tmp/espeak-prefix}
  mkdir -p "$prefix"
  for f in "$CARRY"/debs/*.deb; do dpkg -x "$f" "$prefix"; done
  local lib="$prefix/usr/lib/x86_64-linux-gnu"
  # espeak-ng looks for MBROLA voices in <espeak-ng-data>/mbrola/<voice> first
  if [ -d "$prefix/usr/share/mbrola" ]; then
    mkdir -p "$lib/espeak-ng-data/mbrola"
    for v in "$prefix"/usr/share/mbrola/*/; do
      ln -sfn "$v$(basename "$v")" "$lib/espeak-ng-data/mbrola/$(basename "$v")"; done
  fi
  export PATH="$prefix/usr/bin:$PATH" LD_LIBRARY_PATH="$PWD/$CARRY/stub:$lib:${LD_LIBRARY_PATH:-}" ESPEAK_DATA_PATH="$lib"
  if ! "$PY" -c "import soundfile" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/whl/*.whl
  fi
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  espeak-ng --version
  "$PY" -m wolofmrl.curation.speech_corpus synth --texts "$TEXTS" --out "$out" \
    --config "$CONFIG" --workers "${WORKERS:-$(nproc)}" ${SAMPLE_EVERY:+--sample-every "$SAMPLE_EVERY"} \
    ${MAX_TRAIN_HOURS:+--max-train-hours "$MAX_TRAIN_HOURS"} ${MAX_HELDOUT_HOURS:+--max-heldout-hours "$MAX_HELDOUT_HOURS"} \
    ${SPLITS:+--splits "$SPLITS"}
  if [ -n "${OUT:-}" ]; then cp "$out/DATACARD.md" "$out/card.json" "$OUT/"; fi
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 prepare | run [OUT_DIR]" >&2; exit 2 ;;
esac
