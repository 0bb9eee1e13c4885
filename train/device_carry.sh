#!/usr/bin/env bash
# Carry more than one device call takes (64 MiB a call, the tracked tree included) across several calls.
#
#   here:   bash train/device_carry.sh split build/carry .device_speech   -> .carry/1, .carry/2, ... (ignored)
#   there:  call k carries .carry/k and runs `bash train/device_carry.sh gather`: its part is kept in $STAGE (on the
#           machine, outside the synced tree, so it outlasts the call); once every part of the manifest is there and
#           its sha256 matches, the tar is unpacked into the repository root (build/carry, .device_speech, ...).
# Calls must follow each other on the same warm machine. Env: PART_MIB (default: 63 MiB less the tracked tree).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${STAGE:-/tmp/carry_stage}

split_parts() {
  local tree part
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  part=${PART_MIB:-$(( (63 * 1048576 - tree) / 1048576 ))}
  [ "$part" -ge 1 ] || { echo "the tracked tree ($tree bytes) leaves no room to carry" >&2; exit 1; }
  grep -qxF "/.carry/" "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
    || echo "/.carry/" >> "$(git rev-parse --git-common-dir)/info/exclude"
  rm -rf .carry && mkdir -p .carry/all
  tar -cf - "$@" | split -b "${part}M" -d -a 2 - .carry/all/part-
  local n=0 f
  for f in .carry/all/part-*; do n=$((n + 1)); mkdir -p ".carry/$n"; mv "$f" ".carry/$n/"; done
  (cd .carry && sha256sum ./*/part-* | sed 's# \./[0-9]*/# #' > manifest) && rmdir .carry/all
  for f in $(seq 1 $n); do cp .carry/manifest ".carry/$f/"; done
  echo "$n part(s) of <= $part MiB (the tracked tree is $((tree / 1048576)) MiB): carry .carry/1 .. .carry/$n, one a call"
  du -sh .carry/*/
}

gather() {
  mkdir -p "$STAGE"
  local d
  for d in .carry/*/; do [ -f "$d/manifest" ] && cp "$d"/part-* "$d/manifest" "$STAGE/"; done
  [ -f "$STAGE/manifest" ] || { echo "no .carry/<k>/ part was carried" >&2; exit 1; }
  local want have
  want=$(wc -l < "$STAGE/manifest"); have=$(ls "$STAGE"/part-* 2>/dev/null | wc -l)
  if [ "$have" -lt "$want" ]; then echo "gathered $have of $want parts: carry the next one"; return 0; fi
  (cd "$STAGE" && sha256sum -c --quiet manifest) || { echo "a carried part is damaged: split and carry again" >&2; exit 1; }
  cat "$STAGE"/part-* | tar -xf -
  echo "gathered all $want parts, unpacked: $(tar -tf <(cat "$STAGE"/part-*) | cut -d/ -f1 | sort -u | tr '\n' ' ')"
}

case "${1:-}" in
  split) shift; split_parts "$@" ;;
  gather) gather ;;
  *) echo "usage: $0 split PATH... | gather" >&2; exit 2 ;;
esac
