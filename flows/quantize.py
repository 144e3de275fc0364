"""The quantize flow: fetch, datasets, export once, then quantize, evaluate and gate every recipe."""

import math
import time

from prefect import flow

from quantforge.errors import QuantforgeError
from tasks.datasets import calibration_samples_task, evaluation_windows_task
from tasks.evaluate import measure_model_task
from tasks.export import export_baseline_task
from tasks.fetch import fetch_source_task
from tasks.gate import effective_limits, judge
from tasks.output import check_writable, publish_output_task
from tasks.quantize import is_complete, quantize_variant_task, recorded_usage, variant_dir, variant_identity
from tasks.report import RunReport, VariantResult, best_passing, pareto_front
from tasks.request import QuantizeRequest
from tasks.toolchain import toolchain


@flow(name="quantize", flow_run_name="quantize {request.model}", validate_parameters=True)
def quantize_flow(request: QuantizeRequest) -> RunReport:
    """Produce, measure and gate every recipe of the request; write the report."""
    started = time.perf_counter()
    recipes = request.selected_recipes()
    check_writable(request.output_dir)
    source = fetch_source_task(
        request.model,
        request.revision,
        trust_remote_code=request.trust_remote_code,
        allow_pickle=request.allow_pickle,
    )
    evaluation = evaluation_windows_task(
        request.evaluation, source.local_dir, request.window, request.max_eval_windows
    )
    calibration = None
    if any(r.data_aware for r in recipes):
        calibration = calibration_samples_task(
            request.calibration,
            request.evaluation,
            source.local_dir,
            request.num_samples,
            request.seq_len,
            request.seed,
        )
    baseline_ir = export_baseline_task(source, request.export_dtype)
    baseline = measure_model_task(baseline_ir.path, evaluation, request.new_tokens)
    if not math.isfinite(baseline.perplexity.ppl):
        raise QuantforgeError(
            f"baseline perplexity of {source.repo} is {baseline.perplexity.ppl}: check the model"
        )

    results = []
    for recipe in recipes:
        target = variant_dir(source, recipe, calibration)
        reused = is_complete(target)
        if not reused:
            quantize_variant_task(baseline_ir, recipe, calibration, target)
        usage = recorded_usage(target)
        metrics = measure_model_task(target, evaluation, request.new_tokens)
        verdict = judge(
            metrics.perplexity.ppl,
            baseline.perplexity.ppl,
            metrics.speed.tokens_per_second if metrics.speed else None,
            baseline.speed.tokens_per_second if baseline.speed else None,
            metrics.size_mb,
            effective_limits(recipe, request.gates),
        )
        results.append(
            VariantResult(
                recipe=recipe.name,
                recipe_hash=recipe.content_hash(),
                identity=variant_identity(recipe, calibration),
                path=target,
                reused=reused,
                quantize_seconds=usage.seconds,
                quantize_peak_rss_mb=usage.peak_rss_mb,
                metrics=metrics,
                ppl_increase_pct=(metrics.perplexity.ppl / baseline.perplexity.ppl - 1) * 100,
                verdict=verdict,
            )
        )

    report = RunReport(
        source_repo=source.repo,
        source_sha=source.sha,
        toolchain=toolchain(),
        evaluation=request.evaluation,
        evaluation_hash=evaluation.content_hash,
        eval_tokens=evaluation.tokens,
        calibration=request.calibration if calibration is not None else None,
        baseline=baseline,
        export_seconds=baseline_ir.export_seconds,
        export_reused=baseline_ir.reused,
        variants=results,
        best=best_passing(results),
        pareto_front=pareto_front(results),
        wall_seconds=time.perf_counter() - started,
    )
    publish_output_task(report, request.output_dir)
    return report
