"""Checks remembered once passed: an empty file per check and input in `QUANTFORGE_HOME`, so a rerun does
not pay again for a check whose input and checker did not change (a refusal is never recorded)."""

from collections.abc import Callable
from pathlib import Path


def check_once(record: Path, check: Callable[[], object]) -> None:
    """Run `check` unless `record` exists; record the pass when it returns (an exception records nothing)."""
    if record.exists():
        return
    check()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.touch()
