#!/bin/sh
# Start one Prefect process worker on this host, after sizing the host's memory limit.
#
# The quantize flow holds `memory-<hostname>` slots (GiB, see tasks/resources.py) while it exports and
# quantizes, so however many workers run here, they never quantize more than the RAM allows.
# QUANTFORGE_MEMORY_GIB overrides the size (default: the host's RAM minus 2 GiB for the system).
set -eu
pool="${QUANTFORGE_WORK_POOL:-quantforge}"
limit="${QUANTFORGE_MEMORY_LIMIT:-memory-$(hostname)}"
total_gib=$(awk '/MemTotal/ {print int($2 / 1048576)}' /proc/meminfo)
gib="${QUANTFORGE_MEMORY_GIB:-$((total_gib > 4 ? total_gib - 2 : 2))}"

prefect work-pool create "$pool" --type process 2>/dev/null || true
prefect global-concurrency-limit create "$limit" --limit "$gib" 2>/dev/null \
    || prefect global-concurrency-limit update "$limit" --limit "$gib"
exec prefect worker start --pool "$pool" --name "${QUANTFORGE_WORKER_NAME:-$(hostname)-$$}" "$@"
