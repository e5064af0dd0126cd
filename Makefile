# CargoScan: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# Each set-up installs what its job runs, with its own stamp: the demo only the base
# dependencies (service, runtime, station), everything else also the training extra
# (torch, several GB) and the dev tools.
STAMP      := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint bench clean-data

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[training,dev]'
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $(DEMO_STAMP)

# The service on localhost (data/demo) with a simulated scanner station posting to it;
# Ctrl-C stops both. Without models/cargoscan-default.onnx the service waits for one.
demo: $(DEMO_STAMP)
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

.PHONY: train-gpu
TRAIN_MINUTES ?= 9
TRAIN_OUT     ?= runs/gpu-$(shell date +%Y%m%d-%H%M%S)
REAL_SCANS    ?= ../shared/real-cargo/ajna_bbox

# A short GPU slot end to end (tools/train_gpu.py, docs/training.md "On a GPU"): data made
# on the other cores beside TRAIN_MINUTES of mixed-precision training from the shipped
# model, then export, calibration, the real-scan operating point and evaluation, all under
# TRAIN_OUT. Real scans when REAL_SCANS exists; more options in TRAIN_GPU_ARGS. Runs on a
# CPU too.
train-gpu: $(STAMP)
	$(PY) tools/train_gpu.py --out $(TRAIN_OUT) --minutes $(TRAIN_MINUTES) \
	    $(if $(wildcard $(REAL_SCANS)),--real $(REAL_SCANS)) $(TRAIN_GPU_ARGS)
