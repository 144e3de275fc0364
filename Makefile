# The two commands of the README. Both create (or reuse) the virtual environment in .venv/
# (`make install WITH_IPEX=1` also creates .venv-ipex/ for the `ipex` backend).
PYTHON ?= python3.11
VENV := .venv
# Real English text from the base system: calibrate on one license, evaluate on another.
CALIBRATION_TEXT := /usr/share/common-licenses/GPL-2
EVALUATION_TEXT := /usr/share/common-licenses/GPL-3

# IPEX 2.8 (archived) pins torch 2.8 and transformers 4.51: it gets its own environment, made on request.
IPEX_VENV := .venv-ipex

.PHONY: install demo test test-large ipex-env redis

# Every package at the exact version in requirements.lock, without dependency resolution: the lock
# already is the resolution (it drops torchvision, which optimum-intel names but LLM export never uses).
# Then quantforge and, a distribution of its own, its test support (testing/: the local Hub, the bundled
# model, `quantforge demo`), both editable. pip installs the lock's uv, and uv the rest from the sources
# pip is configured with (infra/pip_sources.py): 8 s with uv's cache empty, where pip took 157 s.
UV_INSTALL := $(VENV)/bin/uv pip install --quiet --no-deps --compile-bytecode --python $(VENV)/bin/python

$(VENV)/.installed: requirements.lock pyproject.toml testing/pyproject.toml infra/pip_sources.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --no-deps $$(grep '^uv==' requirements.lock)
	$(UV_INSTALL) $$($(VENV)/bin/python infra/pip_sources.py) -r requirements.lock
	$(UV_INSTALL) --no-build-isolation -e . -e testing
	touch $@

install: $(VENV)/.installed $(if $(WITH_IPEX),ipex-env)

# The `ipex` backend's environment (~7 GB): every package of requirements-ipex.lock, no resolution. uv
# (from the main environment) installs it: 107 s with an empty cache and 1.6 s with a warm one, where pip
# took 311 s with its cache warm (docs/decisions.md, "The suite's schedule").
$(IPEX_VENV)/.installed: requirements-ipex.lock $(VENV)/.installed
	test -x $(IPEX_VENV)/bin/python || $(VENV)/bin/uv venv --quiet --python $(PYTHON) $(IPEX_VENV)
	$(VENV)/bin/uv pip install --quiet --no-deps --compile-bytecode --python $(IPEX_VENV)/bin/python \
		-r requirements-ipex.lock
	touch $@

ipex-env: $(IPEX_VENV)/.installed

demo: install
	$(VENV)/bin/quantforge demo --recipes default \
		--calibration $(CALIBRATION_TEXT) --evaluation $(EVALUATION_TEXT) --output-dir quantforge-output

# Two pytest-xdist workers (this machine's two cores, one each: tests/conftest.py pins them), a test
# file per worker at a time: files share their module fixtures (servers, a sweep) and much of a test is
# waiting on processes and servers. Files are handed out in collection order, which tests/conftest.py
# makes longest first (LONGEST_FIRST).
test: install redis
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# The 1 B-parameter model within its memory bound (tests/test_large.py): minutes, ~8 GB of disk.
test-large: install
	$(VENV)/bin/python -m pytest -m large -s tests/test_large.py

# Redis, from Debian's package: tests/test_triggers.py runs the production stack (Prefect's messaging,
# cache, leases and docket on Redis; PostgreSQL, already on the image, under both servers) on loopback.
REDIS_SERVER := /usr/bin/redis-server

$(REDIS_SERVER):
	apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server

redis: $(REDIS_SERVER)
