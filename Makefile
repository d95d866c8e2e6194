# Every target installs what it needs first (system packages, then the virtualenv), idempotently.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# torch is pinned to the release this project is tested with; pip takes the CPU
# wheel from a local wheelhouse where one is configured (our machines), else PyPI.
TORCH  ?= torch==2.13.0
# verl, for its SandboxFusion client module only (tests load that one file; none of verl's own
# heavy dependencies are installed).
VERL   ?= verl==0.9.1

.PHONY: deps test test-fast run bench lint typecheck check clean

deps: $(STAMP)

$(STAMP): pyproject.toml .ci/install-system.sh .ci/prepare-toolchains.sh
	bash .ci/install-system.sh
	bash .ci/prepare-toolchains.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[all]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps "$(VERL)"
	touch $(STAMP)

## run the whole test suite (slow, ray and microvm markers included); the microvm tests
## need the guest images (the default one, and the one with the languages' toolchains), built
## here when missing (a no-op when cached); then the namespace tests once more as an ordinary
## user (.ci/unprivileged.sh)
test: deps
	$(BIN)/python -m harness image build --config configs/image.yaml
	$(BIN)/python -m harness image build --config configs/image-languages.yaml
	$(BIN)/python -m pytest -q
	bash .ci/unprivileged.sh

## the quick subset: no slow tests
test-fast: deps
	$(BIN)/python -m pytest -q -m "not slow"

## the main job: grade the bundled HumanEval solutions (+ known-wrong ones) in sandboxes;
## also builds the microVM guest image when missing (a no-op when cached)
run: deps
	$(BIN)/python -m harness image build --config configs/image.yaml
	$(BIN)/python -m harness demo --config configs/default.yaml

## throughput benchmark: sandboxed vs fork floor vs python3 -c, side by side
bench: deps
	$(BIN)/python -m harness bench

## ruff (rules in pyproject.toml)
lint: deps
	$(BIN)/python -m ruff check vmpool rewards harness bench tests

## mypy (strict for vmpool, defaults elsewhere; pyproject.toml [tool.mypy])
typecheck: deps
	$(BIN)/python -m mypy

## what CI runs: lint, type check, then the whole test suite
check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
