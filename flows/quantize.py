"""The quantize flow: fetch, datasets, then for every recipe reuse what the registry knows or make it.

Export, quantization and evaluation run only for recipes the registry has no record of; a rerun of
the same request does none of them.
"""

import contextlib
import math
import time

from prefect import flow

from quantforge.core.errors import QuantforgeError
from quantforge.core.locks import identity_lock
from quantforge.core.manifest import read_manifest
from quantforge.core.redact import install_log_redaction
from quantforge.registry.aliases import CHAMPION_ALIAS, promote_task
from quantforge.registry.registered import registered_files_task
from quantforge.registry.variants import (
    Lineage,
    RecordedVariant,
    finish_flow_run,
    identity_key,
    lookup_task,
    publication,
    record_publication_task,
    record_variant_task,
    start_flow_run_task,
)
from quantforge.tasks.datasets import TokenSet, calibration_samples_task, evaluation_windows_task
from quantforge.tasks.evaluate import Metrics, measure_model_task
from quantforge.tasks.export import BaselineIR, export_baseline_task
from quantforge.tasks.fetch import SourceModel, fetch_source_task
from quantforge.tasks.gate import Verdict, effective_limits, judge
from quantforge.tasks.model_card import model_card
from quantforge.tasks.output import check_writable, publish_output_task
from quantforge.tasks.publish import hub_repo_id, publish_variant_task
from quantforge.tasks.pytorch_backends import (
    check_baseline_agreement,
    ipex_baseline_task,
    make_ipex_variant_task,
    make_torchao_variant_task,
    measure_pytorch_task,
)
from quantforge.tasks.quantize import is_complete, quantize_variant_task, variant_dir, variant_identity
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.report import RunReport, VariantResult, best_passing, pareto_front
from quantforge.tasks.request import QuantizeRequest
from quantforge.tasks.resources import reserved_memory
from quantforge.tasks.toolchain import toolchain


@flow(name="quantize", flow_run_name="quantize {request.model}", validate_parameters=True)
def quantize_flow(request: QuantizeRequest) -> RunReport:
    """Produce, measure, gate and register every recipe of the request; write the report."""
    install_log_redaction()  # workers start flows without the CLI, which installs it too
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
    mlflow_run = start_flow_run_task(source.repo, source.sha)
    try:
        identities = {
            r.name: identity_key(source.repo, source.sha, variant_identity(r, calibration)) for r in recipes
        }
        reusable = {
            r.name: record
            for r in recipes
            if (record := _reusable(lookup_task(identities[r.name], evaluation.content_hash), r, request))
        }
        baseline_ir, lineage, pytorch_lineage, ipex_ppl = None, None, None, None
        results = []
        to_make = [r for r in recipes if r.name not in reusable]
        work_to_do = bool(to_make)
        # The heavy part holds this host's memory slots (Prefect global concurrency limit), if any.
        with reserved_memory(source.local_dir, request.window) if work_to_do else contextlib.nullcontext():
            if work_to_do:
                baseline_ir, lineage = _measure_baseline(source, evaluation, request)
            if any(r.backend != "openvino" for r in to_make):
                pytorch_lineage = _measure_pytorch_baseline(source, evaluation, request)
            if any(r.backend == "ipex" for r in to_make):
                ipex_ppl = ipex_baseline_task(source, evaluation).ppl
                check_baseline_agreement(ipex_ppl, pytorch_lineage.baseline.perplexity.ppl)
            for recipe in recipes:
                with identity_lock(identities[recipe.name]):  # a concurrent run on this host may make it
                    record = reusable.get(recipe.name) or _reusable(
                        lookup_task(identities[recipe.name], evaluation.content_hash), recipe, request
                    )
                    if record is not None:
                        results.append(_reused_result(record, recipe, request, source, calibration))
                        continue
                    variant_lineage = lineage if recipe.backend == "openvino" else pytorch_lineage
                    results.append(
                        _make_variant(
                            recipe,
                            source,
                            baseline_ir,
                            calibration,
                            evaluation,
                            variant_lineage,
                            mlflow_run,
                            request,
                        )
                    )
        baseline = lineage or next(iter(reusable.values())).lineage
        pytorch_baseline = pytorch_lineage or next(
            (reusable[r.name].lineage for r in recipes if r.backend != "openvino" and r.name in reusable),
            None,
        )
        baselines = {"openvino": baseline.baseline}
        if pytorch_baseline is not None:
            baselines["pytorch"] = pytorch_baseline.baseline
        publish_failures = []
        if request.hub_namespace:
            publish_failures = _publish(results, baselines, request)
        report = RunReport(
            source_repo=source.repo,
            source_sha=source.sha,
            toolchain=_run_toolchain(recipes),
            evaluation=request.evaluation,
            evaluation_hash=evaluation.content_hash,
            eval_tokens=evaluation.tokens,
            calibration=request.calibration if calibration is not None else None,
            baseline=baseline.baseline,
            pytorch_baseline=baselines.get("pytorch"),
            ipex_baseline_ppl=ipex_ppl,
            export_seconds=baseline_ir.export_seconds if baseline_ir else 0.0,
            export_reused=baseline_ir is None or baseline_ir.reused,
            mlflow_run_id=mlflow_run,
            variants=results,
            best=best_passing(results),
            pareto_front=pareto_front(results),
            wall_seconds=time.perf_counter() - started,
        )
        best = next((r for r in results if r.recipe == report.best), None)
        if request.promote_best and best is not None:
            promote_task(best.model_name, best.model_version, CHAMPION_ALIAS)
        folder = publish_output_task(report, request.output_dir)
        finish_flow_run(mlflow_run, folder, "FINISHED")
        if publish_failures:
            raise QuantforgeError(
                "not published (the versions stay registered as unpublished; rerun to publish): "
                + "; ".join(publish_failures)
            )
    except BaseException:
        with contextlib.suppress(Exception):  # MLflow may be what failed: keep the first error
            finish_flow_run(mlflow_run, None, "FAILED")
        raise
    return report


