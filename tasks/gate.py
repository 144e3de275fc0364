"""gate: a verdict with every reason, from a variant's metrics against the baseline of the same run."""

import math

from pydantic import BaseModel, ConfigDict, Field

from quantforge.tasks.recipes import GateOverride, Recipe

# Default allowed perplexity increase by weight format, in percent. INT8 weight-only costs well under 1 %
# on every model we measured, so 2 % catches a broken export; 4-bit costs more, most on small models.
# bf16 (IPEX) rounds weights and activations only: measured +0.1 %; 2 % catches a broken run as for INT8.
DEFAULT_MAX_PPL_INCREASE_PCT = {"bf16": 2.0, "int8": 2.0, "w8a8": 5.0, "int4": 10.0}


class GateLimits(BaseModel):
    """Run-wide gate limits from the command line; they override recipe and default limits."""

    model_config = ConfigDict(extra="forbid")

    max_ppl_increase_pct: float | None = Field(default=None, ge=0)
    max_ppl: float | None = Field(default=None, gt=0)
    min_speedup: float | None = Field(default=None, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)


class Verdict(BaseModel):
    """Pass or fail, with one reason per rule checked."""

    passed: bool
    reasons: list[str]


def effective_limits(recipe: Recipe, run_limits: GateLimits) -> GateOverride:
    """Command line over recipe over defaults-by-weight-format."""
    merged = {
        "max_ppl_increase_pct": DEFAULT_MAX_PPL_INCREASE_PCT[recipe.weight_format],
        **recipe.gate.model_dump(exclude_none=True),
        **run_limits.model_dump(exclude_none=True),
    }
    return GateOverride(**merged)


def judge(
    ppl: float,
    baseline_ppl: float,
    tokens_per_second: float | None,
    baseline_tokens_per_second: float | None,
    size_mb: float,
    limits: GateOverride,
) -> Verdict:
    """Check each rule; a non-finite perplexity fails outright."""
    if not math.isfinite(ppl):
        return Verdict(passed=False, reasons=[f"perplexity is {ppl}: the variant is broken"])
    checks = []
    increase = (ppl / baseline_ppl - 1) * 100
    checks.append(
        (
            increase <= limits.max_ppl_increase_pct + 1e-9,  # 25.5 vs 25.0 is +2 %, not +2.0000000000000018
            f"Δppl {increase:+.2f} % vs limit +{limits.max_ppl_increase_pct:.2f} %",
        )
    )
    if limits.max_ppl is not None:
        checks.append((ppl <= limits.max_ppl, f"ppl {ppl:.3f} vs max {limits.max_ppl:.3f}"))
    if limits.min_speedup is not None:
        if tokens_per_second is None or not baseline_tokens_per_second:
            checks.append((False, "speed-up limit set but decode speed was not measured"))
        else:
            speedup = tokens_per_second / baseline_tokens_per_second
            checks.append(
                (speedup >= limits.min_speedup, f"speed-up {speedup:.2f}x vs min {limits.min_speedup:.2f}x")
            )
    if limits.max_size_mb is not None:
        checks.append(
            (size_mb <= limits.max_size_mb, f"size {size_mb:.1f} MiB vs max {limits.max_size_mb:.1f} MiB")
        )
    return Verdict(
        passed=all(ok for ok, _ in checks),
        reasons=[("pass: " if ok else "FAIL: ") + text for ok, text in checks],
    )
