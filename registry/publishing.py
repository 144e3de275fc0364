"""Pushing a run's registered variants to the Hub, each once: a version whose publication is recorded
is never pushed again, and one that could not be pushed stays registered as unpublished."""

from quantforge.core.hub import hub_endpoint
from quantforge.core.manifest import read_manifest
from quantforge.core.redact import URL_USERINFO
from quantforge.registry.variants import publication, record_publication_task
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.fetch import SourceModel
from quantforge.tasks.model_card import CardContext, dataset_ref, model_card, source_license_task
from quantforge.tasks.publish import hub_repo_id, publish_variant_task
from quantforge.tasks.report import VariantResult
from quantforge.tasks.request import QuantizeRequest


def hub_url() -> str:
    """The Hub endpoint as a card or a link may show it: without a `user:password@` part."""
    return URL_USERINFO.sub("", hub_endpoint())


def publish_registered(
    results: list[VariantResult],
    baselines: dict[str, Baseline],
    request: QuantizeRequest,
    source: SourceModel,
    evaluation_hash: str,
) -> list[str]:
    """Push every registered, unpublished variant; return one line per variant that could not be pushed."""
    failures = []
    evaluation = dataset_ref(request.evaluation, evaluation_hash, "evaluation", request.protocol)
    source_license = None  # looked up once, when a first variant is to be pushed
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
            try:
                if source_license is None:
                    source_license = source_license_task(source)
                context = CardContext(
                    repo_id=repo_id, endpoint=hub_url(), evaluation=evaluation, source_license=source_license
                )
                card = model_card(result, manifest, baseline, context)
                pushed = publish_variant_task(result.path, manifest, card, repo_id, request.hub_private)
            except Exception as error:  # after the tasks' retries: the version stays unpublished
                failures.append(f"{result.recipe}: {type(error).__name__}: {error}".splitlines()[0])
                continue
            record_publication_task(
                result.model_name, result.model_version, pushed.repo, pushed.commit, pushed.tag
            )
            published = pushed.repo, pushed.commit
        result.hub_repo, result.hub_commit = published
    return failures
