"""Toolchain: the library versions that change a variant's bytes, and their hash (part of its identity).

Which packages count is each backend's business (`Backend.packages`); this module only reads versions.
"""

import hashlib
import json
import re
from importlib.metadata import Distribution, version
from pathlib import Path


def installed_versions(packages: tuple[str, ...], site_packages: Path | None = None) -> dict[str, str]:
    """Versions of `packages` in this environment, or in the environment whose site-packages is given."""
    if site_packages is None:
        return {name: version(name) for name in packages}
    found = {
        _normalized(d.metadata["Name"]): d.version for d in Distribution.discover(path=[str(site_packages)])
    }
    return {name: found[name] for name in packages}


def _normalized(name: str) -> str:
    """PEP 503 name: IPEX's metadata says `intel_extension_for_pytorch`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def versions_hash(versions: dict[str, str]) -> str:
    """Stable hash of a toolchain."""
    return hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()
