"""The recipe search: the INT4 space, the order it is explored in, the proxy's pruning, the front, the log.

Pure: recipes and figures in, orders, survivors and fronts out; the search flow (flows/search.py) makes,
scores and registers.
"""

import itertools
import math
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel

from quantforge.core.records import Interval, Metrics, Verdict
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.gate import ppl_increase_pct
from quantforge.tasks.recipes import Recipe, RecipeSet

SEARCH = "search"  # the `--recipes` value that runs the search instead of a recipe set
DESCRIPTION = (
    "The INT4 space searched (group size, ratio, sym/asym, backup, AWQ, scale estimation, GPTQ, LoRA "
    "correction, sensitivity metric): KLD on a few windows prunes, the survivors are scored fully, the "
    "Pareto front of size against Δppl is registered (--search-budget, --search-minutes)."
)
# Each axis's values in the order worth trying, the centre's first. The centre is the default set's
# calibrated INT4 shape (groups of 64, 80 % INT4, INT8 backup: ~99 MiB on SmolLM2-135M) made asymmetric,
# which costs 4 bits of zero point per group and fits small models' skewed weights better, with AWQ +
# scale estimation: a few times cheaper than GPTQ (458 s on a loaded host, tests/test_flow_e2e.py),
# so a budget of minutes tries more shapes. The algorithms come first: they change Δppl most at one size;
# LoRA correction (low-rank INT8 adapters fitted to each layer's INT4 error, a little size) next.
AXES: dict[str, tuple[Any, ...]] = {
    "algorithm": ("awq-se", "awq-se-lora", "se", "gptq-se", "rtn", "awq", "gptq", "se-lora", "lora"),
    "sym": (False, True),
    "group_size": (64, 128, 32),
    "ratio": (0.8, 0.9, 0.7, 1.0, 0.6),
    "sensitivity_metric": (
        "max_activation_variance",  # nncf's own choice with calibration data
        "hessian_input_activation",
        "mean_activation_variance",
        "mean_activation_magnitude",
        "weight_quantization_error",  # data-free
    ),
    "backup_precision": ("int8_asym", "int8_sym", "none"),
}
METRIC_TAGS = {
    "max_activation_variance": "maxvar",
    "hessian_input_activation": "hessian",
    "mean_activation_variance": "meanvar",
    "mean_activation_magnitude": "meanmag",
    "weight_quantization_error": "wqe",
}
# GPTQ excludes AWQ and LoRA correction (nncf refuses them together): no such name below.
ALGORITHMS: dict[str, dict[str, bool]] = {
    "rtn": {},  # round to nearest: data-free
    "awq": {"awq": True},
    "se": {"scale_estimation": True},
    "awq-se": {"awq": True, "scale_estimation": True},
    "gptq": {"gptq": True},
    "gptq-se": {"gptq": True, "scale_estimation": True},
    "lora": {"lora_correction": True},
    "se-lora": {"scale_estimation": True, "lora_correction": True},
    "awq-se-lora": {"awq": True, "scale_estimation": True, "lora_correction": True},
}
# The share of the minutes the proxy stage may start candidates in: the rest scores the survivors fully.
PROXY_SHARE = 0.6
# A candidate survives the proxy unless another at most its size has a mean KLD this much lower (a few
# windows' KLD ranks variants roughly, not exactly: a near miss is scored fully).
PROXY_SLACK = 0.1


class Candidate(BaseModel):
    """One point of the space: a value of every axis."""

    algorithm: str
    sym: bool
    group_size: int
    ratio: float
    sensitivity_metric: str | None  # None at ratio 1: every layer is INT4, none is picked for the backup
    backup_precision: str

    @property
    def name(self) -> str:
        """The recipe's name, e.g. `s-int4-asym-g64-r08-maxvar-b-int8-asym-awq-se`."""
        metric = METRIC_TAGS[self.sensitivity_metric] if self.sensitivity_metric else "all"
        return "-".join(
            [
                "s-int4",
                "sym" if self.sym else "asym",
                f"g{self.group_size}",
                "r" + f"{self.ratio:g}".replace(".", ""),
                metric,
                "b-" + self.backup_precision.replace("_", "-"),
                self.algorithm,
            ]
        )

    def recipe(self) -> Recipe:
        """The Recipe the candidate describes."""
        fields = self.model_dump(exclude={"algorithm"}) | ALGORITHMS[self.algorithm]
        return Recipe(name=self.name, bits=4, **fields)


def space() -> Iterator[Candidate]:
    """Every valid candidate: a sensitivity metric only below ratio 1 (it picks the backup layers)."""
    for values in itertools.product(*AXES.values()):
        fields = dict(zip(AXES, values, strict=True))
        if fields["ratio"] == 1.0:
            if fields["sensitivity_metric"] != AXES["sensitivity_metric"][0]:
                continue
            fields["sensitivity_metric"] = None
        yield Candidate(**fields)


