"""The search flow (`--recipes search`): candidates of the INT4 space made and scored on a few windows
(mean KLD, the proxy), pruned, the survivors scored fully, and the front of size against Δppl recorded.

Wiring only: the space, its order, the pruning and the front are `tasks.search`; a candidate is made
as the quantize flow makes a variant (`tasks.variants`, this host's cache: a survivor's IR is made once)
and the front is recorded by `registry.outcomes`, so only its passing variants are registered.
"""

import math
import time
from dataclasses import replace

from prefect import flow

from quantforge.core.records import Metrics
from quantforge.core.redact import install_log_redaction
from quantforge.registry.outcomes import lookup_records, outcome
from quantforge.registry.run_links import link_mlflow_run
from quantforge.registry.variants import finish_flow_run, flow_run
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.baselines import measure_baselines, run_toolchain
from quantforge.tasks.datasets import evaluation_windows_task
from quantforge.tasks.gate import effective_limits
from quantforge.tasks.inputs import run_inputs
from quantforge.tasks.output import check_writable, write_output_task
from quantforge.tasks.plan import plan
from quantforge.tasks.report import RunReport, best_passing, compared, pareto_front
from quantforge.tasks.request import QuantizeRequest
from quantforge.tasks.resources import reserved_memory
from quantforge.tasks.search import (
    PROXY_SHARE,
    PROXY_SLACK,
    SearchLog,
    front_order,
    log_entry,
    non_dominated,
    proxy_kld,
)
from quantforge.tasks.variants import decided, make_variant


@flow(name="search", flow_run_name="search {request.model}", validate_parameters=True)
def search_flow(request: QuantizeRequest) -> RunReport:
    """Search the INT4 space within the request's budget; record the front; write the report and log."""
    install_log_redaction()
    started = time.perf_counter()
    minutes = request.search_minutes
    last_start = started + PROXY_SHARE * minutes * 60 if minutes is not None else math.inf
    candidates = request.selected_recipes()
    check_writable(request.output_dir)
    source, evaluation, _, made_jobs = run_inputs(request, candidates)
    jobs = {job.recipe.name: job for job in made_jobs}
    proxy_count = min(request.search_windows, request.max_eval_windows)
    proxy = evaluation_windows_task(request.evaluation, source.local_dir, request.window, proxy_count)
    with flow_run(source.repo, source.sha) as mlflow_run:
        link_mlflow_run(mlflow_run, source.repo)
        with reserved_memory(source.local_dir, request.window):
            baselines, backend_baseline_ppl = measure_baselines(candidates[:1], source, evaluation, request)
            baseline = baselines[BACKENDS[candidates[0].backend].runtime.name]
            proxy_baseline = BACKENDS[candidates[0].backend].runtime.rescored(baseline, source, proxy)
            proxied: dict[str, tuple[Metrics, float]] = {}
            for job in jobs.values():
                if time.perf_counter() > last_start:
                    break
                begun = time.perf_counter()
                _, metrics = make_variant(replace(job, evaluation=proxy, new_tokens=None), proxy_baseline)
                proxied[job.recipe.name] = (metrics, time.perf_counter() - begun)
            survivors = non_dominated(
                {n: (m.size_mb, proxy_kld(m)) for n, (m, _) in proxied.items()}, PROXY_SLACK
            )
            scored = {}
            for name in survivors:
                _, metrics = make_variant(jobs[name], baseline)  # this host's copy, made by the proxy stage
                limits = effective_limits(jobs[name].recipe, request.gates)
                scored[name] = decided(jobs[name], baseline, metrics, limits)
            entries = [
                log_entry(jobs[name].recipe, metrics, seconds, scored.get(name))
                for name, (metrics, seconds) in proxied.items()
            ]
            front = front_order(entries)
            front_jobs = [jobs[name] for name in front]
            decisions = plan([j.recipe for j in front_jobs], lookup_records(front_jobs), request.gates)
            results = [
                outcome(job, decision, baselines, request.evaluation, mlflow_run, request.gates)
                for job, decision in zip(front_jobs, decisions, strict=True)
            ]
        registered = {r.recipe for r in results if r.model_version is not None}
        log = SearchLog(
            budget_variants=request.search_budget,
            budget_minutes=minutes,
            proxy_windows=len(proxy.windows),
            proxy_slack=PROXY_SLACK,
            stopped_by="variants" if len(proxied) == len(candidates) else "minutes",
            seconds=time.perf_counter() - started,
            entries=[
                e.model_copy(
                    update={"on_front": e.recipe.name in front, "registered": e.recipe.name in registered}
                )
                for e in entries
            ],
            front=front,
        )
        report = RunReport(
            source_repo=source.repo,
            source_sha=source.sha,
            toolchain=run_toolchain(candidates),
            evaluation=request.evaluation,
            evaluation_hash=evaluation.content_hash,
            eval_tokens=evaluation.tokens,
            calibration=request.calibration,
            baselines=baselines,
            backend_baseline_ppl=backend_baseline_ppl,
            mlflow_run_id=mlflow_run,
            variants=results,
            best=best_passing(compared(results, baselines)),
            pareto_front=pareto_front(compared(results, baselines)),
            wall_seconds=time.perf_counter() - started,
            search=log,
        )
        finish_flow_run(mlflow_run, write_output_task(report, request.output_dir))
    return report
