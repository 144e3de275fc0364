"""The SLO gate's figures in the registry: measured per passing variant, kept on its model version (a
tag holding the whole `SloResult`, its figures as metrics of the version's run), read back by
`quantforge plan`."""

import time

from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.errors import QuantforgeError
from quantforge.registry.pull import resolve
from quantforge.registry.tracking import mlflow_client
from quantforge.registry.variants import TAG
from quantforge.tasks.capacity import CapacityPlan
from quantforge.tasks.report import VariantResult
from quantforge.tasks.slo import Slo, SloReport, SloResult, judge_slo, measure_slo_apart, slo_report

SLO_TAG = f"{TAG}slo"  # the SloResult as JSON
SLO_MEETS_TAG = f"{TAG}slo_meets"  # true | false: searchable without parsing the JSON


def slo_gate(results: list[VariantResult], slo: Slo) -> SloReport:
    """Measure every variant that passed its quality gate (and has its files here) against the SLO, on
    this host; record each, with its capacity on this host, on its model version."""
    judged = {
        r.recipe: judge_slo(slo, measure_slo_apart(r.path, slo))
        for r in results
        if r.verdict.passed and r.path is not None
    }
    report = slo_report(slo, judged)
    for r in results:
        if r.recipe in judged and r.model_name is not None and r.model_version is not None:
            record_slo(r.model_name, r.model_version, judged[r.recipe], report.capacity[r.recipe])
    return report


def record_slo(name: str, version: int, result: SloResult, capacity: CapacityPlan) -> None:
    """The SLO result on the model version (tags) and its figures, with the instances per node of the
    host that measured, on the version's run (metrics)."""
    client = mlflow_client()
    run_id = client.get_model_version(name, str(version)).run_id
    now = int(time.time() * 1000)
    figures = slo_metrics(result) | {"instances_per_node": capacity.instances}
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in figures.items()])
    client.set_model_version_tag(name, str(version), SLO_TAG, result.model_dump_json())
    client.set_model_version_tag(name, str(version), SLO_MEETS_TAG, str(result.meets).lower())


def slo_metrics(result: SloResult) -> dict[str, float]:
    """The figures MLflow gets: the budgets derived, the measured latencies, the instance's footprint."""
    derivation, measured = result.derivation, result.measurement
    return {
        "slo_token_budget_ms": derivation.token_budget_ms,
        "slo_request_budget_s": derivation.request_budget_s,
        "slo_required_concurrency": derivation.required_concurrency,
        "slo_concurrency": measured.concurrency,
        "slo_ttft_ms_p50": measured.ttft_ms_p50,
        "slo_ttft_ms_p95": measured.ttft_ms_p95,
        "slo_tpot_ms_p50": measured.tpot_ms_p50,
        "slo_tpot_ms_p95": measured.tpot_ms_p95,
        "slo_request_ms_p95": result.request_ms_p95,
        "slo_meets": float(result.meets),
        "slo_instances": float(result.instances or 0),
        "instance_pss_mb": measured.instance_pss_mb,
        "instance_threads": measured.threads,
    }


def recorded_slo(spec: str) -> tuple[ModelVersion, SloResult]:
    """The version `spec` (NAME@ALIAS or NAME/VERSION) names and the SLO result recorded on it."""
    version = resolve(spec)
    recorded = version.tags.get(SLO_TAG)
    if recorded is None:
        raise QuantforgeError(
            f"`model`: {spec!r} (version {version.version}) has no SLO or capacity figures recorded "
            "(quantize it with --slo FILE or a recipe set's `slo:`)"
        )
    return version, SloResult.model_validate_json(recorded)


slo_gate_task = task(slo_gate, name="slo-gate", cache_policy=NO_CACHE)
