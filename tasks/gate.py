"""gate: a verdict with every reason, from a variant's metrics against the baseline of the same run.

The one place the perplexity increase (Δppl) is computed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from quantforge.core.records import Metrics, Verdict

if TYPE_CHECKING:  # recipes imports GateLimits from here
    from quantforge.tasks.recipes import Recipe

# Default allowed perplexity increase by weight format, in percent. INT8 weight-only costs well under 1 %
# on every model we measured, so 2 % catches a broken export; 4-bit costs more, most on small models.
# bf16 (IPEX) rounds weights and activations only: measured +0.1 %; 2 % catches a broken run as for INT8.
DEFAULT_MAX_PPL_INCREASE_PCT = {"bf16": 2.0, "int8": 2.0, "w8a8": 5.0, "int4": 10.0}


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


def judge(metrics: Metrics, baseline: Metrics, limits: GateLimits) -> Verdict:
    """Check each rule against the baseline of the variant's runtime; a non-finite perplexity fails
    outright."""
    ppl = metrics.perplexity.ppl
    if not math.isfinite(ppl):
        return Verdict(passed=False, reasons=[f"perplexity is {ppl}: the variant is broken"])
    checks = []
    increase = ppl_increase_pct(metrics, baseline)
    checks.append(
        (
            increase <= limits.max_ppl_increase_pct + 1e-9,  # 25.5 vs 25.0 is +2 %, not +2.0000000000000018
            f"Δppl {increase:+.2f} % vs limit +{limits.max_ppl_increase_pct:.2f} %",
        )
    )
    if limits.max_ppl is not None:
        checks.append((ppl <= limits.max_ppl, f"ppl {ppl:.3f} vs max {limits.max_ppl:.3f}"))
    if limits.min_speedup is not None:
        if metrics.speed is None or baseline.speed is None or not baseline.speed.tokens_per_second:
            checks.append((False, "speed-up limit set but decode speed was not measured"))
        else:
            speedup = metrics.speed.tokens_per_second / baseline.speed.tokens_per_second
            checks.append(
                (speedup >= limits.min_speedup, f"speed-up {speedup:.2f}x vs min {limits.min_speedup:.2f}x")
            )
    if limits.max_size_mb is not None:
        checks.append(
            (
                metrics.size_mb <= limits.max_size_mb,
                f"size {metrics.size_mb:.1f} MiB vs max {limits.max_size_mb:.1f} MiB",
            )
        )
    return Verdict(
        passed=all(ok for ok, _ in checks),
        reasons=[("pass: " if ok else "FAIL: ") + text for ok, text in checks],
    )
