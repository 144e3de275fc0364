"""The quantize flow: fetch, datasets, then for every recipe reuse what the registry knows or make it.

Wiring only: what to reuse is `tasks.plan`, how a variant is made its backend's (`tasks.backends`), how
it is recorded `registry.outcomes`. A rerun of the same request exports, quantizes and evaluates nothing.
"""

import contextlib
import time

from prefect import flow

from quantforge.core.errors import ServiceError
from quantforge.core.redact import install_log_redaction
from quantforge.registry.aliases import CHAMPION_ALIAS, promote_task
from quantforge.registry.outcomes import lookup_records, outcome
from quantforge.registry.publishing import publish_registered
from quantforge.registry.run_links import link_hub_commits, link_mlflow_run
from quantforge.registry.slo import slo_gate_task
from quantforge.registry.variants import finish_flow_run, flow_run
from quantforge.tasks.baselines import measure_baselines, run_baselines, run_toolchain
from quantforge.tasks.inputs import run_inputs
from quantforge.tasks.output import check_writable, write_output_task
from quantforge.tasks.plan import plan
from quantforge.tasks.report import RunReport, best_passing, compared, pareto_front
from quantforge.tasks.request import QuantizeRequest
from quantforge.tasks.resources import reserved_memory


@flow(name="quantize", flow_run_name="quantize {request.model}", validate_parameters=True)
def quantize_flow(request: QuantizeRequest) -> RunReport:
    """Produce, measure, gate and register every recipe of the request; write the report."""
    install_log_redaction()  # workers start flows without the CLI, which installs it too
    started = time.perf_counter()
    recipes = request.selected_recipes()
    check_writable(request.output_dir)
    source, evaluation, calibration, jobs = run_inputs(request, recipes)
    with flow_run(source.repo, source.sha) as mlflow_run:
        link_mlflow_run(mlflow_run, source.repo)
        decisions = plan(recipes, lookup_records(jobs), request.gates)
        to_make = [d.recipe for d in decisions if d.make]
        baselines, backend_baseline_ppl = {}, {}
        window = evaluation.windows.shape[1]
        with reserved_memory(source.local_dir, window) if to_make else contextlib.nullcontext():
            if to_make:
                baselines, backend_baseline_ppl = measure_baselines(to_make, source, evaluation, request)
            results = [
                outcome(job, decision, baselines, request.evaluation, mlflow_run, request.gates)
                for job, decision in zip(jobs, decisions, strict=True)
            ]
        baselines = run_baselines(baselines, decisions)
        slo = request.service_objective()
        slo_report = slo_gate_task(results, slo) if slo is not None else None
        if slo_report is not None:  # a variant that does not meet it stays registered, marked (decisions)
            results = [r.model_copy(update={"slo": slo_report.variants.get(r.recipe)}) for r in results]
        failures = (
            publish_registered(results, baselines, request, source, evaluation.content_hash)
            if request.hub_namespace
            else []
        )
        link_hub_commits(results, source.repo)
        report = RunReport(
            source_repo=source.repo,
            source_sha=source.sha,
            toolchain=run_toolchain(recipes),
            evaluation=request.evaluation,
            evaluation_hash=evaluation.content_hash,
            eval_tokens=evaluation.tokens,
            protocol=request.protocol,
            calibration=request.calibration if calibration is not None else None,
            baselines=baselines,
            backend_baseline_ppl=backend_baseline_ppl,
            mlflow_run_id=mlflow_run,
            variants=results,
            best=best_passing(compared(results, baselines)),
            pareto_front=pareto_front(compared(results, baselines)),
            wall_seconds=time.perf_counter() - started,
            slo=slo_report,
        )
        best = next((r for r in results if r.recipe == report.best), None)
        if request.promote_best and best is not None:
            promote_task(best.model_name, best.model_version, CHAMPION_ALIAS)
        finish_flow_run(mlflow_run, write_output_task(report, request.output_dir))
        if failures:
            raise ServiceError(
                "not published (the versions stay registered as unpublished; rerun to publish): "
                + "; ".join(failures)
            )
    return report
