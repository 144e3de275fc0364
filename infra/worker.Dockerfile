# The quantforge worker: the pinned stack of requirements.lock, the code, and a Prefect process worker.
# Build from the repository root:  docker build -f infra/worker.Dockerfile -t quantforge-worker .
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends git make procps \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/quantforge
COPY requirements.lock pyproject.toml Makefile ./
RUN python -m venv .venv \
    && .venv/bin/pip install --no-cache-dir --no-deps -r requirements.lock
COPY . .
RUN .venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation -e .
ENV PATH=/opt/quantforge/.venv/bin:$PATH \
    QUANTFORGE_HOME=/var/lib/quantforge \
    HF_HOME=/var/lib/quantforge/hf
VOLUME /var/lib/quantforge
ENTRYPOINT ["/opt/quantforge/infra/start-worker.sh"]
