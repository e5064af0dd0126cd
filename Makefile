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

# Until the service lands: a small sample data set and a contact sheet of it.
demo: $(STAMP)
	$(VENV)/bin/cargoscan synth --out data/sample --count 12 --seed 7 --contact-sheet data/sample/contact_sheet.png
	@echo "Sample scans: data/sample/images  labels: data/sample/annotations.json"
	@echo "Contact sheet: data/sample/contact_sheet.png"

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PIP) install -q -e '.[training,bench]'
	$(PY) bench/detector_speed.py
	$(PY) bench/realism.py
