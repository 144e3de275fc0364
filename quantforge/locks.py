"""Per-identity file locks: two runs on one host never make the same variant at the same time."""

import contextlib
import fcntl
from collections.abc import Iterator

from quantforge.paths import data_dir


@contextlib.contextmanager
def identity_lock(identity: str) -> Iterator[None]:
    """Hold an exclusive lock named by `identity` (waits for the holder; released on exit or crash)."""
    path = data_dir() / "locks" / f"{identity}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # the kernel drops it when the process dies: no stale locks
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
