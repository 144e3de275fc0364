"""Recording variants in MLflow: one run per flow run, one nested run per variant, versions for passes.

A variant's identity is (source repo, source sha, variant identity), the last being the hash of the
recipe, the toolchain and, for data-aware recipes, the calibration token ids. A FINISHED nested run
tagged with that identity means the variant was made, measured and judged; if it passed, its run also
names the model version that holds its files. The flow asks `lookup` before doing any work.

One identity, one model version: every registration and every lookup that finds a version settles the
identity (`settle`), so a registration killed half-way is completed by the next run that meets it.
"""

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.manifest import MANIFEST_FILE, Manifest, sha256_file
from quantforge.core.names import short_name
from quantforge.core.records import HostProfile, Lineage, Metrics, RecordedVariant, StepUsage, Verdict
from quantforge.registry.tracking import experiment_id, mlflow_client

CANDIDATE_ALIAS = "candidate"
TAG = "quantforge."  # prefix of every tag quantforge writes
ARCHIVED_TAG = f"{TAG}archived"
# The per-window figures stay out of the tags (which hold 8000 characters): the verdict keeps the intervals
# computed from them, which is what judging a record again needs.
PER_WINDOW = {"perplexity": {"window_nll"}, "divergence": {"window_kld", "window_top1"}}
# "pending" from the version's creation until `candidate` was dealt with, then "complete". Versions
# registered before this tag existed have none and count as complete.
REGISTRATION_TAG = f"{TAG}registration"


def identity_key(source_repo: str, source_sha: str, variant_identity: str) -> str:
    """One string naming the variant everywhere (MLflow tags, Hub tags, locks)."""
    return hashlib.sha256(f"{source_repo}@{source_sha}/{variant_identity}".encode()).hexdigest()


def registered_model_name(source_repo: str, recipe_name: str) -> str:
    """`smollm2-135m-instruct--int4-awq-se`: one registered model per (source model, recipe)."""
    model = short_name(source_repo).lower()
    return f"{re.sub(r'[^a-z0-9._-]+', '-', model)}--{recipe_name}"


