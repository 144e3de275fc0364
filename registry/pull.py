"""Serving-host pull: resolve a registered variant, download it, verify every byte, install atomically.

The root of trust is the MLflow model version: its `manifest_sha256` tag pins manifest.json, and the
manifest pins every other file. Files come from MLflow's artifact store or from the Hub commit recorded
on the version; either way nothing is installed unless all of it verifies.
"""

import os
import shutil
from pathlib import Path
from typing import Literal

from huggingface_hub.errors import HfHubHTTPError
from mlflow.entities.model_registry import ModelVersion

from quantforge.core.atomic import atomic_dir, remove_stale, scratch_dir
from quantforge.core.errors import QuantforgeError, TransientError
from quantforge.core.hub import hub_endpoint
from quantforge.core.locks import exclusive
from quantforge.core.manifest import (
    MANIFEST_FILE,
    Manifest,
    is_pinned_copy,
    read_manifest,
    sha256_file,
    verify,
)
from quantforge.core.paths import data_dir
from quantforge.core.retries import IO_ERRORS, is_transient
from quantforge.registry.aliases import resolve_version
from quantforge.registry.tracking import require_registry, tracking_uri
from quantforge.registry.variants import TAG

PullSource = Literal["mlflow", "hub"]


def default_destination(version: ModelVersion) -> Path:
    """Where a pull installs when no destination is given."""
    return data_dir() / "pulled" / version.name / f"v{version.version}"


def pull(spec: str, dest: Path | None = None, source: PullSource = "mlflow") -> Path:
    """Install the variant `spec` (`NAME@ALIAS` or `NAME/VERSION`) at `dest`, verified; return the path.

    An installation already at `dest` that verifies is kept and nothing is downloaded. Another one is
    replaced only once the new one is complete and verified, by swapping the two folders; `dest` must be
    absent, empty or an earlier install (it is never a folder of other files). Pulls of one `dest` take
    turns: the second finds the first one's install and keeps it.
    """
    return install(resolve(spec), dest, source)


def resolve(spec: str) -> ModelVersion:
    """The version `spec` names (`resolve_version`), in a registry that exists (`require_registry`)."""
    require_registry()
    return resolve_version(spec)


def install(version: ModelVersion, dest: Path | None = None, source: PullSource = "mlflow") -> Path:
    """Install `version` (as `resolve_version` returns it) at `dest` as `pull` does; return the path."""
    dest = dest or default_destination(version)
    pinned = version.tags.get(f"{TAG}manifest_sha256")
    if not pinned:
        spec = f"{version.name}/{version.version}"
        raise QuantforgeError(f"`model`: {spec!r} has no manifest checksum in the registry")
    _refuse_foreign_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(dest.with_name(f".{dest.name}.lock")):
        remove_stale(dest)  # a pull killed mid-swap left its complete copy beside `dest`: put back first
        if is_pinned_copy(dest, pinned):
            return dest
        with scratch_dir(dest) as scratch:
            manifest = Manifest.model_validate_json(
                _pinned_manifest(_download(version, source, MANIFEST_FILE, scratch, [MANIFEST_FILE]), pinned)
            )
        needs_bytes = sum(f.size for f in manifest.files.values())
        with atomic_dir(dest, needs_bytes, replace_existing=True) as staging:
            _download(version, source, None, staging, [*manifest.files, MANIFEST_FILE])
            _pinned_manifest(staging / MANIFEST_FILE, pinned)
            verify(staging, manifest)
    return dest


def _refuse_foreign_destination(dest: Path) -> None:
    """Refuse a `dest` that is a file, a symlink, or a folder of files that are not a quantforge install."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        kind = "a symlink" if dest.is_symlink() else "a file"
        raise QuantforgeError(f"`--dest`: {dest} is {kind}, not a folder (nothing was touched)")
    if dest.is_dir() and any(dest.iterdir()) and not _is_quantforge_install(dest):
        raise QuantforgeError(
            f"`--dest`: {dest} holds files that are not a quantforge install, and a pull replaces the "
            "whole folder: name a new or empty folder (nothing was touched)"
        )


def _is_quantforge_install(folder: Path) -> bool:
    try:
        read_manifest(folder)
    except (OSError, ValueError, QuantforgeError):
        return False
    return True


def _pinned_manifest(path: Path, pinned: str) -> str:
    """The text of the manifest at `path`, refused unless its sha256 is the one the registry pins."""
    if sha256_file(path) != pinned:
        raise QuantforgeError(f"{MANIFEST_FILE}: sha256 does not match the registry (refusing to install)")
    return path.read_text()


def _download(
    version: ModelVersion, source: PullSource, file: str | None, into: Path, files: list[str]
) -> Path:
    """Download one file (or, with None, the whole variant) into `into`; return its local path.

    From the Hub only the manifest's `files` are fetched: the repo also holds its model card.
    """
    try:
        if source == "hub":
            return _download_from_hub(version, file, into, files)
        return _download_from_mlflow(version, file, into)
    except (HfHubHTTPError, *IO_ERRORS) as error:  # a dropped connection, a server error, a full disk
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        failure = TransientError if is_transient(error) else QuantforgeError
        raise failure(
            f"`from`: download of {version.name}/{version.version} from {source} failed: {reason}"
        ) from error


def _download_from_mlflow(version: ModelVersion, file: str | None, into: Path) -> Path:
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
