"""A variant's job (identity and folder) and its making: from this host's cache, or by its backend.

The identity is a hash of the recipe, the backend's toolchain and, for data-aware recipes, the
calibration token ids: with the source's repo and sha it names the variant in the registry, on the Hub
and in this host's cache (`QUANTFORGE_HOME/variants/`).
"""

import hashlib
import math
import sys
from collections.abc import Sequence
from dataclasses import replace

from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core import progress
from quantforge.core.atomic import discard
from quantforge.core.manifest import is_intact, read_manifest
from quantforge.core.paths import data_dir
from quantforge.core.records import Metrics, Verdict
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline, Job, Made
from quantforge.tasks.datasets import TokenSet, evaluation_windows
from quantforge.tasks.fetch import SourceModel
from quantforge.tasks.gate import GateLimits, judge
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.targets import PROFILES, Target
from quantforge.tasks.toolchain import versions_hash


def variant_job(
    source: SourceModel,
    recipe: Recipe,
    calibration: TokenSet | None,
    evaluation: TokenSet,
    new_tokens: int | None,
    targets: Sequence[Target] = (Target.CPU,),
    inference_precision: str = "f32",
) -> Job:
    """The job of one recipe on one source: its identity, toolchain, folder in this host's cache, the
    devices it is checked on (the run's targets and the recipe's own) and the precision it is scored at."""
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
        devices=tuple(dict.fromkeys(PROFILES[t].device for t in [*targets, recipe.target] if t)),
        precision=BACKENDS[recipe.backend].runtime.protocol_precision(inference_precision),
    )


def make_variant(job: Job, baseline: Baseline) -> tuple[Made, Metrics]:
    """The variant's folder (this host's intact copy, or made now) and its metrics."""
    backend = BACKENDS[job.recipe.backend]
    if backend.reuses_cache and is_intact(job.target):
        made = Made(manifest=read_manifest(job.target), usage=None)
        progress.status(job.recipe.name, "quantize", "reused", note="this host's copy")
    else:
        discard(job.target)  # an earlier copy that failed verification
        with progress.stage(job.recipe.name, "quantize"):
            made = task(backend.make, name=f"{backend.name}-quantize", cache_policy=NO_CACHE)(job, baseline)
    if made.metrics is not None:  # measured while made (the backend's own protocol)
        return made, made.metrics
    with progress.stage(job.recipe.name, "measure"):
        return made, backend.measure(job, baseline)


def decided(
    job: Job, baseline: Baseline, metrics: Metrics, limits: GateLimits
) -> tuple[Metrics, Baseline, Verdict]:
    """The variant judged; while INCONCLUSIVE, it and its baseline scored again, paired, on more windows
    of the same evaluation text (the run's windows first), until decided or the text runs out. The
    metrics, baseline and verdict of the last round; speed and generation agreement as first measured
    (they do not depend on the windows)."""
    backend = BACKENDS[job.recipe.backend]
    verdict = judge(metrics, baseline.metrics, limits)
    if not backend.reuses_cache:  # IPEX measures a variant only while making it
        return metrics, baseline, verdict
    spec, length, protocol = job.evaluation.spec, job.evaluation.windows.shape[1], job.evaluation.protocol
    available = None
    while verdict.outcome == "INCONCLUSIVE":
        if available is None:  # read the whole text only once a verdict asks for more of it
            available = len(
                evaluation_windows(spec, job.source.local_dir, length, sys.maxsize, protocol).windows
            )
        count = more_windows(verdict, metrics.perplexity.windows, available, length - 1)
        if count is None:
            break
        windows = evaluation_windows(spec, job.source.local_dir, length, count, protocol)
        baseline = backend.runtime.rescored(baseline, job.source, windows)
        rescored = backend.measure(replace(job, evaluation=windows, new_tokens=None), baseline)
        metrics = rescored.model_copy(update={"speed": metrics.speed, "generation": metrics.generation})
        verdict = judge(metrics, baseline.metrics, limits)
    return metrics, baseline, verdict


# An estimate of the tokens needed beyond this many times the whole text: not worth scoring the rest (a
# variant on its limit asked for 4.9 M tokens after 12 of GPL-3's 15 windows, 7,665 tokens).
BEYOND_THE_TEXT = 4


def more_windows(verdict: Verdict, windows: int, available: int, tokens_per_window: int) -> int | None:
    """How many windows the next round of an inconclusive verdict scores: as many as its estimate of the
    tokens needed, a fifth more (the estimate is rough), else twice as many; at least one more, at most
    what the text has. None when the text has no more, or when the estimate is more than
    BEYOND_THE_TEXT times all of it: the rest of the text cannot decide, and the verdict already says
    how many tokens would."""
    needed = verdict.tokens_needed
    if windows >= available or (
        needed is not None and needed > BEYOND_THE_TEXT * available * tokens_per_window
    ):
        return None
    wanted = 2 * windows if needed is None else math.ceil(1.2 * needed / tokens_per_window)
    return min(available, max(windows + 1, wanted))
