# CargoScan: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean-data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[training,dev]'
	touch $(STAMP)

# The service on localhost (data/demo) with a simulated scanner station posting to it;
# Ctrl-C stops both. Without models/cargoscan-default.onnx the service waits for one.
demo: $(STAMP)
	$(VENV)/bin/cargoscan demo

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PIP) install -q -e '.[training,bench]'
	$(PY) bench/detector_speed.py
	$(PY) bench/realism.py
	$(PY) bench/service.py
