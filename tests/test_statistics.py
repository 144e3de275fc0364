"""Divergence and its statistics on synthetic distributions with known answers (no model needed)."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from quantforge.core.records import (
    Divergence,
    GenerationAgreement,
    Interval,
    Metrics,
    Perplexity,
    Speed,
    Verdict,
    WeightShares,
)
from quantforge.tasks import torch_runtime
from quantforge.tasks.gate import GateLimits, estimate, judge
from quantforge.tasks.generation import NEW_TOKENS, PROMPTS
from quantforge.tasks.report import quality_cells
from quantforge.tasks.statistics import small_sample_factor, tokens_to_decide
from quantforge.tasks.variants import BEYOND_THE_TEXT, more_windows

VOCAB, LENGTH, WINDOWS = 500, 129, 8


def logits(seed: int, scale: float = 3.0) -> torch.Tensor:
    """Random logits of every window: [WINDOWS, LENGTH, VOCAB]."""
    return scale * torch.randn(WINDOWS, LENGTH, VOCAB, generator=torch.Generator().manual_seed(seed))


def windows() -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, size=(WINDOWS, LENGTH))


def score(all_logits: torch.Tensor, **kwargs) -> dict:
    """`score_windows` over synthetic logits, looked up by window content."""
    ids = windows()
    by_window = {ids[i].tobytes(): all_logits[i] for i in range(WINDOWS)}
    return torch_runtime.score_windows(lambda window: by_window[window.tobytes()], ids, **kwargs)


def exact_kld(base: torch.Tensor, variant: torch.Tensor) -> np.ndarray:
    """Full-vocabulary KL(base || variant) of every scored token: [WINDOWS, LENGTH - 1]."""
    log_p = torch.log_softmax(base[:, :-1].double(), dim=-1)
    log_q = torch.log_softmax(variant[:, :-1].double(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).numpy()


def test_a_model_against_its_own_distributions_diverges_by_nothing(tmp_path):
    base = logits(1)
    kept = score(base, keep=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == set(torch_runtime.REFERENCE_FILES)
    again = score(base, against=tmp_path)
    assert again["perplexity"] == kept["perplexity"] and kept["divergence"] is None
    divergence = again["divergence"]
    assert divergence["mean_kld"] == 0.0 and divergence["p99_kld"] == 0.0
    assert divergence["top1_agreement"] == 1.0 and divergence["window_top1"] == [LENGTH - 1] * WINDOWS
    assert divergence["window_kld"] == [0.0] * WINDOWS


def test_window_nll_is_the_summed_cross_entropy_of_each_window():
    base = logits(2)
    scored = score(base)["perplexity"]
    targets = torch.from_numpy(windows()[:, 1:])
    expected = [
        float(torch.nn.functional.cross_entropy(base[i, :-1], targets[i], reduction="sum"))
        for i in range(WINDOWS)
    ]
    assert scored["window_nll"] == pytest.approx(expected, rel=1e-6)
    assert scored["mean_nll"] == pytest.approx(sum(expected) / (WINDOWS * (LENGTH - 1)), rel=1e-6)
    assert scored["ppl"] == pytest.approx(math.exp(scored["mean_nll"]))
    assert (scored["tokens_scored"], scored["windows"]) == (WINDOWS * (LENGTH - 1), WINDOWS)


def test_the_compact_form_is_exact_when_the_rest_holds_no_mass(tmp_path):
    """Every token's mass in 10 tokens (the others 60 nats below): the top-64 form gives the exact KLD."""
    base = torch.full((WINDOWS, LENGTH, VOCAB), -60.0)
    base[..., :10] = logits(3)[..., :10]
    variant = base + 0.3 * logits(4)
    score(base, keep=tmp_path)
    divergence = score(variant, against=tmp_path)["divergence"]
    exact = exact_kld(base, variant)
    assert divergence["mean_kld"] == pytest.approx(exact.mean(), rel=1e-5)
    assert divergence["window_kld"] == pytest.approx(exact.sum(axis=1).tolist(), rel=1e-5)
    assert divergence["p99_kld"] == pytest.approx(np.percentile(exact, 99), rel=1e-5)


