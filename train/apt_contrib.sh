#!/usr/bin/env bash
# Debian's contrib + non-free components (the MBROLA engine and voices, shared/ASSETS.md), enabled the same way on
# every machine: a .sources file with the URIs, suites and keyring of the main Debian entry, then apt-get update.
# Idempotent. Needs root (apt).
#   bash train/apt_contrib.sh            # enable the components only
#   bash train/apt_contrib.sh install    # ... and install mbrola + the voices of wolofmrl.voices (tests, local runs)
set -euo pipefail
main=/etc/apt/sources.list.d/debian.sources
out=/etc/apt/sources.list.d/debian-contrib-nonfree.sources
if [ ! -f "$out" ]; then
  [ -f "$main" ] || { echo "apt_contrib.sh: no $main to copy the Debian URIs from" >&2; exit 1; }
  # each stanza of the main file, with its Components replaced by contrib non-free
  sed -e 's/^Components:.*/Components: contrib non-free/' "$main" > "$out.tmp"
  mv "$out.tmp" "$out"
  apt-get update -qq
fi
[[ "$(apt-cache policy mbrola)" == *Candidate:* ]] || { echo "apt_contrib.sh: mbrola still unknown to apt" >&2; exit 1; }
if [ "${1:-}" = install ]; then
  voices=$(cd "$(dirname "$0")/.." && python3 -c "from wolofmrl.voices import HELD_OUT_MBROLA, TRAIN_MBROLA
print(' '.join('mbrola-' + v for v in [*TRAIN_MBROLA, *HELD_OUT_MBROLA]))")
  apt-get install -y -qq mbrola $voices
fi
