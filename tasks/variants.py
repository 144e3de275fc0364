"""A variant's job (identity and folder) and its making: from this host's cache, or by its backend.

The identity is a hash of the recipe, the backend's toolchain and, for data-aware recipes, the
calibration token ids: with the source's repo and sha it names the variant in the registry, on the Hub
and in this host's cache (`QUANTFORGE_HOME/variants/`).
"""

import hashlib

from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.atomic import discard
from quantforge.core.manifest import is_intact, read_manifest
from quantforge.core.paths import data_dir
from quantforge.core.records import Metrics
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline, Job, Made
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.fetch import SourceModel
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.toolchain import versions_hash


def variant_job(
    source: SourceModel,
    recipe: Recipe,
    calibration: TokenSet | None,
    evaluation: TokenSet,
    new_tokens: int | None,
) -> Job:
    """The job of one recipe on one source: its identity, toolchain and folder in this host's cache."""
    toolchain = BACKENDS[recipe.backend].toolchain()
    digest = hashlib.sha256(f"{recipe.content_hash()}|{versions_hash(toolchain)}".encode())
    if recipe.data_aware and calibration is not None:
        digest.update(calibration.windows.tobytes())
    identity = digest.hexdigest()
    return Job(
        source=source,
        recipe=recipe,
        calibration=calibration,
        evaluation=evaluation,
        new_tokens=new_tokens,
        identity=identity,
        toolchain=toolchain,
        target=data_dir() / "variants" / source.cache_key / f"{recipe.name}-{identity[:16]}",
    )


def make_variant(job: Job, baseline: Baseline) -> tuple[Made, Metrics]:
    """The variant's folder (this host's intact copy, or made now) and its metrics."""
    backend = BACKENDS[job.recipe.backend]
    if backend.reuses_cache and is_intact(job.target):
        made = Made(manifest=read_manifest(job.target), usage=None)
    else:
        discard(job.target)  # an earlier copy that failed verification
        made = task(backend.make, name=f"{backend.name}-quantize", cache_policy=NO_CACHE)(job, baseline)
    return made, made.metrics or backend.measure(job, baseline)