def test_with_most_mass_in_the_rest_its_drawn_tokens_estimate_the_exact_kld(tmp_path):
    """Flat distributions: the top 32 of 500 tokens hold 30 % of the mass. Counting the rest as one
    outcome would find 0.037 nats of the exact 0.125; the tokens drawn from it find it within 3 %."""
    base, variant = logits(5, scale=1.0), logits(5, scale=1.0) + 0.5 * logits(6, scale=1.0)
    score(base, keep=tmp_path)
    divergence = score(variant, against=tmp_path)["divergence"]
    exact = exact_kld(base, variant)
    assert divergence["mean_kld"] == pytest.approx(exact.mean(), rel=0.03)
    assert (divergence["top_k"], divergence["rest_samples"]) == (32, 32)


def test_top1_agreement_counts_the_tokens_whose_most_likely_next_token_is_the_baseline_s(tmp_path):
    base = logits(7)
    variant = base.clone()
    top = base.argmax(-1)
    flipped = torch.zeros(WINDOWS, LENGTH, dtype=torch.bool)
    flipped[:, ::4] = True  # every fourth position: another token takes the lead
    variant[flipped, (top[flipped] + 1) % VOCAB] = base.max(-1).values[flipped] + 5.0
    score(base, keep=tmp_path)
    divergence = score(variant, against=tmp_path)["divergence"]
    agree = (~flipped[:, :-1]).sum(dim=1).tolist()
    assert divergence["window_top1"] == agree
    assert divergence["top1_agreement"] == pytest.approx(sum(agree) / (WINDOWS * (LENGTH - 1)))


def test_a_broken_model_s_nan_distributions_are_kept_and_score_nan(tmp_path):
    """The run then stops on the baseline's NaN perplexity, with its own message, not inside the draws."""
    kept = score(torch.full((WINDOWS, LENGTH, VOCAB), float("nan")), keep=tmp_path)
    assert math.isnan(kept["perplexity"]["ppl"])
    assert math.isnan(score(logits(9), against=tmp_path)["divergence"]["mean_kld"])


def test_distributions_of_other_windows_are_refused(tmp_path):
    score(logits(8), keep=tmp_path)
    with pytest.raises(ValueError, match=r"^`against`: .* not of 2x128$"):
        torch_runtime.score_windows(lambda window: logits(8)[0], windows()[:2], against=tmp_path)


# Paired bootstrap and the three verdicts, on windows' figures made up with known answers.

TOKENS = 511  # per window


def measured(window_nll, window_kld=None, window_top1=None) -> Metrics:
    """Metrics of a model scored on len(window_nll) windows of TOKENS tokens (with divergence figures
    when given)."""
    windows, scored = len(window_nll), len(window_nll) * TOKENS
    mean = float(np.sum(window_nll)) / scored
    divergence = None
    if window_kld is not None:
        divergence = Divergence(
            mean_kld=float(np.sum(window_kld)) / scored,
            p99_kld=1.0,
            top1_agreement=float(np.sum(window_top1)) / scored,
            top_k=32,
            rest_samples=32,
            window_kld=list(window_kld),
            window_top1=list(window_top1),
        )
    return Metrics(
        perplexity=Perplexity(
            ppl=math.exp(mean),
            mean_nll=mean,
            tokens_scored=scored,
            windows=windows,
            window_nll=list(window_nll),
        ),
        divergence=divergence,
        speed=None,
        size_mb=50.0,
        weights=WeightShares(int4=1.0, int8=0.0, float=0.0),
    )


def baseline_nll(windows: int = 32, seed: int = 0) -> np.ndarray:
    """Windows' summed NLL around 3 nats per token, some passages harder than others."""
    return TOKENS * (3.0 + 0.3 * np.random.default_rng(seed).standard_normal(windows))


def shifted(base: np.ndarray, per_token: float, noise: float, seed: int) -> np.ndarray:
    """The baseline's windows `per_token` nats worse on average, each window off by `noise` nats/token."""
    return base + TOKENS * (per_token + noise * np.random.default_rng(seed).standard_normal(len(base)))


