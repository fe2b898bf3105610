# The two quick-start commands: `make demo` (main job) and `make test` (test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

.PHONY: bootstrap demo test bench docs
bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/sparkdl predict

test: bootstrap
	$(PY) -m pytest python/tests -q -ra --durations=25

bench: bootstrap
	$(PY) benchmarks/run_all.py

docs: bootstrap
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
