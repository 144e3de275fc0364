# The quantforge image: the pinned stack of requirements.lock and this code. It runs every quantforge
# process of infra/compose.yaml and infra/k8s/: workers (the entrypoint, infra/start-worker.sh), the
# Prefect server's API, background services and one-shots (prefect-redis, asyncpg: in the lock), and
# the MLflow server (psycopg2, boto3, Flask-WTF: in the lock), so each runs the versions that
# tests/test_triggers.py runs it with.
# Build from the repository root:  docker build -f infra/worker.Dockerfile -t quantforge:0.1.0 .
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends git make procps \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/quantforge
COPY requirements.lock pyproject.toml Makefile ./
# The lock pins torch's CPU build (`torch==…+cpu`), which only PyTorch's own index serves.
RUN python -m venv .venv \
    && .venv/bin/pip install --no-cache-dir --no-deps \
        --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock
COPY . .
RUN .venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation -e .
ENV PATH=/opt/quantforge/.venv/bin:$PATH \
    QUANTFORGE_HOME=/var/lib/quantforge \
    HF_HOME=/var/lib/quantforge/hf
VOLUME /var/lib/quantforge
ENTRYPOINT ["/opt/quantforge/infra/start-worker.sh"]
