"""The reuse policy on its own: records in, decisions out (no Prefect, no MLflow, no model)."""

import math

from quantforge.core.records import Lineage, Metrics, Perplexity, RecordedVariant, Verdict, WeightShares
from quantforge.tasks.gate import GateLimits
from quantforge.tasks.plan import plan
from quantforge.tasks.recipes import Recipe

INT8 = Recipe(name="int8", bits=8)
INT4 = Recipe(name="int4", bits=4, group_size=64)


def metrics(ppl: float) -> Metrics:
    return Metrics(
        perplexity=Perplexity(ppl=ppl, mean_nll=math.log(ppl), tokens_scored=100, windows=1),
        speed=None,
        size_mb=50.0,
        weights=WeightShares(int4=0.0, int8=1.0, float=0.0),
    )


def record(recipe: Recipe, ppl: float, passed: bool, version: int | None) -> RecordedVariant:
    """A record of an earlier run, against a baseline of perplexity 20."""
    return RecordedVariant(
        identity=f"id-{recipe.name}",
        run_id="run",
        recipe_name=recipe.name,
        metrics=metrics(ppl),
        ppl_increase_pct=(ppl / 20 - 1) * 100,
        verdict=Verdict(passed=passed, reasons=["as that run's gates said"]),
        lineage=Lineage(
            source_repo="org/model",
            source_sha="a" * 40,
            evaluation="e",
            evaluation_hash="h",
            baseline=metrics(20),
        ),
        quantize_seconds=1.0,
        quantize_peak_pss_mb=100.0,
        model_name=f"model--{recipe.name}" if version else None,
        model_version=version,
    )


def test_no_record_means_make_and_a_registered_record_is_taken_as_is():
    registered = record(INT8, 20.1, passed=True, version=3)
    first, second = plan([INT8, INT4], {"int8": registered}, GateLimits())
    assert first.reuse.model_version == 3 and not first.make
    assert second.make and second.reuse is None


def test_a_record_is_judged_again_with_this_runs_gates():
    """+0.5 % passed the defaults when made; a run asking for at most +0.1 % sees it fail, and reuses
    the record (nothing to register) rather than making the same bytes again."""
    registered = record(INT8, 20.1, passed=True, version=3)
    (decision,) = plan([INT8], {"int8": registered}, GateLimits(max_ppl_increase_pct=0.1))
    assert not decision.make
    assert not decision.reuse.verdict.passed
    assert decision.reuse.verdict.reasons == ["FAIL: Δppl +0.50 % vs limit +0.10 %"]


def test_a_record_that_failed_then_but_passes_now_is_made_again_to_be_registered():
    failed_then = record(INT4, 23.0, passed=False, version=None)  # +15 % failed the 10 % default
    (decision,) = plan([INT4], {"int4": failed_then}, GateLimits(max_ppl_increase_pct=20))
    assert decision.make
    (still_failing,) = plan([INT4], {"int4": failed_then}, GateLimits())
    assert not still_failing.make and not still_failing.reuse.verdict.passed


def test_a_runtime_whose_variants_are_all_reused_takes_its_baseline_from_their_record():
    from quantforge.tasks.backends.base import Baseline
    from quantforge.tasks.baselines import run_baselines

    torchao = Recipe(name="torchao-int8", backend="torchao", bits=8, sym=True)
    decisions = plan(
        [torchao, INT8], {"torchao-int8": record(torchao, 20.1, passed=True, version=1)}, GateLimits()
    )
    measured = {"openvino": Baseline(runtime="openvino", label="IR", metrics=metrics(19.0))}
    baselines = run_baselines(measured, decisions)
    assert list(baselines) == ["openvino", "pytorch"]  # the OpenVINO IR first, whatever the recipes' order
    assert baselines["openvino"].metrics.perplexity.ppl == 19.0
    assert baselines["pytorch"].metrics.perplexity.ppl == 20.0 and baselines["pytorch"].usage is None


def test_a_reused_records_baseline_keeps_how_it_was_scored():
    """A record judged against the INT8 weight-only baseline of a large model says so in a later run."""
    from quantforge.tasks.baselines import run_baselines

    reused = record(INT8, 20.1, passed=True, version=1)
    reused.lineage.baseline_label = "original (OpenVINO IR, INT8 weight-only)"
    baselines = run_baselines({}, plan([INT8], {"int8": reused}, GateLimits()))
    assert baselines["openvino"].label == "original (OpenVINO IR, INT8 weight-only)"
    older = record(INT8, 20.1, passed=True, version=1)  # a record from before the label was kept
    assert run_baselines({}, plan([INT8], {"int8": older}, GateLimits()))["openvino"].label == (
        "original (OpenVINO IR)"
    )