def lookup(identity: str, evaluation_hash: str, precision: str = "f32") -> RecordedVariant | None:
    """The earliest completed record of this identity measured on this evaluation text at this inference
    precision (the protocol's: f32 unless asked), if any. Records made before the precision was pinned
    (no tag) are not found: they ran at OpenVINO's default, bf16 on some hosts.

    When the record names a model version, the identity is settled first (see `settle`).
    """
    client = mlflow_client()
    runs = client.search_runs(
        [experiment_id(client)],
        f"tags.`{TAG}identity` = '{identity}' and tags.`{TAG}evaluation_hash` = '{evaluation_hash}' "
        f"and tags.`{TAG}inference_precision` = '{precision}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if not runs:
        return None
    tags, metrics = runs[0].data.tags, runs[0].data.metrics
    name = tags.get(f"{TAG}model_name")
    return RecordedVariant(
        identity=identity,
        run_id=runs[0].info.run_id,
        recipe_name=tags[f"{TAG}recipe"],
        metrics=Metrics.model_validate_json(tags[f"{TAG}metrics"]),
        ppl_increase_pct=float(tags[f"{TAG}ppl_increase_pct"]),
        verdict=Verdict.model_validate_json(tags[f"{TAG}verdict"]),
        lineage=Lineage.model_validate_json(tags[f"{TAG}lineage"]),
        quantize_seconds=metrics.get("quantize_seconds"),
        # the same figure under its earlier name, in runs recorded before issue 16's rename
        quantize_peak_pss_mb=metrics.get("quantize_peak_pss_mb", metrics.get("quantize_peak_rss_mb")),
        model_name=name,
        model_version=settle(client, name, identity) if name else None,
    )


def start_flow_run(source_repo: str, source_sha: str) -> str:
    """The parent run of one flow run."""
    client = mlflow_client()
    tags = {
        "mlflow.runName": f"{source_repo}@{source_sha[:12]}",
        f"{TAG}source_repo": source_repo,
        f"{TAG}source_sha": source_sha,
    }
    flow_run_id = _prefect_flow_run_id()
    if flow_run_id:
        tags[f"{TAG}prefect_flow_run_id"] = flow_run_id
    return client.create_run(experiment_id(client), tags=tags).info.run_id


def finish_flow_run(run_id: str, report_folder: Path) -> None:
    """Attach the report (JSON, markdown, plot) and close the parent run as FINISHED."""
    client = mlflow_client()
    for name in ("report.json", "report.md", "pareto.png"):
        client.log_artifact(run_id, str(report_folder / name))
    if (report_folder / "search.json").exists():  # the search's log (`--recipes search`)
        client.log_artifact(run_id, str(report_folder / "search.json"))
    client.set_terminated(run_id, "FINISHED")


@contextlib.contextmanager
def flow_run(source_repo: str, source_sha: str) -> Iterator[str]:
    """The parent run of one flow run, marked FAILED when the block raises (the block finishes it)."""
    run_id = start_flow_run_task(source_repo, source_sha)
    try:
        yield run_id
    except BaseException:
        with contextlib.suppress(Exception):  # MLflow may be what failed: keep the first error
            mlflow_client().set_terminated(run_id, "FAILED")
        raise


def record_variant(
    parent_run_id: str,
    variant_dir: Path,
    manifest: Manifest,
    usage: StepUsage | None,
    metrics: Metrics,
    ppl_increase_pct: float,
    verdict: Verdict,
    lineage: Lineage,
) -> RecordedVariant:
    """Log one judged variant as a nested run; register it as a model version when it passed.

    `usage` is what quantizing it cost in this run (None when this host's cache already held it). The
    run only becomes FINISHED (and so visible to `lookup`) after everything else succeeded.
    """
    identity = identity_key(manifest.source_repo, manifest.source_sha, manifest.variant_identity)
    tags = {
        "mlflow.parentRunId": parent_run_id,
        "mlflow.runName": manifest.recipe_name,
        f"{TAG}identity": identity,
        f"{TAG}recipe": manifest.recipe_name,
        f"{TAG}recipe_hash": manifest.recipe_hash,
        f"{TAG}variant_identity": manifest.variant_identity,
        f"{TAG}source_repo": manifest.source_repo,
        f"{TAG}source_sha": manifest.source_sha,
        f"{TAG}calibration": manifest.calibration or "",
        f"{TAG}calibration_hash": manifest.calibration_hash or "",
        f"{TAG}evaluation": lineage.evaluation,
        f"{TAG}evaluation_hash": lineage.evaluation_hash,
        f"{TAG}inference_precision": str(lineage.inference_precision),
        f"{TAG}protocol": lineage.protocol,
        **_host_tags(metrics.host),
        f"{TAG}passed": str(verdict.passed).lower(),
        f"{TAG}outcome": verdict.outcome,
        f"{TAG}reasons": "; ".join(verdict.reasons),
        f"{TAG}verdict": verdict.model_dump_json(),
        f"{TAG}metrics": metrics.model_dump_json(exclude=PER_WINDOW),
        f"{TAG}ppl_increase_pct": repr(ppl_increase_pct),
        f"{TAG}lineage": lineage.model_dump_json(exclude={"baseline": PER_WINDOW}),
        **{f"{TAG}toolchain.{name}": version for name, version in manifest.toolchain.items()},
    }
    client = mlflow_client()
    run_id = client.create_run(experiment_id(client), tags=tags).info.run_id
    try:
        client.log_batch(
            run_id,
            metrics=[
                Metric(k, v, 0, 0)
                for k, v in _metric_values(metrics, ppl_increase_pct, usage, lineage, verdict)
            ],
            params=[
                Param(k, json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in manifest.recipe.items()
            ],
        )
        if verdict.passed:
            client.log_artifacts(run_id, str(variant_dir), "variant")
            name = registered_model_name(manifest.source_repo, manifest.recipe_name)
            manifest_sha256 = sha256_file(variant_dir / MANIFEST_FILE)  # the pull's root of trust
            version = _register_version(client, name, run_id, identity, manifest, manifest_sha256, verdict)
            client.log_batch(
                run_id,
                tags=[RunTag(f"{TAG}model_name", name), RunTag(f"{TAG}model_version", str(version))],
            )
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        with contextlib.suppress(Exception):  # the server may be what failed: keep the first error
            client.set_terminated(run_id, "FAILED")
        raise
    return lookup(identity, lineage.evaluation_hash, str(lineage.inference_precision))


def _host_tags(host: HostProfile | None) -> dict[str, str]:
    """The host that measured the variant, as tags one can search runs by (`quantforge.host.cpu`...)."""
    if host is None:
        return {}
    return {f"{TAG}host.{name}": ", ".join(v) if isinstance(v, list) else str(v) for name, v in host}


def _register_version(
    client: MlflowClient,
    name: str,
    run_id: str,
    identity: str,
    manifest: Manifest,
    manifest_sha256: str,
    verdict: Verdict,
) -> int | None:
    """Create a model version for the identity, then settle it; return the number of the one that stays.

    MLflow has no uniqueness on tags, so concurrent writers (hosts) all create, then settle: every
    writer reads after its own create, so the later writer always sees the earlier version.
    """
    try:
        client.create_registered_model(
            name, description=f"{manifest.source_repo}, recipe {manifest.recipe_name}"
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version_tags = {
        f"{TAG}identity": identity,
        f"{TAG}source_repo": manifest.source_repo,
        f"{TAG}source_sha": manifest.source_sha,
        f"{TAG}recipe_hash": manifest.recipe_hash,
        f"{TAG}variant_identity": manifest.variant_identity,
        f"{TAG}passed": str(verdict.passed).lower(),
        f"{TAG}reasons": "; ".join(verdict.reasons),
        f"{TAG}published": "false",
        f"{TAG}manifest_sha256": manifest_sha256,
        REGISTRATION_TAG: "pending",
        **{f"{TAG}toolchain.{pkg}": v for pkg, v in manifest.toolchain.items()},
    }
    artifact_uri = client.get_run(run_id).info.artifact_uri
    client.create_model_version(name, source=f"{artifact_uri}/variant", run_id=run_id, tags=version_tags)
    return settle(client, name, identity)  # never None: this version, or a lower one, remains


def settle(client: MlflowClient, name: str, identity: str) -> int | None:
    """Leave one version of the identity, its registration complete; return its number. Idempotent.

    None when the identity has no version (deleted by hand): a run that passes it registers it again.

    The lowest version wins; the others are deleted, their aliases (a promotion by hand) moved to it.
    A pending winner gets `candidate` unless the alias points at a newer version already: a later
    registration would have moved it there anyway. Once complete, a version is never aliased by
    quantforge again, so moving `candidate` or `champion` by hand is never undone.
    """
    versions = sorted(
        client.search_model_versions(f"name = '{name}' and tags.`{TAG}identity` = '{identity}'"),
        key=lambda v: int(v.version),
    )
    if not versions:
        return None
    winner, *duplicates = versions
    aliases = client.get_registered_model(name).aliases  # search results carry no aliases
    doomed = {int(v.version) for v in duplicates}
    for alias, number in aliases.items():
        if int(number) in doomed:
            client.set_registered_model_alias(name, alias, winner.version)
    for duplicate in duplicates:
        try:
            client.delete_model_version(name, duplicate.version)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":  # else a concurrent settle deleted it
                raise
    if winner.tags.get(REGISTRATION_TAG) == "pending":
        if winner.tags.get(ARCHIVED_TAG) != "true":
            _advance_candidate(client, name, int(winner.version))
        client.set_model_version_tag(name, winner.version, REGISTRATION_TAG, "complete")
    return int(winner.version)


def _advance_candidate(client: MlflowClient, name: str, version: int) -> None:
    """Point `candidate` at `version` unless it is on that version or a newer one already.

    MLflow creates a new alias without a lock: when two writers create it at once, one fails a UNIQUE
    constraint (BAD_REQUEST); that one decides again on what the other wrote.
    """
    for attempt in range(2):
        current = client.get_registered_model(name).aliases.get(CANDIDATE_ALIAS)
        if current is not None and int(current) >= version:
            return
        try:
            client.set_registered_model_alias(name, CANDIDATE_ALIAS, str(version))
            return
        except MlflowException as error:
            if attempt or error.error_code != "BAD_REQUEST":
                raise


def record_publication(name: str, version: int, repo: str, commit: str, tag: str) -> None:
    """Mark a model version published at this Hub repo, commit and tag."""
    client = mlflow_client()
    for key, value in (("hub_repo", repo), ("hub_commit", commit), ("hub_tag", tag), ("published", "true")):
        client.set_model_version_tag(name, str(version), f"{TAG}{key}", value)


def publication(name: str, version: int) -> tuple[str, str] | None:
    """(Hub repo, commit) once `record_publication` completed for this version, else None."""
    tags = mlflow_client().get_model_version(name, str(version)).tags
    if tags.get(f"{TAG}published") != "true":
        return None
    return tags[f"{TAG}hub_repo"], tags[f"{TAG}hub_commit"]


def _metric_values(
    metrics: Metrics, ppl_increase_pct: float, usage: StepUsage | None, lineage: Lineage, verdict: Verdict
) -> list[tuple[str, float]]:
    values = [
        ("ppl", metrics.perplexity.ppl),
        ("ppl_increase_pct", ppl_increase_pct),
        ("baseline_ppl", lineage.baseline.perplexity.ppl),
        ("size_mb", metrics.size_mb),
        ("baseline_size_mb", lineage.baseline.size_mb),
        ("share_int4", metrics.weights.int4),
        ("share_int8", metrics.weights.int8),
        ("share_float", metrics.weights.float),
        ("evaluate_seconds", metrics.seconds),
    ]
    if usage is not None:
        values += [("quantize_seconds", usage.seconds), ("quantize_peak_pss_mb", usage.peak_pss_mb)]
    if metrics.speed:
        values += [("tokens_per_second", metrics.speed.tokens_per_second), ("ttft_ms", metrics.speed.ttft_ms)]
    if lineage.baseline.speed:
        values.append(("baseline_tokens_per_second", lineage.baseline.speed.tokens_per_second))
    if metrics.divergence:
        divergence = metrics.divergence
        values += [(name, getattr(divergence, name)) for name in ("mean_kld", "p99_kld", "top1_agreement")]
    if metrics.generation:  # greedy continuations against the baseline's (tasks/generation.py)
        values += [
            ("generation_agreement", metrics.generation.token_agreement),
            ("first_divergence_mean", metrics.generation.mean_first_divergence),
        ]
    for name in ("ppl_increase_pct", "mean_kld", "top1_agreement") if verdict.estimates else ():
        interval = getattr(verdict.estimates, name)
        if interval is not None and interval.low is not None:  # the 95 % interval, where there is one
            values += [(f"{name}_low", interval.low), (f"{name}_high", interval.high)]
    return values


def _prefect_flow_run_id() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None


# MLflow's client retries HTTP itself (see registry.tracking); Prefect must not replay half a registration.
lookup_task = task(lookup, name="registry-lookup", cache_policy=NO_CACHE)
record_variant_task = task(record_variant, name="register", cache_policy=NO_CACHE)
start_flow_run_task = task(start_flow_run, name="mlflow-run", cache_policy=NO_CACHE)
record_publication_task = task(record_publication, name="record-publication", cache_policy=NO_CACHE)
