"""manifest.json: what a variant directory holds (every file's sha256 and size) and where it came from.

The same file travels with the variant into MLflow, onto the Hub and to serving hosts, which check
every byte against it before they install anything. It holds no run-time measurements (quantize time,
peak memory: those are the run's MLflow metrics), so it says what the variant is, never how one run
of making it went.
"""

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel

from quantforge.core.errors import QuantforgeError

MANIFEST_FILE = "manifest.json"
CHECKSUMS_FILE = "quantforge-checksums.json"  # a cache folder's own files, checked before reuse
BOOKKEEPING = {MANIFEST_FILE, CHECKSUMS_FILE}
_CHUNK = 4 * 2**20


class FileEntry(BaseModel):
    """One file of the variant."""

    sha256: str
    size: int


class Manifest(BaseModel):
    """A variant's contents and lineage.

    Manifests written before run-time figures left it also hold `quantize` (seconds, peak memory):
    pydantic ignores unknown fields, so those cache entries and registered versions are read as they
    are, and their bytes (which the registry pins) are never rewritten.
    """

    source_repo: str
    source_sha: str
    recipe_name: str
    recipe: dict
    recipe_hash: str
    variant_identity: str  # recipe hash + toolchain (+ calibration token ids for data-aware recipes)
    toolchain: dict[str, str]
    calibration: str | None
    calibration_hash: str | None
    files: dict[str, FileEntry]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(folder: Path) -> dict[str, FileEntry]:
    """Every file under `folder` except quantforge's bookkeeping files, by relative POSIX path."""
    return {
        path.relative_to(folder).as_posix(): FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in BOOKKEEPING
    }


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a variant directory."""
    path = folder / MANIFEST_FILE
    if not path.exists():
        raise QuantforgeError(f"{folder} has no {MANIFEST_FILE}")
    return Manifest.model_validate_json(path.read_text())


def verify(folder: Path, manifest: Manifest) -> None:
    """Raise naming the first file that is missing, extra, truncated or altered."""
    verify_files(folder, manifest.files)


def verify_files(folder: Path, files: dict[str, FileEntry]) -> None:
    """Raise naming the first file of `folder` that differs from `files` (bookkeeping files aside)."""
    present = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name not in BOOKKEEPING
    }
    extra = sorted(present - set(files))
    if extra:
        raise QuantforgeError(f"{extra[0]}: not in the manifest (refusing to install)")
    for name, expected in sorted(files.items()):
        path = folder / name
        if name not in present:
            raise QuantforgeError(f"{name}: missing (refusing to install)")
        if path.stat().st_size != expected.size:
            raise QuantforgeError(
                f"{name}: {path.stat().st_size} bytes, the manifest says {expected.size} "
                "(refusing to install)"
            )
        if sha256_file(path) != expected.sha256:
            raise QuantforgeError(f"{name}: sha256 does not match the manifest (refusing to install)")


def is_pinned_copy(folder: Path, manifest_sha256: str) -> bool:
    """True when `folder` holds exactly the files of the manifest whose sha256 is `manifest_sha256`."""
    try:
        if sha256_file(folder / MANIFEST_FILE) != manifest_sha256:
            return False
        verify(folder, read_manifest(folder))
    except (OSError, ValueError, QuantforgeError):
        return False
    return True


def write_checksums(folder: Path) -> None:
    """Record the folder's files so that a later reuse can detect truncation or tampering."""
    entries = {name: entry.model_dump() for name, entry in file_entries(folder).items()}
    (folder / CHECKSUMS_FILE).write_text(json.dumps(entries, indent=1, sort_keys=True))


def is_intact(folder: Path) -> bool:
    """True when the folder's files match its recorded checksums (or manifest); False if absent or not."""
    try:
        if (folder / MANIFEST_FILE).exists():
            verify(folder, read_manifest(folder))
            return True
        recorded = json.loads((folder / CHECKSUMS_FILE).read_text())
        verify_files(folder, {name: FileEntry(**entry) for name, entry in recorded.items()})
        return True
    except (OSError, ValueError, QuantforgeError):
        return False
