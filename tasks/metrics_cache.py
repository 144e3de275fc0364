"""The metrics cache: a model folder measured on given windows is measured once per data directory."""

import hashlib
from collections.abc import Callable
from pathlib import Path

from quantforge.core.atomic import atomic_dir, write_json
from quantforge.core.paths import data_dir
from quantforge.core.records import Metrics
from quantforge.tasks.datasets import TokenSet


def cached_metrics(key: str, compute: Callable[[], Metrics]) -> Metrics:
    """Metrics stored under `key`, computed once. The key names the runtime, the folder or source, the
    windows (`windows_key`) and the new-token count: whatever changes the figures."""
    return _cached(key, compute, companion=None)


def cached_baseline(key: str, compute: Callable[[Path], Metrics]) -> tuple[Metrics, Path]:
    """A baseline's metrics stored under `key`, and the folder beside them where `compute(folder)` keeps
    its next-token distributions (what its variants' divergence is measured against): made together,
    once, and again when the folder is missing."""
    reference = _cache_file(key).with_suffix(".topk")

    def measure() -> Metrics:
        with atomic_dir(reference, replace_existing=True) as folder:
            return compute(folder)

    return _cached(key, measure, companion=reference), reference


def _cached(key: str, compute: Callable[[], Metrics], companion: Path | None) -> Metrics:
    cache = _cache_file(key)
    if cache.exists() and (companion is None or companion.exists()):
        return Metrics.model_validate_json(cache.read_text())
    metrics = compute()
    write_json(cache, metrics.model_dump(mode="json"))
    return metrics


def _cache_file(key: str) -> Path:
    return data_dir() / "metrics" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def windows_key(windows: TokenSet) -> str:
    """The part of a cache key that names the evaluation windows."""
    return f"{windows.content_hash}|{windows.windows.shape}"
