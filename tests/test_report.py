"""The best pick and the Pareto front of a run's variants (no model needed)."""

import math

from quantforge.core.records import Metrics, Perplexity, Speed, Verdict, WeightShares
from quantforge.tasks.report import VariantResult, best_passing, pareto_front


def variant(recipe: str, size_mb: float, ppl: float, tokens_per_second: float, passed: bool = True):
    return VariantResult(
        recipe=recipe,
        backend="openvino",
        recipe_hash=recipe,
        identity=recipe,
        path=None,
        reused=False,
        quantize_seconds=1.0,
        quantize_peak_pss_mb=1.0,
        metrics=Metrics(
            perplexity=Perplexity(ppl=ppl, mean_nll=math.log(ppl), tokens_scored=1024, windows=2),
            speed=Speed(tokens_per_second=tokens_per_second, ttft_ms=50.0, new_tokens=8),
            size_mb=size_mb,
            weights=WeightShares(int4=0.6, int8=0.4, float=0.0),
        ),
        ppl_increase_pct=0.0,
        verdict=Verdict(passed=passed, reasons=["pass" if passed else "fail"]),
    )


def test_same_size_goes_to_the_lower_perplexity_even_when_it_decodes_slower():
    """The case seen in a sweep: AWQ+SE and GPTQ make equal-sized models; GPTQ scored better, AWQ+SE
    happened to decode 2 tok/s faster. The best pick is the better model, and it is on the front."""
    results = [
        variant("int8-asym", 137.3, 20.52, 54.0),
        variant("int4-awq-se", 99.04, 22.40, 47.0),
        variant("int4-gptq", 99.01, 22.02, 45.0),
        variant("int4-asym-g128", 89.9, 26.72, 44.0, passed=False),
    ]
    assert best_passing(results) == "int4-gptq"
    assert pareto_front(results) == ["int8-asym", "int4-gptq", "int4-asym-g128"]
    assert best_passing(results) in pareto_front(results)


def test_smallest_passing_wins_and_equal_quality_goes_to_the_faster():
    results = [
        variant("int8-asym", 137.3, 20.5, 60.0),
        variant("a", 99.0, 22.0, 40.0),
        variant("b", 99.0, 22.0, 50.0),
        variant("tiny-but-failing", 50.0, 90.0, 80.0, passed=False),
    ]
    assert best_passing(results) == "b"
    assert best_passing([results[-1]]) is None
