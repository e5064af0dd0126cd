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

.PHONY: fuzz load
FUZZ_SECONDS ?= 60
LOAD_SECONDS ?= 20

# Fuzz scan decoding + pre-processing for FUZZ_SECONDS (atheris when installed, else a
# random-mutation driver); failing inputs are copied to tests/fuzz_corpus/ (replayed by
# the tests). Exit status 1 when something failed.
fuzz: $(STAMP)
	$(PY) fuzz/fuzz_decode.py --seconds $(FUZZ_SECONDS)

# Stations flood a real `cargoscan serve` on loopback for LOAD_SECONDS per phase (station
# limits on, then off): load held, 429 share, p95 latency, peak memory, lost scans (0).
load: $(STAMP)
	$(PY) bench/load.py --seconds $(LOAD_SECONDS)
