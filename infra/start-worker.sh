#!/bin/sh
# Start one Prefect process worker on this host, once its work pool exists, after sizing the host's
# memory limit. infra/deploy.py makes the pool (README "Running it for real", step 2; compose's
# prefect-init); until then, or while the API is still starting, this waits rather than exits.
#
# The quantize flow holds `memory-<hostname>` slots (GiB, see tasks/resources.py) while it exports and
# quantizes, so however many workers run here, they never quantize more than the RAM allows.
# QUANTFORGE_MEMORY_GIB overrides the size (default: the host's RAM minus 2 GiB for the system).
set -eu
: "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect API, e.g. http://prefect-host:4200/api}"
pool="${QUANTFORGE_WORK_POOL:-quantforge}"
limit="${QUANTFORGE_MEMORY_LIMIT:-memory-$(hostname)}"
total_gib=$(awk '/MemTotal/ {print int($2 / 1048576)}' /proc/meminfo)
gib="${QUANTFORGE_MEMORY_GIB:-$((total_gib > 4 ? total_gib - 2 : 2))}"

until answer=$(prefect work-pool inspect "$pool" 2>&1); do
    echo "start-worker: waiting for work pool '$pool' at $PREFECT_API_URL" \
        "(infra/deploy.py makes it): $(echo "$answer" | tail -n 1)" >&2
    sleep 5
done
prefect global-concurrency-limit create "$limit" --limit "$gib" >/dev/null 2>&1 \
    || prefect global-concurrency-limit update "$limit" --limit "$gib" >/dev/null
exec prefect worker start --pool "$pool" --name "${QUANTFORGE_WORKER_NAME:-$(hostname)-$$}" "$@"