def test_identical_models_have_a_zero_interval_and_the_same_one_on_every_run():
    base = measured(baseline_nll(), np.zeros(32), np.full(32, TOKENS))
    figures = estimate(base, base)
    assert figures.ppl_increase_pct == Interval(value=0.0, low=0.0, high=0.0)
    assert figures.mean_kld == Interval(value=0.0, low=0.0, high=0.0)
    assert figures.top1_agreement == Interval(value=1.0, low=1.0, high=1.0)
    variant = measured(shifted(baseline_nll(), 0.05, 0.02, seed=1))
    assert estimate(variant, base) == estimate(variant, base)  # a fixed seed: a rerun says the same


def test_the_interval_of_a_known_shift_covers_it_about_19_times_in_20():
    """Variants 5 % worse than the baseline per token (log 1.05 nats), each window off by noise: the 95 %
    interval of Δppl contains +5 % in about 95 % of 200 made-up evaluations, and never contains 0."""
    true_pct, base = 5.0, baseline_nll()
    covered = 0
    for seed in range(200):
        variant = measured(shifted(base, math.log1p(true_pct / 100), 0.01, seed))
        delta = estimate(variant, measured(base)).ppl_increase_pct
        covered += delta.low <= true_pct <= delta.high
        assert delta.low > 0 and delta.low <= delta.value <= delta.high
    assert 180 <= covered <= 198


@pytest.mark.parametrize("windows", [3, 4, 8])
def test_on_a_handful_of_windows_the_interval_still_covers_a_known_shift_about_19_times_in_20(windows):
    """The plain percentile bootstrap covered +5 % in 79 % of evaluations on 4 windows (its spread is the
    plug-in one, normal not t); widened by the small-sample factor, about 95 % on 3, 4 or 8."""
    true_pct = 5.0
    covered = 0
    for seed in range(200):
        base = baseline_nll(windows, seed=1000 + seed)
        variant = measured(shifted(base, math.log1p(true_pct / 100), 0.01, seed))
        delta = estimate(variant, measured(base)).ppl_increase_pct
        covered += delta.low <= true_pct <= delta.high
    assert 180 <= covered <= 200


def test_the_interval_narrows_as_the_square_root_of_the_windows():
    """The same 16 windows' figures four times over: 4x the windows, half the width (times the ratio of
    the small-sample factors of 16 and 64 windows, 1.123 / 1.028)."""
    base = baseline_nll(16)
    variant = shifted(base, 0.05, 0.02, seed=3)
    widths = []
    for copies in (1, 4):
        delta = estimate(measured(np.tile(variant, copies)), measured(np.tile(base, copies))).ppl_increase_pct
        widths.append(delta.high - delta.low)
    assert widths[0] / widths[1] == pytest.approx(
        2.0 * small_sample_factor(16) / small_sample_factor(64), rel=0.05
    )


def test_tokens_to_decide_scale_the_interval_s_half_width_toward_the_limit():
    # +1.9 % [1.4, 2.4] against +2 %: the upper half-width (0.5) must shrink to 0.1, 5x: 25x the tokens.
    assert tokens_to_decide(1.9, 1.4, 2.4, 2.0, 2044) == 25 * 2044
    # 0.91 [0.88, 0.93] against at least 0.9: the lower half-width 0.03 must shrink to 0.01: 9x.
    assert tokens_to_decide(0.91, 0.88, 0.93, 0.9, 1000) == 9000


