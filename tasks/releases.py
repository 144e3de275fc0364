"""releases: the current (repo, commit sha) of every model a watch entry covers, from the Hub."""

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from quantforge.hub import hub_api
from quantforge.retries import only_io_errors
from tasks.watchlist import WatchEntry


class Release(BaseModel):
    """One model at one commit."""

    repo: str
    sha: str


def current_releases(entry: WatchEntry) -> list[Release]:
    """The head commit of the entry's model, or of each of its author's recent repos that pass its filters."""
    api = hub_api()
    if entry.model:
        return [Release(repo=entry.model, sha=api.model_info(entry.model).sha)]
    models = api.list_models(
        author=entry.author,
        sort="last_modified",
        limit=entry.limit,
        expand=["sha", "pipeline_tag", "safetensors"],
    )
    return [
        Release(repo=m.id, sha=m.sha)
        for m in models
        if m.sha and entry.accepts(m.id, m.pipeline_tag, m.safetensors.total if m.safetensors else None)
    ]


# 429 (rate limited) and 5xx are retried with growing waits; a 404 for a watched id is not.
current_releases_task = task(
    current_releases,
    name="hub-releases",
    retries=3,
    retry_delay_seconds=[10, 30, 90],
    retry_condition_fn=only_io_errors,
    cache_policy=NO_CACHE,
)
