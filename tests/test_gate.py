"""Gates: defaults by weight format, override order, and every reason kept."""

import math

from quantforge.core.records import Metrics, Perplexity, Speed, WeightShares
from quantforge.tasks.gate import GateLimits, effective_limits, judge, ppl_increase_pct
from quantforge.tasks.recipes import Recipe


def metrics(ppl: float, tokens_per_second: float | None = None, size_mb: float = 90.0) -> Metrics:
    speed = (
        Speed(tokens_per_second=tokens_per_second, ttft_ms=1.0, new_tokens=8) if tokens_per_second else None
    )
    return Metrics(
        perplexity=Perplexity(ppl=ppl, mean_nll=math.log(ppl), tokens_scored=100, windows=1),
        speed=speed,
        size_mb=size_mb,
        weights=WeightShares(int4=0.0, int8=1.0, float=0.0),
    )


def test_defaults_by_weight_format_and_override_order():
    int8 = Recipe(name="i8", bits=8)
    int4 = Recipe(name="i4", bits=4, group_size=64, gate={"max_ppl_increase_pct": 15})
    assert effective_limits(int8, GateLimits()).max_ppl_increase_pct == 2.0
    assert effective_limits(int4, GateLimits()).max_ppl_increase_pct == 15
    assert effective_limits(int4, GateLimits(max_ppl_increase_pct=1)).max_ppl_increase_pct == 1


def test_verdict_keeps_every_reason():
    limits = GateLimits(max_ppl_increase_pct=2, max_ppl=30, min_speedup=1.5, max_size_mb=100)
    verdict = judge(metrics(25.5, 40.0, 150.0), metrics(25.0, 20.0), limits)
    assert not verdict.passed
    assert len(verdict.reasons) == 4
    assert verdict.reasons[0].startswith("pass: Δppl +2.00 %")
    assert verdict.reasons[3].startswith("FAIL: size 150.0 MiB")


def test_pass_and_non_finite_perplexity():
    limits = GateLimits(max_ppl_increase_pct=10)
    assert judge(metrics(26.0), metrics(25.0), limits).passed
    broken = judge(metrics(math.nan), metrics(25.0), limits)
    assert not broken.passed and "not" not in broken.reasons[0] and "nan" in broken.reasons[0]


def test_speed_limit_without_a_measured_speed_fails_and_says_so():
    verdict = judge(metrics(25.0), metrics(25.0, 20.0), GateLimits(max_ppl_increase_pct=2, min_speedup=1.1))
    assert not verdict.passed
    assert verdict.reasons[1] == "FAIL: speed-up limit set but decode speed was not measured"


def test_the_increase_is_relative_to_the_baseline_in_percent():
    assert math.isclose(ppl_increase_pct(metrics(26.0), metrics(25.0)), 4.0)