def centre() -> Candidate:
    """The candidate of every axis's first value."""
    return next(space())


def distance(candidate: Candidate, other: Candidate) -> int:
    """How many axes differ (a ratio of 1, which has no metric, differs in the metric too)."""
    return sum(getattr(candidate, axis) != getattr(other, axis) for axis in AXES)


def order_key(candidate: Candidate) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Nearest the centre first; among as near, the changed axes earlier in AXES first, then the values
    earlier in their axis (values are listed in the order worth trying)."""
    start = centre()
    changed = tuple(i for i, axis in enumerate(AXES) if getattr(candidate, axis) != getattr(start, axis))
    positions = tuple(_position(axis, getattr(candidate, axis)) for axis in AXES)
    return distance(candidate, start), changed, positions


def _position(axis: str, value: Any) -> int:
    values = AXES[axis]
    return values.index(value) if value in values else len(values)


def exploration_order(count: int) -> list[Recipe]:
    """The first `count` candidates in the search's order, as recipes."""
    chosen = sorted(space(), key=order_key)[:count]
    return [c.recipe() for c in chosen]


def search_set(count: int) -> RecipeSet:
    """The search's first `count` candidates as a recipe set (what `quantforge recipes search` shows)."""
    return RecipeSet(description=DESCRIPTION, recipes=exploration_order(count))


def non_dominated(points: dict[str, tuple[float, float]], slack: float = 0.0) -> list[str]:
    """Names whose (size, figure) no other point beats: at most the size with a figure lower by more than
    `slack` of it (0: the Pareto front, ties kept), or at a smaller size and no higher a figure. Points
    with a non-finite figure are never kept; the order is the input's."""
    kept = []
    for name, (size, figure) in points.items():
        if not math.isfinite(figure):
            continue
        beaten = any(
            other != name
            and math.isfinite(o_figure)
            and (
                (o_size <= size and o_figure < figure - slack * abs(figure))
                or (o_size < size and o_figure <= figure and slack == 0.0)
            )
            for other, (o_size, o_figure) in points.items()
        )
        if not beaten:
            kept.append(name)
    return kept


class SearchEntry(BaseModel):
    """One candidate's row in the search log."""

    recipe: Recipe
    size_mb: float
    proxy_kld: float  # mean KL divergence from the baseline on the proxy windows
    proxy_seconds: float  # making it (or taking this host's copy) and scoring the proxy windows
    stage: Literal["pruned", "survived"]
    ppl_increase_pct: Interval | None = None  # the full scoring's Δppl, for the survivors
    verdict: str | None = None  # PASS, FAIL or INCONCLUSIVE, for the survivors
    on_front: bool = False
    registered: bool = False


class SearchLog(BaseModel):
    """The whole search: its budget, what it spent, every candidate, and the front of size against Δppl."""

    budget_variants: int
    budget_minutes: float | None
    proxy_windows: int
    proxy_slack: float
    stopped_by: Literal["variants", "minutes"]  # what ended the proxy stage
    seconds: float
    entries: list[SearchEntry]
    front: list[str]  # recipe names, smallest first


def front_order(entries: list[SearchEntry]) -> list[str]:
    """The Pareto front of size against Δppl among the fully scored entries, smallest first."""
    scored = {
        e.recipe.name: (e.size_mb, e.ppl_increase_pct.value)
        for e in entries
        if e.ppl_increase_pct is not None
    }
    return sorted(non_dominated(scored), key=lambda name: scored[name])


def proxy_kld(metrics: Metrics) -> float:
    """The proxy's figure: mean KLD from the baseline on the proxy windows (infinite where not measured)."""
    return metrics.divergence.mean_kld if metrics.divergence is not None else math.inf


def log_entry(
    recipe: Recipe, proxy: Metrics, seconds: float, scored: tuple[Metrics, Baseline, Verdict] | None
) -> SearchEntry:
    """A candidate's log row: its proxy figures, and its full scoring's (metrics, the baseline they were
    judged against, verdict) when it survived."""
    entry = SearchEntry(
        recipe=recipe,
        size_mb=proxy.size_mb,
        proxy_kld=proxy_kld(proxy),
        proxy_seconds=seconds,
        stage="pruned",
    )
    if scored is None:
        return entry
    metrics, baseline, verdict = scored
    delta = verdict.estimates.ppl_increase_pct if verdict.estimates else None
    delta = delta or Interval(value=ppl_increase_pct(metrics, baseline.metrics))
    return entry.model_copy(
        update={"stage": "survived", "ppl_increase_pct": delta, "verdict": verdict.outcome}
    )
