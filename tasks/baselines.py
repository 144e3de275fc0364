"""The baselines of a run: each runtime's unquantized source, measured once when a variant on that
runtime is made, else taken from the lineage of the records the run reuses."""

import math

from quantforge.core.errors import QuantforgeError
from quantforge.core.records import RecordedVariant
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.fetch import SourceModel
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.request import QuantizeRequest


def measure_baselines(
    recipes: list[Recipe], source: SourceModel, evaluation: TokenSet, request: QuantizeRequest
) -> tuple[dict[str, Baseline], dict[str, float]]:
    """The baseline of every runtime the recipes run on, and the source's perplexity in each backend's
    own environment where it has one (checked to agree with its runtime's baseline)."""
    backends = [BACKENDS[name] for name in dict.fromkeys(r.backend for r in recipes)]
    baselines = {}
    for runtime in {b.runtime.name: b.runtime for b in backends}.values():
        baselines[runtime.name] = runtime.baseline(source, evaluation, request)
        ppl = baselines[runtime.name].metrics.perplexity.ppl
        if not math.isfinite(ppl):
            raise QuantforgeError(
                f"baseline perplexity of {source.repo} is {ppl} ({runtime.name}): check the model"
            )
    own = {b.name: b.check_baseline(source, evaluation, baselines[b.runtime.name]) for b in backends}
    return baselines, {name: ppl for name, ppl in own.items() if ppl is not None}


def recorded_baselines(records: list[RecordedVariant], recipes: list[Recipe]) -> dict[str, Baseline]:
    """Each runtime's baseline as the first reused record of a variant on it measured it."""
    baselines = {}
    for record, recipe in zip(records, recipes, strict=True):
        runtime = BACKENDS[recipe.backend].runtime
        baselines.setdefault(
            runtime.name, Baseline(runtime=runtime.name, label=runtime.label, metrics=record.lineage.baseline)
        )
    return baselines


def run_toolchain(recipes: list[Recipe]) -> dict[str, dict[str, str]]:
    """The toolchain of each backend the run uses (IPEX's read from its own environment)."""
    return {name: BACKENDS[name].toolchain() for name in dict.fromkeys(r.backend for r in recipes)}
