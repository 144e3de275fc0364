"""One recipe's outcome in a run: the registry's record taken as is, or the variant made, measured,
judged and recorded now. Either way a `VariantResult` naming the files this host can publish."""

from pathlib import Path
from typing import Any

from quantforge.core import progress
from quantforge.core.locks import identity_lock
from quantforge.core.manifest import is_intact
from quantforge.core.records import Lineage, RecordedVariant
from quantforge.registry.registered import registered_files_task
from quantforge.registry.variants import identity_key, lookup_task, record_variant_task
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline, Job
from quantforge.tasks.gate import GateLimits, effective_limits, ppl_increase_pct
from quantforge.tasks.plan import Decision, decide
from quantforge.tasks.report import VariantResult
from quantforge.tasks.targets import verify_targets_task
from quantforge.tasks.variants import decided, make_variant


def registry_key(job: Job) -> str:
    """The job's identity in the registry (and on the Hub, and in this host's locks)."""
    return identity_key(job.source.repo, job.source.sha, job.identity)


def lookup_records(jobs: list[Job]) -> dict[str, RecordedVariant | None]:
    """The registry's record of each job on its evaluation windows at its precision, by recipe name; the
    record's metrics name the host that made them (`Metrics.host`)."""
    for job in jobs:
        progress.status(job.recipe.name, "plan", "waiting")
    return {
        job.recipe.name: lookup_task(registry_key(job), job.evaluation.content_hash, job.precision)
        for job in jobs
    }


def outcome(
    job: Job,
    decision: Decision,
    baselines: dict[str, Baseline],
    evaluation: str,
    mlflow_run: str,
    gates: GateLimits,
) -> VariantResult:
    """Take the record, or make the variant, under the identity's lock: a concurrent run on this host
    may be writing its folder, or have made it since the plan (then it is decided again)."""
    with identity_lock(registry_key(job)):
        if decision.make:
            found = lookup_task(registry_key(job), job.evaluation.content_hash, job.precision)
            decision = decide(job.recipe, found, gates)
        if decision.make:
            runtime = BACKENDS[job.recipe.backend].runtime.name
            return _made(job, baselines[runtime], evaluation, mlflow_run, gates)
        progress.status(job.recipe.name, "registry", "reused", note="the registry's record")
        return _reused(job, decision.reuse)


def _reused(job: Job, record: RecordedVariant) -> VariantResult:
    if record.model_version is not None:  # this host's copy if it is what the registry holds, else pulled
        path = registered_files_task(record.model_name, record.model_version, job.target)
    else:
        path = job.target if is_intact(job.target) else None
    return _result(job, record, path, reused=True)


def _made(job: Job, baseline: Baseline, evaluation: str, mlflow_run: str, gates: GateLimits) -> VariantResult:
    made, metrics = make_variant(job, baseline)
    metrics, baseline, verdict = decided(job, baseline, metrics, effective_limits(job.recipe, gates))
    progress.status(job.recipe.name, "gate", "done", note=verdict.outcome.lower())
    increase = ppl_increase_pct(metrics, baseline.metrics)
    lineage = Lineage(
        source_repo=job.source.repo,
        source_sha=job.source.sha,
        evaluation=evaluation,
        evaluation_hash=job.evaluation.content_hash,
        baseline=baseline.metrics,
        baseline_label=baseline.label,
        inference_precision=job.precision,
        protocol=job.evaluation.protocol,
    )
    record = record_variant_task(
        mlflow_run, job.target, made.manifest, made.usage, metrics, increase, verdict, lineage
    )
    path = job.target
    if record.model_version is not None:  # another host's version may have won: publish what it holds
        path = registered_files_task(record.model_name, record.model_version, job.target)
    return _result(
        job,
        record,
        path,
        reused=made.usage is None,
        quantize_seconds=made.usage.seconds if made.usage else None,
        quantize_peak_pss_mb=made.usage.peak_pss_mb if made.usage else None,
        metrics=metrics,
        ppl_increase_pct=increase,
        verdict=verdict,
        targets=verify_targets_task(path, job.devices),
    )


def _result(job: Job, record: RecordedVariant, path: Path | None, **this_run: Any) -> VariantResult:
    """The recipe's row: the record's figures, or what this run measured (`this_run`), with the registry's
    version either way."""
    recorded = record.model_dump(include=set(VariantResult.model_fields) & set(RecordedVariant.model_fields))
    return VariantResult(
        recipe=job.recipe.name,
        backend=job.recipe.backend,
        recipe_hash=job.recipe.content_hash(),
        path=path,
        **(recorded | this_run),
    )
