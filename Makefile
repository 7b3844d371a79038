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

.PHONY: venv tools demo test lock clean

venv:
	@VENV=$(VENV) bash scripts/bootstrap.sh

# Linters and validators for k8s/ (checkov, hadolint, kubernetes-validate), in their own venv.
tools:
	@VENV=.venv-tools LOCK=requirements-tools.lock PROJECT=0 bash scripts/bootstrap.sh

demo: venv
	$(PY) -m pipelines.run_local --runner $(RUNNER) --output-dir $(DEMO_DIR)

test: venv tools
	$(PY) -m pytest $(PYTEST_ARGS)

lock:
	bash scripts/lock.sh

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
