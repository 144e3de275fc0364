"""releases: the current (repo, commit sha) of every model a watch entry covers, from the Hub; and what a
release event may ask for.
"""

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantforge.hub import hub_api
from quantforge.retries import only_io_errors
from tasks.request import QuantizeRequest
from tasks.watchlist import REPO_ID, RefusedRelease, WatchEntry, Watchlist

# Why a field of a release event was refused, by pydantic error type (the field and value are added).
REFUSALS = {
    "extra_forbidden": "is not something an event may set (only `repo`, `sha` and `recipes`)",
    "string_type": "is not a string",
}
FORMS = {"repo": "is not a Hub repo id (owner/name)", "sha": "is not a commit sha (40 lowercase hex digits)"}
SHOWN_CHARS = 80  # an event's keys and values are anyone's: echo enough to recognise them, never a flood


class Release(BaseModel):
    """One model at one commit."""

    repo: str
    sha: str


class ReleaseNotice(BaseModel):
    """The payload of a `quantforge.model.released` event: which release, and optionally which of the
    recipe sets its watchlist entry allows; everything else of the request is the watchlist's."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(pattern=REPO_ID)
    sha: str = Field(pattern=r"^[0-9a-f]{40}$")  # a commit, not a branch or tag that can move
    recipes: str | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "ReleaseNotice":
        """Validate an event's payload; RefusedRelease names the first field at fault and its value."""
        try:
            return cls.model_validate(payload)
        except ValidationError as error:
            first = error.errors()[0]
            field = _shown(".".join(str(part) for part in first["loc"]))
            if first["type"] == "missing":
                raise RefusedRelease(f"`{field}`: missing from the event's payload") from None
            reason = (
                FORMS[field]
                if first["type"] == "string_pattern_mismatch"
                else REFUSALS.get(first["type"], first["msg"])
            )
            raise RefusedRelease(f"`{field}`: {_shown(repr(first['input']))} {reason}") from None


def _shown(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


class RepoFacts(BaseModel):
    """What an author entry's filters look at, from the Hub."""

    pipeline_tag: str | None
    parameters: int | None


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


def repo_facts(repo: str) -> RepoFacts:
    """The repo's pipeline tag and parameter count, as the Hub reports them."""
    info = hub_api().model_info(repo, expand=["pipeline_tag", "safetensors"])
    return RepoFacts(
        pipeline_tag=info.pipeline_tag, parameters=info.safetensors.total if info.safetensors else None
    )


def release_request(
    watchlist: Watchlist, payload: dict[str, Any], facts: Callable[[str], RepoFacts]
) -> QuantizeRequest:
    """The quantize request for the release an event announces, all but model, revision and recipe set
    from the watchlist entry that covers it; RefusedRelease when the event asks for anything else.
    `facts` looks the repo up on the Hub, only for author entries that filter on it."""
    notice = ReleaseNotice.from_payload(payload)
    for entry in watchlist.candidates(notice.repo):
        if entry.filters_by_metadata():
            found = facts(notice.repo)
            if not entry.accepts(notice.repo, found.pipeline_tag, found.parameters):
                continue
        return watchlist.request_for(entry, notice.repo, notice.sha, notice.recipes)
    raise RefusedRelease(f"`repo`: {notice.repo!r} is not covered by any watchlist entry")


# Hub lookups: 429 (rate limited) and 5xx are retried with growing waits; a 404 for a repo id is not.
HUB_LOOKUP = {
    "retries": 3,
    "retry_delay_seconds": [10, 30, 90],
    "retry_condition_fn": only_io_errors,
    "cache_policy": NO_CACHE,
}
current_releases_task = task(current_releases, name="hub-releases", **HUB_LOOKUP)
repo_facts_task = task(repo_facts, name="hub-repo-facts", **HUB_LOOKUP)
