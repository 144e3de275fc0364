"""bench.coverage's counting, on synthetic window figures with a known answer (no model runs)."""

import numpy as np

from bench.coverage import coverage, covers, subsets
from quantforge.core.records import Interval, Metrics, Perplexity, WeightShares

WINDOW = 100  # tokens scored per window


def scored(window_nll: list[float]) -> Metrics:
    """Metrics of a model whose windows' summed NLLs are `window_nll`."""
    tokens = len(window_nll) * WINDOW
    mean = sum(window_nll) / tokens
    return Metrics(
        perplexity=Perplexity(
            ppl=float(np.exp(mean)),
            mean_nll=mean,
            tokens_scored=tokens,
            windows=len(window_nll),
            window_nll=window_nll,
        ),
        speed=None,
        size_mb=1.0,
        weights=WeightShares(int4=0.0, int8=1.0, float=0.0),
    )


def test_covers_includes_the_ends_and_needs_both_bounds():
    interval = Interval(value=1.0, low=0.5, high=2.0)
    assert [covers(interval, v) for v in (0.5, 2.0, 0.49, 2.01)] == [True, True, False, False]
    assert not covers(Interval(value=1.0), 1.0)


def test_a_subset_covers_the_full_text_exactly_when_it_has_windows_of_both_kinds():
    """Half the windows cost the variant nothing, half 0.02 nats a token: the full text's Δppl lies
    between the two, and a subset of two windows straddles it only when it holds one of each."""
    baseline = [300.0] * 8
    variant = [300.0, 302.0] * 4
    picks = subsets(8, 2, 20, seed=0)
    result = coverage(scored(variant), scored(baseline), picks)["ppl_increase_pct"]

    mixed = sum(len({int(i) % 2 for i in p}) == 2 for p in picks)
    assert 0 < mixed < 20
    assert result["covered"] == mixed
    assert abs(result["full_text"] - (np.exp(0.01) - 1) * 100) < 1e-9
    assert result["below"] == sum(set(p % 2) == {0} for p in picks)  # no cost in it: the interval is low
    assert all(len(set(p)) == 2 for p in picks)
