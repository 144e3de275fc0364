"""gate: a verdict with every reason, from a variant's metrics against the baseline of the same run.

The one place the perplexity increase (Δppl) and the intervals the verdict compares are computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from quantforge.core.records import Estimates, Interval, Metrics, Outcome, Verdict
from quantforge.tasks.statistics import mean_samples, percentile_interval, resampled_windows, tokens_to_decide

if TYPE_CHECKING:  # recipes imports GateLimits from here
    from quantforge.tasks.recipes import Recipe

# Default allowed perplexity increase by weight format, in percent. INT8 weight-only costs well under 1 %
# on every model we measured, so 2 % catches a broken export; 4-bit costs more, most on small models.
# bf16 (IPEX) rounds weights and activations only: measured +0.1 %; 2 % catches a broken run as for INT8.
DEFAULT_MAX_PPL_INCREASE_PCT = {"bf16": 2.0, "int8": 2.0, "w8a8": 5.0, "int4": 10.0}
# How each bounded figure is written (reasons, report, model card): format, unit, scale.
PERCENT_CHANGE = ("+.2f", " %", 1.0)
KLD = (".4g", "", 1.0)
SHARE = (".1f", " %", 100.0)
PREFIX = {"PASS": "pass", "FAIL": "FAIL", "INCONCLUSIVE": "INCONCLUSIVE"}


class GateLimits(BaseModel):
    """Gate limits: a recipe's own (`gate:` in its YAML), and the run's from the command line, which
    override the recipe's, which override the defaults by weight format."""

    model_config = ConfigDict(extra="forbid")

    max_ppl_increase_pct: float | None = Field(
        default=None, ge=0, description="Gate: max perplexity increase over the baseline, in %."
    )
    max_ppl: float | None = Field(default=None, gt=0, description="Gate: max absolute perplexity.")
    min_speedup: float | None = Field(
        default=None, gt=0, description="Gate: min decode speed-up over the baseline."
    )
    max_size_mb: float | None = Field(default=None, gt=0, description="Gate: max size on disk in MiB.")
    max_kld: float | None = Field(
        default=None,
        gt=0,
        description="Gate: max mean KL divergence (baseline || variant) of next-token distributions, nats.",
    )
    min_top1_agreement: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Gate: min share (0-1) of tokens whose most likely next token is the baseline's.",
    )


def effective_limits(recipe: Recipe, run_limits: GateLimits) -> GateLimits:
    """Command line over recipe over defaults-by-weight-format."""
    merged = {
        "max_ppl_increase_pct": DEFAULT_MAX_PPL_INCREASE_PCT[recipe.weight_format],
        **recipe.gate.model_dump(exclude_none=True),
        **run_limits.model_dump(exclude_none=True),
    }
    return GateLimits(**merged)


def ppl_increase_pct(metrics: Metrics, baseline: Metrics) -> float:
    """How much worse the variant's perplexity is than its baseline's, in percent."""
    return (metrics.perplexity.ppl / baseline.perplexity.ppl - 1) * 100


def estimate(metrics: Metrics, baseline: Metrics) -> Estimates:
    """Δppl, mean KLD and top-1 agreement with their 95 % intervals: a paired bootstrap over the windows
    where the records keep their windows' figures (two windows at least), the figures alone otherwise."""
    scored = metrics.perplexity
    windows = scored.windows
    picks = resampled_windows(windows) if windows >= 2 else None
    per_window = scored.tokens_scored // windows

    def interval(value: float, window_sums: Sequence[float], transform=lambda means: means) -> Interval:
        """`value`, and the interval of the per-token mean of `window_sums` (one per window), transformed."""
        if picks is None or len(window_sums) != windows:
            return Interval(value=value)
        means = mean_samples(np.asarray(window_sums, dtype=float), per_window, picks)
        low, high = percentile_interval(transform(means), windows)
        return Interval(value=value, low=low, high=high)

    nll = (scored.window_nll, baseline.perplexity.window_nll)
    paired = np.subtract(*nll) if len(nll[0]) == len(nll[1]) else []
    divergence = metrics.divergence
    return Estimates(
        ppl_increase_pct=interval(
            ppl_increase_pct(metrics, baseline), paired, lambda means: np.expm1(means) * 100
        ),
        mean_kld=interval(divergence.mean_kld, divergence.window_kld) if divergence else None,
        top1_agreement=interval(divergence.top1_agreement, divergence.window_top1) if divergence else None,
        tokens=scored.tokens_scored,
    )