def test_pass_fail_and_inconclusive_from_where_the_interval_lies():
    base = measured(baseline_nll())
    limits = GateLimits(max_ppl_increase_pct=5.0)
    at = {pct: measured(shifted(baseline_nll(), math.log1p(pct / 100), 0.01, seed=4)) for pct in (2, 5, 8)}
    assert judge(at[2], base, limits).outcome == "PASS" and judge(at[2], base, limits).passed
    failed = judge(at[8], base, limits)
    assert failed.outcome == "FAIL" and not failed.passed and failed.reasons[0].startswith("FAIL: Δppl +")
    inconclusive = judge(at[5], base, limits)
    assert inconclusive.outcome == "INCONCLUSIVE" and not inconclusive.passed
    delta = inconclusive.estimates.ppl_increase_pct
    needed = tokens_to_decide(delta.value, delta.low, delta.high, 5.0, 32 * TOKENS)
    assert inconclusive.tokens_needed == needed and judge(at[2], base, limits).tokens_needed is None
    (reason,) = inconclusive.reasons
    assert reason == (
        f"INCONCLUSIVE: Δppl {delta.value:+.2f} % [{delta.low:+.2f}, {delta.high:+.2f}] vs limit +5.00 %: "
        f"about {needed:,} tokens would decide ({32 * TOKENS:,} scored)"
    )
    # one failing rule outweighs an inconclusive one
    assert judge(at[5], base, GateLimits(max_ppl_increase_pct=5.0, max_size_mb=1)).outcome == "FAIL"


def test_a_figure_on_its_limit_is_inconclusive_whatever_the_tokens():
    base = measured(baseline_nll())
    at_five = measured(base.perplexity.window_nll + np.resize([-40.0, 40.0], 32) + TOKENS * math.log(1.05))
    (reason,) = judge(at_five, base, GateLimits(max_ppl_increase_pct=5.0)).reasons
    assert reason.startswith("INCONCLUSIVE: Δppl +5.00 % [+")
    assert reason.endswith("vs limit +5.00 %: the figure is on the limit, no number of tokens would decide")


def test_divergence_gates_judge_the_mean_kld_and_top1_agreement_intervals():
    rng = np.random.default_rng(5)
    kld = TOKENS * (0.02 + 0.004 * rng.standard_normal(32))  # mean KLD about 0.02 nats per token
    top1 = np.round(TOKENS * (0.9 + 0.02 * rng.standard_normal(32)))  # about 90 % agreement
    variant, base = measured(shifted(baseline_nll(), 0.01, 0.01, seed=6), kld, top1), measured(baseline_nll())

    def outcomes(**limits) -> list[str]:
        return [
            r.split(":")[0]
            for r in judge(variant, base, GateLimits(max_ppl_increase_pct=5, **limits)).reasons
        ]

    assert outcomes(max_kld=0.05, min_top1_agreement=0.8) == ["pass", "pass", "pass"]
    assert outcomes(max_kld=0.01, min_top1_agreement=0.95) == ["pass", "FAIL", "FAIL"]
    assert outcomes(max_kld=0.02, min_top1_agreement=0.9) == ["pass", "INCONCLUSIVE", "INCONCLUSIVE"]
    reasons = judge(variant, base, GateLimits(max_ppl_increase_pct=5, max_kld=0.05)).reasons
    assert re.fullmatch(r"pass: mean KLD 0\.0\d+ \[0\.0\d+, 0\.0\d+\] vs max 0\.05", reasons[1])
    no_divergence = judge(
        measured(variant.perplexity.window_nll), base, GateLimits(max_ppl_increase_pct=5, max_kld=1)
    )
    assert no_divergence.reasons[1] == "FAIL: mean KLD limit set but divergence was not measured"


def test_one_window_has_no_interval_and_is_judged_on_its_figure():
    base = measured(baseline_nll(1))
    verdict = judge(
        measured(shifted(baseline_nll(1), 0.01, 0.0, seed=0)), base, GateLimits(max_ppl_increase_pct=2)
    )
    assert verdict.outcome == "PASS" and verdict.reasons == ["pass: Δppl +1.01 % vs limit +2.00 %"]
    assert verdict.estimates.ppl_increase_pct.low is None


