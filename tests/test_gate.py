"""Gates: defaults by weight format, override order, and every reason kept."""

import math

from quantforge.tasks.gate import GateLimits, effective_limits, judge
from quantforge.tasks.recipes import GateOverride, Recipe


def test_defaults_by_weight_format_and_override_order():
    int8 = Recipe(name="i8", bits=8)
    int4 = Recipe(name="i4", bits=4, group_size=64, gate={"max_ppl_increase_pct": 15})
    assert effective_limits(int8, GateLimits()).max_ppl_increase_pct == 2.0
    assert effective_limits(int4, GateLimits()).max_ppl_increase_pct == 15
    assert effective_limits(int4, GateLimits(max_ppl_increase_pct=1)).max_ppl_increase_pct == 1


def test_verdict_keeps_every_reason():
    limits = GateOverride(max_ppl_increase_pct=2, max_ppl=30, min_speedup=1.5, max_size_mb=100)
    verdict = judge(25.5, 25.0, 40.0, 20.0, 150.0, limits)
    assert not verdict.passed
    assert len(verdict.reasons) == 4
    assert verdict.reasons[0].startswith("pass: Δppl +2.00 %")
    assert verdict.reasons[3].startswith("FAIL: size 150.0 MiB")


def test_pass_and_non_finite_perplexity():
    limits = GateOverride(max_ppl_increase_pct=10)
    assert judge(26.0, 25.0, None, None, 90.0, limits).passed
    broken = judge(math.nan, 25.0, None, None, 90.0, limits)
    assert not broken.passed and "not" not in broken.reasons[0] and "nan" in broken.reasons[0]
