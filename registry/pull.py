"""Serving-host pull: resolve a registered variant, download it, verify every byte, install atomically.

The root of trust is the MLflow model version: its `manifest_sha256` tag pins manifest.json, and the
manifest pins every other file. Files come from MLflow's artifact store or from the Hub commit recorded
on the version; either way nothing is installed unless all of it verifies.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from mlflow.entities.model_registry import ModelVersion
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.atomic import atomic_dir, discard
from quantforge.errors import QuantforgeError
from quantforge.hub import hub_endpoint
from quantforge.manifest import MANIFEST_FILE, Manifest, read_manifest, sha256_file, verify
from quantforge.paths import data_dir
from registry.aliases import resolve_version
from registry.tracking import tracking_uri
from registry.variants import TAG

PullSource = Literal["mlflow", "hub"]


def default_destination(version: ModelVersion) -> Path:
    """Where a pull installs when no destination is given."""
    return data_dir() / "pulled" / version.name / f"v{version.version}"


def pull(spec: str, dest: Path | None = None, source: PullSource = "mlflow") -> Path:
    """Install the variant `spec` (`NAME@ALIAS` or `NAME/VERSION`) at `dest`, verified; return the path.

    An installation already at `dest` that verifies is kept and nothing is downloaded.
    """
    version = resolve_version(spec)
    dest = dest or default_destination(version)
    pinned = version.tags.get(f"{TAG}manifest_sha256")
    if not pinned:
        raise QuantforgeError(f"`model`: {spec!r} has no manifest checksum in the registry")
    if _is_installed(dest, pinned):
        return dest
    with tempfile.TemporaryDirectory(prefix=".manifest.", dir=_existing_parent(dest)) as scratch:
        manifest_path = _download(version, source, MANIFEST_FILE, Path(scratch), [MANIFEST_FILE])
        if sha256_file(manifest_path) != pinned:
            raise QuantforgeError(
                f"{MANIFEST_FILE}: sha256 does not match the registry (refusing to install)"
            )
        manifest = Manifest.model_validate_json(manifest_path.read_text())
    discard(dest)  # present but not verifiable: replaced, never patched
    with atomic_dir(dest, needs_bytes=sum(f.size for f in manifest.files.values())) as staging:
        _download(version, source, None, staging, [*manifest.files, MANIFEST_FILE])
        if sha256_file(staging / MANIFEST_FILE) != pinned:
            raise QuantforgeError(
                f"{MANIFEST_FILE}: sha256 does not match the registry (refusing to install)"
            )
        verify(staging, manifest)
    return dest


def _is_installed(dest: Path, pinned: str) -> bool:
    if not (dest / MANIFEST_FILE).exists() or sha256_file(dest / MANIFEST_FILE) != pinned:
        return False
    try:
        verify(dest, read_manifest(dest))
    except QuantforgeError:
        return False
    return True


def _download(
    version: ModelVersion, source: PullSource, file: str | None, into: Path, files: list[str]
) -> Path:
    """Download one file (or, with None, the whole variant) into `into`; return its local path.

    From the Hub only the manifest's `files` are fetched: the repo also holds its model card.
    """
    if source == "hub":
        return _download_from_hub(version, file, into, files)
    import mlflow.artifacts

    uri = version.source + (f"/{file}" if file else "")
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into), tracking_uri=tracking_uri())
    )
    if file is None and local != into:  # MLflow adds the artifact folder's name: flatten it
        for child in local.iterdir():
            os.replace(child, into / child.name)
        local.rmdir()
        return into
    return local


def _download_from_hub(version: ModelVersion, file: str | None, into: Path, files: list[str]) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    repo, commit = version.tags.get(f"{TAG}hub_repo"), version.tags.get(f"{TAG}hub_commit")
    if not (repo and commit):
        raise QuantforgeError(f"`from`: {version.name}/{version.version} was never published to the Hub")
    if file:
        return Path(hf_hub_download(repo, file, revision=commit, local_dir=into, endpoint=hub_endpoint()))
    snapshot_download(repo, revision=commit, local_dir=into, allow_patterns=files, endpoint=hub_endpoint())
    shutil.rmtree(into / ".cache", ignore_errors=True)  # huggingface_hub's local-dir bookkeeping
    return into


def _existing_parent(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent


pull_task = task(pull, name="pull", cache_policy=NO_CACHE)