def test_records_made_before_divergence_and_intervals_load_and_are_judged_on_their_figures():
    """Metrics and verdicts as the metrics cache and MLflow's tags held them before issue 18."""
    old_metrics = Metrics.model_validate_json(
        '{"perplexity": {"ppl": 20.1, "mean_nll": 3.0007, "tokens_scored": 2044, "windows": 4},'
        ' "speed": null, "size_mb": 137.3, "weights": {"int4": 0, "int8": 1, "float": 0}, "seconds": 12}'
    )
    assert old_metrics.divergence is None and old_metrics.perplexity.window_nll == []
    old_verdict = Verdict.model_validate_json(
        '{"passed": true, "reasons": ["pass: Δppl +0.50 % vs limit +2.00 %"]}'
    )
    assert (old_verdict.outcome, old_verdict.estimates) == ("PASS", None)
    old_baseline = old_metrics.model_copy(
        update={"perplexity": old_metrics.perplexity.model_copy(update={"ppl": 20.0})}
    )
    verdict = judge(old_metrics, old_baseline, GateLimits(max_ppl_increase_pct=2, max_kld=0.1))
    assert verdict.outcome == "FAIL"
    assert verdict.reasons == [
        "pass: Δppl +0.50 % vs limit +2.00 %",
        "FAIL: mean KLD limit set but divergence was not measured",
    ]