def _measure_baseline(
    source: SourceModel, evaluation: TokenSet, request: QuantizeRequest
) -> tuple[BaselineIR, Lineage]:
    baseline_ir = export_baseline_task(source, request.export_dtype)
    baseline = measure_model_task(baseline_ir.path, evaluation, request.new_tokens)
    if not math.isfinite(baseline.perplexity.ppl):
        raise QuantforgeError(
            f"baseline perplexity of {source.repo} is {baseline.perplexity.ppl}: check the model"
        )
    lineage = Lineage(
        source_repo=source.repo,
        source_sha=source.sha,
        evaluation=request.evaluation,
        evaluation_hash=evaluation.content_hash,
        baseline=baseline,
    )
    return baseline_ir, lineage


def _run_toolchain(recipes: list[Recipe]) -> dict[str, str]:
    """This environment's versions for the run's backends, plus the IPEX environment's, prefixed."""
    versions = {}
    for backend in dict.fromkeys(["openvino", *(r.backend for r in recipes)]):
        prefix = "ipex-env:" if backend == "ipex" else ""
        versions |= {prefix + name: version for name, version in toolchain(backend).items()}
    return versions


def _measure_pytorch_baseline(source: SourceModel, evaluation: TokenSet, request: QuantizeRequest) -> Lineage:
    """The fp32 source in PyTorch: what torchao and IPEX variants are judged against."""
    baseline = measure_pytorch_task(source.local_dir, source.local_dir, evaluation, request.new_tokens)
    return Lineage(
        source_repo=source.repo,
        source_sha=source.sha,
        evaluation=request.evaluation,
        evaluation_hash=evaluation.content_hash,
        baseline=baseline,
    )


def _judge(metrics: Metrics, baseline: Metrics, recipe: Recipe, request: QuantizeRequest) -> Verdict:
    return judge(
        metrics.perplexity.ppl,
        baseline.perplexity.ppl,
        metrics.speed.tokens_per_second if metrics.speed else None,
        baseline.speed.tokens_per_second if baseline.speed else None,
        metrics.size_mb,
        effective_limits(recipe, request.gates),
    )


def _reusable(
    record: RecordedVariant | None, recipe: Recipe, request: QuantizeRequest
) -> RecordedVariant | None:
    """A record this run can take as is; its metrics are judged again with this run's gates."""
    if record is None:
        return None
    verdict = _judge(record.metrics, record.lineage.baseline, recipe, request)
    if verdict.passed and record.model_version is None:  # passes under this run's gates: register it
        return None
    return record.model_copy(update={"verdict": verdict})


