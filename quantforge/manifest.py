"""manifest.json: what a variant directory holds (every file's sha256 and size) and where it came from.

The same file travels with the variant into MLflow, onto the Hub and to serving hosts, which check
every byte against it before they install anything.
"""

import hashlib
from pathlib import Path

from pydantic import BaseModel

from quantforge.errors import QuantforgeError

MANIFEST_FILE = "manifest.json"
_CHUNK = 4 * 2**20


class FileEntry(BaseModel):
    """One file of the variant."""

    sha256: str
    size: int


class QuantizeUsage(BaseModel):
    """What making the variant cost."""

    seconds: float
    peak_rss_mb: float


class Manifest(BaseModel):
    """A variant's contents and lineage."""

    source_repo: str
    source_sha: str
    recipe_name: str
    recipe: dict
    recipe_hash: str
    variant_identity: str  # recipe hash + toolchain (+ calibration token ids for data-aware recipes)
    toolchain: dict[str, str]
    calibration: str | None
    calibration_hash: str | None
    quantize: QuantizeUsage
    files: dict[str, FileEntry]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(folder: Path) -> dict[str, FileEntry]:
    """Every file under `folder` except the manifest itself, by relative POSIX path."""
    return {
        path.relative_to(folder).as_posix(): FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a variant directory."""
    path = folder / MANIFEST_FILE
    if not path.exists():
        raise QuantforgeError(f"{folder} has no {MANIFEST_FILE}")
    return Manifest.model_validate_json(path.read_text())


def verify(folder: Path, manifest: Manifest) -> None:
    """Raise naming the first file that is missing, extra, truncated or altered."""
    present = {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE
    }
    extra = sorted(present - set(manifest.files))
    if extra:
        raise QuantforgeError(f"{extra[0]}: not in the manifest (refusing to install)")
    for name, expected in sorted(manifest.files.items()):
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