@pytest.mark.model
def test_a_run_reports_and_records_divergence_with_intervals(bundled_model, prefect_harness, tmp_path):
    """A tiny random Llama, one OpenVINO and one torchao variant on 8 windows: report.json, report.md
    and each variant's MLflow run carry the divergence and the intervals; a rerun reads them back."""
    from quantforge.flows.quantize import quantize_flow
    from quantforge.registry.tracking import mlflow_client
    from quantforge.tasks.request import QuantizeRequest
    from quantforge_testing.tiny_models import tiny_model
    from tests.conftest import EVALUATION_TEXT

    recipes = tmp_path / "recipes.yaml"
    recipes.write_text(
        "description: one variant per runtime\nrecipes:\n  - name: int8-asym\n    bits: 8\n"
        "  - name: torchao-int8\n    backend: torchao\n    bits: 8\n    sym: true\n"
    )
    request = QuantizeRequest(
        model=str(tiny_model("llama", tmp_path / "tiny-llama", bundled_model, seed=18)),
        recipes=str(recipes),
        evaluation=str(EVALUATION_TEXT),
        window=64,
        max_eval_windows=8,
        new_tokens=4,
        gates={"max_kld": 0.5, "min_top1_agreement": 0.5},
        output_dir=tmp_path / "out",
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        first = quantize_flow(request)
        (report_file,) = (tmp_path / "out").rglob("report.json")
        document = {v["recipe"]: v for v in json.loads(report_file.read_text())["variants"]}
        markdown_text = (report_file.parent / "report.md").read_text()
        rerun = quantize_flow(request)  # writes its own report over the first's
        runs = {
            run.data.tags["quantforge.recipe"]: run
            for run in mlflow_client().search_runs(
                [mlflow_client().get_experiment_by_name("quantforge").experiment_id],
                "tags.`quantforge.identity` != ''",
            )
        }
    assert set(document) == set(runs) == {"int8-asym", "torchao-int8"}
    for name, variant in document.items():
        estimates, divergence = variant["verdict"]["estimates"], variant["metrics"]["divergence"]
        assert len(divergence["window_kld"]) == len(variant["metrics"]["perplexity"]["window_nll"]) == 8
        logged, tags = runs[name].data.metrics, runs[name].data.tags
        assert tags["quantforge.outcome"] == variant["verdict"]["outcome"]
        assert "window_nll" not in tags["quantforge.metrics"] + tags["quantforge.lineage"]
        for figure in ("ppl_increase_pct", "mean_kld", "top1_agreement"):
            interval = estimates[figure]
            assert interval["low"] <= interval["value"] <= interval["high"], (name, figure)
            assert (logged[f"{figure}_low"], logged[f"{figure}_high"]) == (interval["low"], interval["high"])
        assert logged["p99_kld"] == divergence["p99_kld"] and logged["mean_kld"] == divergence["mean_kld"]
        assert [r.split(":")[0] for r in variant["verdict"]["reasons"]][1:] == ["pass", "pass"]
    for result in first.variants:
        assert " | ".join(quality_cells(result).values()) in markdown_text
    # generation agreement: OpenVINO's variant against its baseline's continuations; torchao's not measured
    generation = document["int8-asym"]["metrics"]["generation"]
    assert (generation["prompts"], generation["new_tokens"]) == (len(PROMPTS), NEW_TOKENS)
    assert 0 <= generation["token_agreement"] <= 1 and len(generation["first_divergence"]) == len(PROMPTS)
    logged = runs["int8-asym"].data.metrics
    assert (logged["generation_agreement"], logged["first_divergence_mean"]) == (
        generation["token_agreement"],
        generation["mean_first_divergence"],
    )
    assert f"1st diff {generation['mean_first_divergence']:.1f}/{NEW_TOKENS} |" in markdown_text
    assert document["torchao-int8"]["metrics"]["generation"] is None
    assert "generation_agreement" not in runs["torchao-int8"].data.metrics
    assert all(v.reused for v in rerun.variants)
    assert {v.recipe: v.verdict for v in rerun.variants} == {v.recipe: v.verdict for v in first.variants}
    # each runtime's host profile: OpenVINO's names its version and the precision it ran at, PyTorch's f32
    hosts = {name: variant["metrics"]["host"] for name, variant in document.items()}
    assert hosts["int8-asym"]["openvino"] and hosts["torchao-int8"]["openvino"] is None
    assert {host["inference_precision"] for host in hosts.values()} == {"f32"}
    for name, host in hosts.items():
        tags = runs[name].data.tags
        assert (tags["quantforge.host.cpu"], tags["quantforge.host.cores"]) == (
            host["cpu"],
            str(host["cores"]),
        )
        assert tags["quantforge.inference_precision"] == "f32"
    # reused on the host that made them: ranked as before, no row marked
    assert (rerun.best, rerun.pareto_front) == (first.best, first.pareto_front)
    assert "(other host)" not in markdown_text


# An inconclusive verdict scores more windows: the loop of `tasks.variants.decided` over made-up figures.

AVAILABLE = 200  # windows in the made-up evaluation text


def test_more_windows_follows_the_estimate_else_doubles_and_stops_where_the_text_cannot_decide():
    undecided = Verdict(outcome="INCONCLUSIVE", reasons=["INCONCLUSIVE: ..."], tokens_needed=50 * TOKENS)
    assert more_windows(undecided, 32, AVAILABLE, TOKENS) == 60  # a fifth more than the 50 asked
    assert more_windows(undecided, 32, 40, TOKENS) == 40  # the text has no more
    assert more_windows(undecided, 60, AVAILABLE, TOKENS) == 61  # at least one more
    whole_text = BEYOND_THE_TEXT * AVAILABLE * TOKENS
    at_most = undecided.model_copy(update={"tokens_needed": whole_text})
    assert more_windows(at_most, 32, AVAILABLE, TOKENS) == AVAILABLE
    beyond = undecided.model_copy(update={"tokens_needed": whole_text + 1})
    assert more_windows(beyond, 32, AVAILABLE, TOKENS) is None  # the rest of the text cannot decide
    on_the_limit = undecided.model_copy(update={"tokens_needed": None})
    assert more_windows(on_the_limit, 32, AVAILABLE, TOKENS) == 64
    assert more_windows(on_the_limit, AVAILABLE, AVAILABLE, TOKENS) is None


def scored_again(monkeypatch, variant_nll: np.ndarray, baseline_nll: np.ndarray) -> list[int]:
    """Replace the OpenVINO backend by one whose figures on n windows are the first n made-up ones, and
    the evaluation text by AVAILABLE windows; return the window counts each round scored."""
    from quantforge.tasks import variants
    from quantforge.tasks.backends import BACKENDS
    from quantforge.tasks.datasets import TokenSet

    rounds = []

    class Runtime:
        def rescored(self, baseline, source, evaluation):
            rounds.append(len(evaluation.windows))
            return baseline.model_copy(update={"metrics": measured(baseline_nll[: len(evaluation.windows)])})

    class Backend:
        runtime, reuses_cache = Runtime(), True

        def measure(self, job, baseline):
            assert (
                job.new_tokens is None and len(job.evaluation.windows) == baseline.metrics.perplexity.windows
            )
            return measured(variant_nll[: len(job.evaluation.windows)])

    def windows(spec, tokenizer_dir, length, count, protocol="quantforge"):
        ids = np.zeros((min(count, AVAILABLE), length), dtype=np.int64)
        return TokenSet(spec=spec, role="evaluation", windows=ids, content_hash=f"{len(ids)}")

    monkeypatch.setitem(BACKENDS, "openvino", Backend())
    monkeypatch.setattr(variants, "evaluation_windows", windows)
    return rounds


def first_round(monkeypatch, variant_nll, baseline_nll, limits: GateLimits):
    """`decided` on the first 4 windows; the window counts of the later rounds."""
    from quantforge.tasks.backends.base import Baseline, Job
    from quantforge.tasks.datasets import TokenSet
    from quantforge.tasks.fetch import SourceModel
    from quantforge.tasks.recipes import Recipe
    from quantforge.tasks.variants import decided

    job = Job(
        source=SourceModel(repo="local:made-up", sha="s", local_dir=Path("/nonexistent")),
        recipe=Recipe.model_construct(name="int8", bits=8),  # no validation: it would import optimum-intel
        calibration=None,
        evaluation=TokenSet(
            spec="text", role="evaluation", windows=np.zeros((4, TOKENS + 1)), content_hash="4"
        ),
        new_tokens=8,
        identity="i",
        toolchain={},
        target=Path("/nonexistent"),
    )
    rounds = scored_again(monkeypatch, variant_nll, baseline_nll)
    greedy = GenerationAgreement(
        prompts=1, new_tokens=2, token_agreement=0.5, mean_first_divergence=1.0, first_divergence=[1]
    )
    first = measured(variant_nll[:4]).model_copy(
        update={"speed": Speed(tokens_per_second=9, ttft_ms=1, new_tokens=8), "generation": greedy}
    )
    baseline = Baseline(runtime="openvino", label="IR", metrics=measured(baseline_nll[:4]))
    metrics, baseline, verdict = decided(job, baseline, first, limits)
    assert metrics.speed == first.speed and metrics.generation == greedy  # as first measured
    assert baseline.metrics.perplexity.windows == metrics.perplexity.windows == ([4, *rounds])[-1]
    return rounds, verdict


def test_an_inconclusive_verdict_scores_more_windows_until_decided(monkeypatch):
    """4 % worse, each window ±1.5 %: undecided against +5 % on 4 windows, decided on more."""
    base = baseline_nll(AVAILABLE)
    noise = np.resize([-1.0, 1.0], AVAILABLE) * 0.015
    worse = base + TOKENS * (math.log(1.04) + noise)
    assert (
        judge(measured(worse[:4]), measured(base[:4]), GateLimits(max_ppl_increase_pct=5)).outcome
        == "INCONCLUSIVE"
    )
    rounds, verdict = first_round(monkeypatch, worse, base, GateLimits(max_ppl_increase_pct=5))
    assert verdict.outcome == "PASS" and rounds and rounds[-1] < AVAILABLE
    assert rounds == sorted(set(rounds))  # each round more windows than the last


def test_an_undecidable_verdict_stops_at_the_end_of_the_text_and_says_what_it_would_need(monkeypatch):
    """Exactly +5 % on average against +5 %: no number of windows decides; every window gets scored."""
    base = baseline_nll(AVAILABLE)
    on_limit = base + TOKENS * (math.log(1.05) + np.resize([-0.02, 0.02], AVAILABLE))
    rounds, verdict = first_round(monkeypatch, on_limit, base, GateLimits(max_ppl_increase_pct=5))
    assert rounds == [8, 16, 32, 64, 128, AVAILABLE] and verdict.outcome == "INCONCLUSIVE"
    assert verdict.reasons[0].endswith("the figure is on the limit, no number of tokens would decide")