def judge(
    metrics: Metrics, baseline: Metrics, limits: GateLimits, estimates: Estimates | None = None
) -> Verdict:
    """Check each rule against the baseline of the variant's runtime: PASS when every rule passes, FAIL
    when one fails, else INCONCLUSIVE (an interval straddles its limit). `estimates` are a record's
    (its windows' figures are not kept); computed from the metrics when not given. A non-finite
    perplexity fails outright."""
    ppl = metrics.perplexity.ppl
    if not math.isfinite(ppl):
        return Verdict(outcome="FAIL", reasons=[f"perplexity is {ppl}: the variant is broken"])
    estimates = estimates or estimate(metrics, baseline)
    tokens = estimates.tokens
    checks = [
        _bounded(
            "Δppl", estimates.ppl_increase_pct, limits.max_ppl_increase_pct, "limit", PERCENT_CHANGE, tokens
        )
    ]
    if limits.max_ppl is not None:
        checks.append(_point(ppl <= limits.max_ppl, f"ppl {ppl:.3f} vs max {limits.max_ppl:.3f}"))
    if limits.min_speedup is not None:
        if metrics.speed is None or baseline.speed is None or not baseline.speed.tokens_per_second:
            checks.append(_point(False, "speed-up limit set but decode speed was not measured"))
        else:
            speedup = metrics.speed.tokens_per_second / baseline.speed.tokens_per_second
            checks.append(
                _point(
                    speedup >= limits.min_speedup, f"speed-up {speedup:.2f}x vs min {limits.min_speedup:.2f}x"
                )
            )
    if limits.max_size_mb is not None:
        checks.append(
            _point(
                metrics.size_mb <= limits.max_size_mb,
                f"size {metrics.size_mb:.1f} MiB vs max {limits.max_size_mb:.1f} MiB",
            )
        )
    for limit, figure, label, shown, bound in (
        (limits.max_kld, estimates.mean_kld, "mean KLD", KLD, "max"),
        (limits.min_top1_agreement, estimates.top1_agreement, "top-1 agreement", SHARE, "min"),
    ):
        if limit is None:
            continue
        if figure is None:
            checks.append(_point(False, f"{label} limit set but divergence was not measured"))
        else:
            checks.append(_bounded(label, figure, limit, bound, shown, tokens))
    outcomes = {outcome for outcome, _, _ in checks}
    outcome = next(o for o in ("FAIL", "INCONCLUSIVE", "PASS") if o in outcomes)
    needs = [needed for outcome, _, needed in checks if outcome == "INCONCLUSIVE"]
    return Verdict(
        outcome=outcome,
        reasons=[f"{PREFIX[outcome]}: {text}" for outcome, text, _ in checks],
        estimates=estimates,
        tokens_needed=max(needs) if outcome == "INCONCLUSIVE" and None not in needs else None,
    )


def with_interval(figure: Interval, number: str, unit: str = "", scale: float = 1.0) -> str:
    """`+7.80 % [+6.10, +9.40]`: a figure in `number` format and `unit`, its 95 % interval if it has one."""
    show = lambda value: format(value * scale, number)  # noqa: E731
    interval = "" if figure.low is None else f" [{show(figure.low)}, {show(figure.high)}]"
    return f"{show(figure.value)}{unit}{interval}"


Check = tuple[Outcome, str, int | None]  # outcome, reason, tokens that would decide an inconclusive one


def _point(ok: bool, text: str) -> Check:
    return ("PASS" if ok else "FAIL"), text, None


def _bounded(
    label: str, figure: Interval, limit: float, bound: str, shown: tuple[str, str, float], tokens: int
) -> Check:
    """A limit on a figure with an interval: PASS when all of the interval is within it, FAIL when none
    is, else INCONCLUSIVE, saying how many tokens would decide. `bound` is `max`/`limit` (at most) or
    `min` (at least); `shown` the figure's format, unit and scale."""
    number, unit, scale = shown
    low = figure.value if figure.low is None else figure.low
    high = figure.value if figure.high is None else figure.high
    slack = 1e-9  # 25.5 vs 25.0 is +2 %, not +2.0000000000000018
    within, beyond = (high <= limit + slack, low > limit + slack)
    if bound == "min":
        within, beyond = (low >= limit - slack, high < limit - slack)
    text = f"{label} {with_interval(figure, *shown)} vs {bound} {limit * scale:{number}}{unit}"
    if within or beyond:
        return ("PASS" if within else "FAIL"), text, None
    if abs(figure.value - limit) <= slack:
        return "INCONCLUSIVE", f"{text}: the figure is on the limit, no number of tokens would decide", None
    needed = tokens_to_decide(figure.value, low, high, limit, tokens)
    return "INCONCLUSIVE", f"{text}: about {needed:,} tokens would decide ({tokens:,} scored)", needed
