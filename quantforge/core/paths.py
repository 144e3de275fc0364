"""Where quantforge keeps its caches: one data directory, chosen by QUANTFORGE_HOME."""

import os
from pathlib import Path


def data_dir() -> Path:
    """The data directory (model, dataset, IR and variant caches); not created here."""
    override = os.environ.get("QUANTFORGE_HOME")
    if override:
        return Path(override).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "quantforge"
