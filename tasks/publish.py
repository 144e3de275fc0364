"""publish: one Hub commit per variant (files, manifest.json, model card), tagged with its identity.

Idempotent, so a retry or a rerun never pushes twice: a tag that exists means published; a commit
carrying the tag's name in its title but no tag yet (a crash between commit and tag) is tagged, not
pushed again. The token comes from `HF_TOKEN` through huggingface_hub and is never passed around.
"""

from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from quantforge.core.errors import QuantforgeError
from quantforge.core.hub import hub_api
from quantforge.core.manifest import Manifest
from quantforge.core.names import short_name
from quantforge.core.retries import only_io_errors

DEFAULT_REPO_TEMPLATE = "{namespace}/{source}-{recipe}-ov"
CARD_FILE = "README.md"
KEPT_FILES = {".gitattributes"}  # Hub bookkeeping, never deleted by a new variant commit


class Publication(BaseModel):
    """Where a variant lives on the Hub."""

    repo: str
    commit: str
    tag: str
    pushed: bool  # False when the tag already existed and nothing was uploaded


def hub_repo_id(template: str, namespace: str, source_repo: str, recipe_name: str) -> str:
    """`{namespace}/{source}-{recipe}-ov` filled in, e.g. `acme/SmolLM2-135M-Instruct-int4-awq-se-ov`."""
    try:
        repo_id = template.format(namespace=namespace, source=short_name(source_repo), recipe=recipe_name)
    except (KeyError, IndexError, ValueError) as error:
        raise QuantforgeError(
            f"`hub_repo_template`: {template!r} is not a valid template ({error})"
        ) from None
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise QuantforgeError(f"`hub_repo_template`: {template!r} gives {repo_id!r}, not NAMESPACE/NAME")
    return repo_id


def publication_tag(manifest: Manifest) -> str:
    """`src-<source sha7>-<variant identity7>`: unique per (source sha, recipe, toolchain, calibration)."""
    return f"src-{manifest.source_sha[:7]}-{manifest.variant_identity[:7]}"


def publish_variant(
    variant_dir: Path, manifest: Manifest, card: str, repo_id: str, private: bool
) -> Publication:
    """Push the variant as one commit and tag it; nothing is pushed when its tag exists."""
    api = hub_api()
    tag = publication_tag(manifest)
    try:
        refs = api.list_repo_refs(repo_id)
    except RepositoryNotFoundError:
        refs = None
    if refs is not None:
        tagged = next((t for t in refs.tags if t.name == tag), None)
        if tagged is not None:
            return Publication(repo=repo_id, commit=tagged.target_commit, tag=tag, pushed=False)
    api.create_repo(repo_id, private=private, exist_ok=True)
    title = f"quantforge {tag}: {manifest.recipe_name} of {manifest.source_repo}@{manifest.source_sha[:12]}"
    orphan = next((c for c in api.list_repo_commits(repo_id) if c.title == title), None)
    if orphan is not None:  # committed by an earlier attempt that stopped before tagging
        commit, pushed = orphan.commit_id, False
    else:
        commit, pushed = _commit(api, repo_id, variant_dir, card, title), True
    api.create_tag(repo_id, tag=tag, revision=commit, exist_ok=True)
    return Publication(repo=repo_id, commit=commit, tag=tag, pushed=pushed)


def _commit(api: HfApi, repo_id: str, variant_dir: Path, card: str, title: str) -> str:
    files = sorted(p.relative_to(variant_dir).as_posix() for p in variant_dir.rglob("*") if p.is_file())
    previous = set(api.list_repo_files(repo_id)) - set(files) - {CARD_FILE} - KEPT_FILES
    operations = [
        *(CommitOperationAdd(path_in_repo=name, path_or_fileobj=variant_dir / name) for name in files),
        CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode()),
        *(
            CommitOperationDelete(path_in_repo=name) for name in sorted(previous)
        ),  # the last variant's leftovers
    ]
    info = api.create_commit(repo_id, operations, commit_message=title)
    return info.oid


publish_variant_task = task(
    publish_variant,
    name="publish",
    retries=4,
    retry_delay_seconds=[1, 2, 4, 8],
    retry_condition_fn=only_io_errors,
    cache_policy=NO_CACHE,
)