def _reused_result(
    record: RecordedVariant,
    recipe: Recipe,
    request: QuantizeRequest,
    source: SourceModel,
    calibration: TokenSet | None,
) -> VariantResult:
    local = variant_dir(source, recipe, calibration)
    if record.model_version is not None:  # this host's copy if it is what the registry holds, else pulled
        path = registered_files_task(record.model_name, record.model_version, local)
    elif is_complete(local):
        path = local
    else:
        path = None
    return VariantResult(
        recipe=recipe.name,
        backend=recipe.backend,
        recipe_hash=recipe.content_hash(),
        identity=record.identity,
        path=path,
        reused=True,
        quantize_seconds=record.quantize_seconds,
        quantize_peak_pss_mb=record.quantize_peak_pss_mb,
        metrics=record.metrics,
        ppl_increase_pct=record.ppl_increase_pct,
        verdict=record.verdict,
        model_name=record.model_name,
        model_version=record.model_version,
    )


def _make_variant(
    recipe: Recipe,
    source: SourceModel,
    baseline_ir: BaselineIR,
    calibration: TokenSet | None,
    evaluation: TokenSet,
    lineage: Lineage,
    mlflow_run: str,
    request: QuantizeRequest,
) -> VariantResult:
    target = variant_dir(source, recipe, calibration)
    cached = is_complete(target)
    usage = None  # stays None when this host's cache held the variant: nothing is quantized
    if recipe.backend == "ipex":  # the worker measures what it made, in its own environment
        cached = False
        manifest, metrics, usage = make_ipex_variant_task(
            source, recipe, calibration, evaluation, request.new_tokens, target
        )
    elif recipe.backend == "torchao":
        if cached:
            manifest = read_manifest(target)
        else:
            manifest, usage = make_torchao_variant_task(source, recipe, target)
        metrics = measure_pytorch_task(target, source.local_dir, evaluation, request.new_tokens)
    else:
        if cached:
            manifest = read_manifest(target)
        else:
            manifest, usage = quantize_variant_task(source, baseline_ir, recipe, calibration, target)
        metrics = measure_model_task(target, evaluation, request.new_tokens)
    verdict = _judge(metrics, lineage.baseline, recipe, request)
    increase = (metrics.perplexity.ppl / lineage.baseline.perplexity.ppl - 1) * 100
    record = record_variant_task(mlflow_run, target, manifest, usage, metrics, increase, verdict, lineage)
    path = target
    if record.model_version is not None:  # another host's version may have won: publish what it holds
        path = registered_files_task(record.model_name, record.model_version, target)
    return VariantResult(
        recipe=recipe.name,
        backend=recipe.backend,
        recipe_hash=recipe.content_hash(),
        identity=record.identity,
        path=path,
        reused=cached,
        quantize_seconds=usage.seconds if usage else None,
        quantize_peak_pss_mb=usage.peak_pss_mb if usage else None,
        metrics=metrics,
        ppl_increase_pct=increase,
        verdict=verdict,
        model_name=record.model_name,
        model_version=record.model_version,
    )


def _publish(
    results: list[VariantResult], baselines: dict[str, Metrics], request: QuantizeRequest
) -> list[str]:
    """Push every registered, unpublished variant; return one line per variant that could not be pushed."""
    failures = []
    for result in results:
        if result.model_version is None:
            continue
        published = publication(result.model_name, result.model_version)
        if published is None:
            manifest = read_manifest(result.path)
            repo_id = hub_repo_id(
                request.hub_repo_template, request.hub_namespace, manifest.source_repo, result.recipe
            )
            runtime = "openvino" if result.backend == "openvino" else "pytorch"
            card = model_card(result, manifest, baselines[runtime], request.evaluation, repo_id)
            try:
                pushed = publish_variant_task(result.path, manifest, card, repo_id, request.hub_private)
            except Exception as error:  # after the task's retries: the version stays unpublished
                failures.append(f"{result.recipe}: {type(error).__name__}: {error}".splitlines()[0])
                continue
            record_publication_task(
                result.model_name, result.model_version, pushed.repo, pushed.commit, pushed.tag
            )
            published = pushed.repo, pushed.commit
        result.hub_repo, result.hub_commit = published
    return failures
