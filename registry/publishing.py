"""Pushing a run's registered variants to the Hub, each once: a version whose publication is recorded
is never pushed again, and one that could not be pushed stays registered as unpublished."""

from quantforge.core.manifest import read_manifest
from quantforge.registry.variants import publication, record_publication_task
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.model_card import model_card
from quantforge.tasks.publish import hub_repo_id, publish_variant_task
from quantforge.tasks.report import VariantResult
from quantforge.tasks.request import QuantizeRequest


def publish_registered(
    results: list[VariantResult], baselines: dict[str, Baseline], request: QuantizeRequest
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
            baseline = baselines[BACKENDS[result.backend].runtime.name]
            card = model_card(result, manifest, baseline, request.evaluation, repo_id)
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
