"""The best pick, the Pareto front, the table and the model card of a run's variants (no model needed)."""

import math

from quantforge.core.manifest import Manifest
from quantforge.core.records import Divergence, Metrics, Perplexity, Speed, Verdict, WeightShares
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.gate import GateLimits, judge, ppl_increase_pct
from quantforge.tasks.model_card import CardContext, dataset_ref, model_card
from quantforge.tasks.report import (
    RunReport,
    VariantResult,
    best_passing,
    markdown,
    pareto_front,
    quality_cells,
    table_rows,
)


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


def judged(window_nll: list[float], baseline_nll: list[float], divergence: bool = True) -> VariantResult:
    """A variant scored on windows of 511 tokens (mean KLD about 0.02, top-1 about 90 % when
    `divergence`), judged with a +5 % Δppl limit; its baseline's windows as given."""
    tokens = 511 * len(window_nll)

    def scored(nll: list[float]) -> Perplexity:
        mean = sum(nll) / tokens
        return Perplexity(
            ppl=math.exp(mean), mean_nll=mean, tokens_scored=tokens, windows=len(nll), window_nll=nll
        )

    kld, top1 = (
        [511 * (0.02 + 0.002 * (i % 3)) for i in range(len(window_nll))],
        [460 - i for i in range(len(window_nll))],
    )
    metrics = Metrics(
        perplexity=scored(window_nll),
        divergence=Divergence(
            mean_kld=sum(kld) / tokens,
            p99_kld=0.25,
            top1_agreement=sum(top1) / tokens,
            top_k=32,
            rest_samples=32,
            window_kld=kld,
            window_top1=top1,
        )
        if divergence
        else None,
        speed=None,
        size_mb=50.0,
        weights=WeightShares(int4=1.0, int8=0.0, float=0.0),
    )
    baseline = metrics.model_copy(update={"perplexity": scored(baseline_nll), "divergence": None})
    verdict = judge(metrics, baseline, GateLimits(max_ppl_increase_pct=5.0))
    result = variant("int4", 50.0, metrics.perplexity.ppl, 40.0)
    return result.model_copy(
        update={
            "metrics": metrics,
            "verdict": verdict,
            "ppl_increase_pct": ppl_increase_pct(metrics, baseline),
        }
    )


BASELINE_NLL = [1500.0 + 30 * (i % 5) for i in range(8)]


def report_of(result: VariantResult) -> RunReport:
    return RunReport(
        source_repo="org/model",
        source_sha="a" * 40,
        toolchain={},
        evaluation="text",
        evaluation_hash="h",
        eval_tokens=8 * 512,
        calibration=None,
        baselines={
            "openvino": Baseline(runtime="openvino", label="IR", metrics=variant("b", 1, 2, 3).metrics)
        },
        mlflow_run_id="run",
        variants=[result],
        best=None,
        pareto_front=[],
        wall_seconds=1.0,
    )


def test_the_table_shows_each_figure_with_its_interval_and_the_three_state_verdict():
    worse = [n + 511 * math.log(1.049) + 40 * (i % 2) - 20 for i, n in enumerate(BASELINE_NLL)]
    result = judged(worse, BASELINE_NLL)
    estimates = result.verdict.estimates
    (baseline_row, row) = table_rows(report_of(result))
    delta, kld, top1 = estimates.ppl_increase_pct, estimates.mean_kld, estimates.top1_agreement
    assert result.verdict.outcome == "INCONCLUSIVE" and delta.low < 5.0 < delta.high
    assert row["Δppl"] == f"{delta.value:+.2f} % [{delta.low:+.2f}, {delta.high:+.2f}]"
    assert row["KLD"] == f"{kld.value:.4g} [{kld.low:.4g}, {kld.high:.4g}]" and row["KLD p99"] == "0.25"
    assert row["top-1"] == f"{top1.value:.1%} [{top1.low * 100:.1f}, {top1.high * 100:.1f}]".replace(
        "%", " %"
    )
    assert row["verdict"] == "INCONCLUSIVE"
    assert [baseline_row[k] for k in ("Δppl", "KLD", "KLD p99", "top-1", "verdict")] == ["-"] * 5
    assert f"| int4 | openvino | {row['ppl']} | {row['Δppl']} | {row['KLD']} |" in markdown(report_of(result))


def test_a_record_from_before_intervals_shows_its_figures_without_them():
    old = variant("int8", 137.0, 20.1, 50.0).model_copy(update={"ppl_increase_pct": 0.5})
    (_, row) = table_rows(report_of(old))
    assert [row[k] for k in ("Δppl", "KLD", "KLD p99", "top-1", "verdict")] == [
        "+0.50 %",
        "-",
        "-",
        "-",
        "PASS",
    ]


def test_the_model_card_gives_the_intervals_and_the_divergence():
    result = judged([n + 511 * 0.02 + 3 * (i % 2) for i, n in enumerate(BASELINE_NLL)], BASELINE_NLL)
    cells = quality_cells(result)
    manifest = Manifest(
        source_repo="org/model",
        source_sha="a" * 40,
        recipe_name="int4",
        recipe={"bits": 4},
        recipe_hash="r",
        variant_identity="i",
        toolchain={"openvino": "1"},
        calibration=None,
        calibration_hash=None,
        files={},
    )
    baseline = Baseline(
        runtime="openvino", label="original (OpenVINO IR)", metrics=variant("b", 1, 20, 3).metrics
    )
    context = CardContext(
        repo_id="org/model-int4",
        endpoint="https://huggingface.co",
        evaluation=dataset_ref("wikitext2", "e" * 64, "evaluation"),
    )
    card = model_card(result, manifest, baseline, context)
    assert result.verdict.outcome == "PASS" and "Gate passed: pass: Δppl " in card
    assert f"| int4 | {result.metrics.perplexity.ppl:.3f} | {cells['Δppl']} | 50.0 | - | - |" in card
    assert (
        f"mean KL divergence {cells['KLD']} nats per token (p99 0.25), top-1 agreement {cells['top-1']}"
        in card
    )
    assert "paired bootstrap over 8 evaluation windows" in card
    no_divergence = result.model_copy(
        update={"metrics": result.metrics.model_copy(update={"divergence": None})}
    )
    assert "KL divergence" not in model_card(no_divergence, manifest, baseline, context)


def test_a_rewritten_report_keeps_the_plot_of_the_same_points_and_redraws_changed_ones(tmp_path):
    from quantforge.tasks.output import write_output

    report = report_of(judged([n + 10 for n in BASELINE_NLL], BASELINE_NLL))
    folder = write_output(report, tmp_path)
    plot = folder / "pareto.png"
    drawn = plot.read_bytes()
    assert drawn[:4] == b"\x89PNG" and b"quantforge pareto " in drawn

    plot.write_bytes(drawn + b"kept")  # a marker a redrawing would lose (PNG readers ignore trailing bytes)
    write_output(report.model_copy(update={"wall_seconds": 2.0}), tmp_path)
    assert plot.read_bytes() == drawn + b"kept"

    changed = report_of(judged([n + 40 for n in BASELINE_NLL], BASELINE_NLL))
    write_output(changed, tmp_path)
    assert plot.read_bytes()[:4] == b"\x89PNG" and not plot.read_bytes().endswith(b"kept")
    assert plot.read_bytes() != drawn
