"""The metrics cache: a model folder measured on given windows is measured once per data directory."""

import hashlib
from collections.abc import Callable

from quantforge.core.atomic import write_json
from quantforge.core.paths import data_dir
from quantforge.core.records import Metrics
from quantforge.tasks.datasets import TokenSet


def cached_metrics(key: str, compute: Callable[[], Metrics]) -> Metrics:
    """Metrics stored under `key`, computed once. The key names the runtime, the folder or source, the
    windows (`windows_key`) and the new-token count: whatever changes the figures."""
    cache = data_dir() / "metrics" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
    if cache.exists():
        return Metrics.model_validate_json(cache.read_text())
    metrics = compute()
    write_json(cache, metrics.model_dump(mode="json"))
    return metrics


def windows_key(windows: TokenSet) -> str:
    """The part of a cache key that names the evaluation windows."""
    return f"{windows.content_hash}|{windows.windows.shape}"
