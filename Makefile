# The README's Quickstart is `make demo` and `make test`; both set up .venv first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# tensorflow-model-optimization needs Keras 2 (tf_keras); TF reads this before its first import.
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2
DEMO_DIR ?= demo_output
RUNNER ?= local
PYTEST_ARGS ?=

.PHONY: venv tools demo test unit lint layout lock clean

venv:
	@VENV=$(VENV) bash scripts/bootstrap.sh

# Linters and validators (ruff; checkov, hadolint, kubernetes-validate for k8s/), in their own venv.
tools:
	@VENV=.venv-tools LOCK=requirements-tools.lock PROJECT=0 bash scripts/bootstrap.sh

demo: venv
	$(PY) -m pipelines.run_local --runner $(RUNNER) --output-dir $(DEMO_DIR)

# Everything: lint, then every test (the e2e ones run whole pipelines and take minutes).
test: venv tools lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Every test but the e2e ones: a few minutes.
unit: venv tools
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

lint: tools
	.venv-tools/bin/ruff check .

# Rewrites the layout section of docs/architecture.md from the tree (tests check it is current).
layout: venv
	$(PY) scripts/layout.py --write

lock:
	bash scripts/lock.sh

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
