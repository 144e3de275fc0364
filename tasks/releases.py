"""releases: the current (repo, commit sha) of every model a watch entry covers, from the Hub; and what a
release event may ask for.
"""

from collections.abc import Callable
from typing import Any

from huggingface_hub.errors import RepositoryNotFoundError
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantforge.core.errors import truncated
from quantforge.core.hub import hub_api
from quantforge.core.retries import only_io_errors
from quantforge.core.yaml_input import MAX_ECHO, MAX_MESSAGE
from quantforge.tasks.request import QuantizeRequest
from quantforge.tasks.watchlist import REPO_ID, RefusedRelease, WatchEntry, Watchlist

# Why a field of a release event was refused, by pydantic error type (the field and value are added).
REFUSALS = {
    "extra_forbidden": "is not something an event may set (only `repo`, `sha` and `recipes`)",
    "string_type": "is not a string",
}
FORMS = {"repo": "is not a Hub repo id (owner/name)", "sha": "is not a commit sha (40 lowercase hex digits)"}


class Release(BaseModel):
    """One model at one commit."""

    repo: str
    sha: str


class ReleaseNotice(BaseModel):
    """The payload of a `quantforge.model.released` event: which release, and optionally which of the
    recipe sets its watchlist entry allows; everything else of the request is the watchlist's."""

    model_config = ConfigDict(extra="forbid", regex_engine="python-re")  # REPO_ID looks ahead

    repo: str = Field(pattern=REPO_ID)
    sha: str = Field(pattern=r"^[0-9a-f]{40}\Z")  # a commit, not a branch or tag that can move
    recipes: str | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "ReleaseNotice":
        """Validate an event's payload; RefusedRelease names the first field at fault and its value."""
        try:
            return cls.model_validate(payload)
        except ValidationError as error:
            first = error.errors()[0]
            field = truncated(".".join(str(part) for part in first["loc"]), MAX_ECHO)
            if first["type"] == "missing":
                raise RefusedRelease(f"`{field}`: missing from the event's payload") from None
            reason = (
                FORMS[field]
                if first["type"] == "string_pattern_mismatch"
                else REFUSALS.get(first["type"], first["msg"])
            )
            raise RefusedRelease(f"`{field}`: {shown(first['input'])} {reason}") from None


def shown(value: Any) -> str:
    """An event's value as echoed in a refusal: its repr, cut to MAX_ECHO (anyone's input, never a flood)."""
    return truncated(repr(value), MAX_ECHO)


def current_releases(entry: WatchEntry) -> list[Release]:
    """The head commit of the entry's model, or of each of its author's recent repos that pass its filters:
    what the watcher announces for the entry, and all a release event may name."""
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


def watched_release(entry: WatchEntry, repo: str) -> Release | None:
    """The release of `repo` the watcher announces for `entry` now (one Hub call, as the watcher makes it);
    None when it announces none: `repo` is not on the Hub (or private or gated to this worker), or is not
    among the author's `limit` most recently modified repos that pass the entry's filters."""
    try:
        releases = current_releases(entry)
    except RepositoryNotFoundError:  # GatedRepoError is one too; 429, 5xx and I/O errors are retried
        return None
    return next((release for release in releases if release.repo == repo), None)


def release_request(
    watchlist: Watchlist,
    payload: dict[str, Any],
    released: Callable[[WatchEntry, str], Release | None],
) -> QuantizeRequest:
    """The quantize request for the release an event announces, all but model, revision and recipe set
    from the watchlist entry that covers it; RefusedRelease when the event asks for anything else.

    `released(entry, repo)` is what the watcher announces for `repo` under `entry` (`watched_release`):
    the event's `sha` must be that release, the repo's current head as the Hub reports it, never an older
    commit or one of another branch or pull request. An author entry covers the repo only if the
    watcher announces it there; a model entry's request is built before the Hub is asked, so an event
    refused for its recipe set costs no lookup."""
    notice = ReleaseNotice.from_payload(payload)
    for entry in watchlist.candidates(notice.repo):
        if entry.model is None:
            release = released(entry, notice.repo)
            if release is None:
                continue  # not announced for this author entry: maybe for the next one
            request = _request(watchlist, entry, notice)
        else:
            request = _request(watchlist, entry, notice)
            release = released(entry, notice.repo)
            if release is None:
                raise RefusedRelease(
                    f"`repo`: {shown(notice.repo)} is not on the Hub, or is private or gated to this worker"
                )
        if release.sha != notice.sha:
            raise RefusedRelease(
                f"`sha`: {notice.sha!r} is not the current head of {shown(notice.repo)} "
                f"(the Hub reports {release.sha[:12]}): only the current release is quantized"
            )
        return request
    raise RefusedRelease(f"`repo`: {shown(notice.repo)} is not covered by any watchlist entry")


def _request(watchlist: Watchlist, entry: WatchEntry, notice: ReleaseNotice) -> QuantizeRequest:
    """The entry's request for the notice; a setting it fails on is refused, naming the field."""
    try:
        return watchlist.request_for(entry, notice.repo, notice.sha, notice.recipes)
    except ValidationError as error:
        first = error.errors()[0]
        field = truncated(".".join(str(part) for part in first["loc"]) or "request", MAX_ECHO)
        message = " ".join(first["msg"].removeprefix("Value error, ").split())
        refusal = f"`{field}`: {shown(first['input'])} {message} (the request for {shown(notice.repo)})"
        raise RefusedRelease(truncated(refusal, MAX_MESSAGE)) from None


# Hub lookups: 429 (rate limited) and 5xx are retried with growing waits; a 404 for a repo id is not.
HUB_LOOKUP = {
    "retries": 3,
    "retry_delay_seconds": [10, 30, 90],
    "retry_condition_fn": only_io_errors,
    "cache_policy": NO_CACHE,
}
current_releases_task = task(current_releases, name="hub-releases", **HUB_LOOKUP)
watched_release_task = task(watched_release, name="hub-watched-release", **HUB_LOOKUP)
