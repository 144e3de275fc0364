"""The reuse policy: which recipes a run takes from the registry as they are, and which it makes.

Pure: records in, decisions out; it runs no Prefect task, asks no MLflow server and reads no file.
"""

from pydantic import BaseModel

from quantforge.core.records import RecordedVariant
from quantforge.tasks.gate import GateLimits, effective_limits, judge
from quantforge.tasks.recipes import Recipe


class Decision(BaseModel):
    """One recipe's fate in this run: `reuse` holds the record to take (judged by this run's gates), or
    is None: the variant is made (and measured, judged, recorded)."""

    recipe: Recipe
    reuse: RecordedVariant | None

    @property
    def make(self) -> bool:
        return self.reuse is None


def decide(recipe: Recipe, record: RecordedVariant | None, gates: GateLimits) -> Decision:
    """Reuse the record unless there is none, or its metrics pass this run's gates while no version
    holds it (it failed under the gates of the run that made it): then it is made again, to register.
    The record's own estimates are judged (MLflow keeps no per-window figures to compute them again)."""
    if record is None:
        return Decision(recipe=recipe, reuse=None)
    limits = effective_limits(recipe, gates)
    verdict = judge(record.metrics, record.lineage.baseline, limits, record.verdict.estimates)
    if verdict.passed and record.model_version is None:
        return Decision(recipe=recipe, reuse=None)
    return Decision(recipe=recipe, reuse=record.model_copy(update={"verdict": verdict}))


def plan(
    recipes: list[Recipe], records: dict[str, RecordedVariant | None], gates: GateLimits
) -> list[Decision]:
    """`decide` for every recipe, in the recipe set's order; `records` are keyed by recipe name."""
    return [decide(recipe, records.get(recipe.name), gates) for recipe in recipes]
