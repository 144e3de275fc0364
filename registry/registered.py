"""The registered bytes of a model version on this host: what publishing and the run's output use.

Two hosts that quantize one identity may make different bytes (nondeterministic kernels, another CPU);
the registry keeps the lowest version, so the losing host's own folder is not what the version holds.
"""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.manifest import is_pinned_copy
from quantforge.registry.pull import pull
from quantforge.registry.tracking import mlflow_client
from quantforge.registry.variants import TAG


def registered_files(name: str, version: int, local: Path) -> Path:
    """`local` when it holds exactly the version's files (manifest.json as pinned by the registry),
    else the version's files pulled from its artifact source and verified against that pin."""
    pinned = mlflow_client().get_model_version(name, str(version)).tags[f"{TAG}manifest_sha256"]
    if is_pinned_copy(local, pinned):
        return local
    return pull(f"{name}/{version}")


registered_files_task = task(registered_files, name="registered-files", cache_policy=NO_CACHE)
