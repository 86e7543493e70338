# The two commands of the README: `make run` (main job on the built-in model + bundled sample)
# and `make test` (the whole test suite). Both create the virtual environment they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-core test-slicer test-light lint bench system-deps clean

run: $(STAMP)
	$(PY) -m napari_medsam.cli demo

test: system-deps $(STAMP)
	$(PY) -m ruff check napari_medsam tests benchmarks scripts slicer_extension
	$(PY) -m pytest -ra --durations=20
	$(MAKE) test-slicer
	$(MAKE) test-light

test-core: $(STAMP)
	$(PY) -m pytest -ra -m "not gui"

test-slicer:
	@if [ -f scripts/test_slicer.sh ]; then bash scripts/test_slicer.sh; fi

# the light install (the wheel without torch, in .venv-light): tests/light
test-light:
	bash scripts/test_light.sh

lint: $(STAMP)
	$(PY) -m ruff check napari_medsam tests benchmarks scripts slicer_extension

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

system-deps:
	@bash scripts/install_system_deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	bash scripts/pip_install.sh $(PY) -q --upgrade pip
	bash scripts/pip_install.sh $(PY) -e ".[dev]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) .venv-slicer .venv-light .whl .pytest_cache
