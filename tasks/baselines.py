"""The baselines of a run: each runtime's unquantized source, measured once when a variant on that
runtime is made, else taken from the lineage of the records the run reuses."""

import math

from quantforge.core import progress
from quantforge.core.errors import QuantforgeError
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.fetch import SourceModel
from quantforge.tasks.plan import Decision
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
        with progress.stage(f"baseline ({runtime.name})", "measure"):  # OpenVINO's includes the export
            baselines[runtime.name] = runtime.baseline(source, evaluation, request)
        ppl = baselines[runtime.name].metrics.perplexity.ppl
        if not math.isfinite(ppl):
            raise QuantforgeError(
                f"baseline perplexity of {source.repo} is {ppl} ({runtime.name}): check the model"
            )
    own = {b.name: b.check_baseline(source, evaluation, baselines[b.runtime.name]) for b in backends}
    return baselines, {name: ppl for name, ppl in own.items() if ppl is not None}


def run_baselines(measured: dict[str, Baseline], decisions: list[Decision]) -> dict[str, Baseline]:
    """Every runtime's baseline the run has variants on: as measured now, else as the first reused record
    measured it; OpenVINO's first, in the order of `BACKENDS`."""
    baselines = dict(measured)
    for decision in decisions:
        runtime = BACKENDS[decision.recipe.backend].runtime
        if decision.reuse is not None and runtime.name not in baselines:
            lineage = decision.reuse.lineage
            baselines[runtime.name] = Baseline(
                runtime=runtime.name, label=lineage.baseline_label or runtime.label, metrics=lineage.baseline
            )
    order = list(dict.fromkeys(b.runtime.name for b in BACKENDS.values()))
    return dict(sorted(baselines.items(), key=lambda item: order.index(item[0])))


def run_toolchain(recipes: list[Recipe]) -> dict[str, dict[str, str]]:
    """The toolchain of each backend the run uses (IPEX's read from its own environment)."""
    return {name: BACKENDS[name].toolchain() for name in dict.fromkeys(r.backend for r in recipes)}
