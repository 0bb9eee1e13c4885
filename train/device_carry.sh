#!/usr/bin/env bash
# Carry more than one device call takes (64 MiB a call, the tracked tree included) across several calls.
#
#   here:   bash train/device_carry.sh split build/carry .device_speech   -> .carry/1, .carry/2, ... (ignored)
#   there:  call k carries .carry/k and runs `bash train/device_carry.sh gather`: its part is kept in $STAGE (on the
#           machine, outside the synced tree, so it outlasts the call); once every part of the manifest is there and
#           its sha256 matches, the tar is unpacked into the repository root (build/carry, .device_speech, ...) and
#           the stage is emptied. PATHs are relative to the repository root; a part of another split starts over.
# Calls must follow each other on the same warm machine. Env: PART_MIB (default: 63 MiB less the tracked tree).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${STAGE:-/tmp/carry_stage}

split_parts() {
  [ $# -gt 0 ] || { echo "split: name the paths to carry (relative to the repository root), e.g. build/carry" >&2
                    exit 2; }
  local p
  for p in "$@"; do
    [ -e "$p" ] || { echo "split: $p does not exist under $PWD (paths are relative to the repository root)" >&2
                     exit 2; }
  done
  local tree part
  tree=$( (git ls-files -z | xargs -0 du -cb 2>/dev/null || true) | tail -1 | cut -f1)
  part=${PART_MIB:-$(( (63 * 1048576 - ${tree:-0}) / 1048576 ))}
  [ "$part" -ge 1 ] || { echo "the tracked tree ($tree bytes) leaves no room to carry" >&2; exit 1; }
  grep -qxF "/.carry/" "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
    || echo "/.carry/" >> "$(git rev-parse --git-common-dir)/info/exclude"
  # written beside, swapped in when whole: a failed split leaves the last good one in place
  rm -rf .carry.new && mkdir -p .carry.new/all
  tar -cf - "$@" | split -b "${part}M" -d -a 2 - .carry.new/all/part-
  local n=0 f
  for f in .carry.new/all/part-*; do n=$((n + 1)); mkdir -p ".carry.new/$n"; mv "$f" ".carry.new/$n/"; done
  (cd .carry.new && sha256sum ./*/part-* | sed 's# \./[0-9]*/# #' > manifest) && rmdir .carry.new/all
  for f in $(seq 1 $n); do cp .carry.new/manifest ".carry.new/$f/"; done
  rm -rf .carry && mv .carry.new .carry
  echo "$n part(s) of <= $part MiB (the tracked tree is $(( ${tree:-0} / 1048576 )) MiB):" \
       "carry .carry/1 .. .carry/$n, one a call"
  du -sh .carry/*/
}

gather() {
  local d carried=""
  for d in .carry/*/; do [ -f "$d/manifest" ] && carried=$d; done
  [ -n "$carried" ] || { echo "no .carry/<k>/ part was carried" >&2; exit 1; }
  if [ -f "$STAGE/manifest" ] && ! cmp -s "$STAGE/manifest" "$carried/manifest"; then
    echo "the carried part belongs to another split than the parts gathered so far: starting the gathering over"
    rm -rf "$STAGE"
  fi
  mkdir -p "$STAGE"
  for d in .carry/*/; do [ -f "$d/manifest" ] && cp "$d"/part-* "$d/manifest" "$STAGE/"; done
  local want have
  want=$(wc -l < "$STAGE/manifest"); have=$(ls "$STAGE"/part-* 2>/dev/null | wc -l)
  if [ "$have" -lt "$want" ]; then echo "gathered $have of $want parts: carry the next one"; return 0; fi
  (cd "$STAGE" && sha256sum -c --quiet manifest) \
    || { echo "a carried part is damaged: split and carry again" >&2; exit 1; }
  local names
  names=$(cat "$STAGE"/part-* | tar -xvf - | cut -d/ -f1 | sort -u | tr '\n' ' ')
  rm -rf "$STAGE"  # unpacked once: a later gather needs the parts carried again
  echo "gathered all $want parts, unpacked: $names"
}

case "${1:-}" in
  split) shift; split_parts "$@" ;;
  gather) gather ;;
  *) echo "usage: $0 split PATH... | gather" >&2; exit 2 ;;
esac
