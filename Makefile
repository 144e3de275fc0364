# The two commands of the README. Both create (or reuse) the virtual environment in .venv/.
PYTHON ?= python3.11
VENV := .venv
# Real English text from the base system: calibrate on one license, evaluate on another.
CALIBRATION_TEXT := /usr/share/common-licenses/GPL-2
EVALUATION_TEXT := /usr/share/common-licenses/GPL-3

.PHONY: install demo test

# Every package at the exact version in requirements.lock, without dependency resolution: the lock
# already is the resolution (it drops torchvision, which optimum-intel names but LLM export never uses).
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --no-deps -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/quantforge demo --recipes default \
		--calibration $(CALIBRATION_TEXT) --eval $(EVALUATION_TEXT) --output quantforge-output

test: install
	$(VENV)/bin/python -m pytest
