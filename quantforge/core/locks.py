"""File locks: two processes never do the same work at once, and a writer's temporary files name a live owner.

The kernel drops a lock when its holder dies (kill -9 included) whatever pid namespace it ran in, so
containers sharing a volume see each other's locks, and a lock that can be taken has no live holder.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from quantforge.core.paths import data_dir


@contextlib.contextmanager
def exclusive(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on the file `path` and yield True; without `wait`, yield False at once when
    another process holds it.

    The file is removed on release, while still held: filelock retries a file that was unlinked under it,
    so a waiter never holds a lock that no longer guards the name.
    """
    lock = FileLock(path, blocking=wait)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def identity_lock(identity: str) -> Iterator[None]:
    """Hold an exclusive lock named by `identity` (waits for the holder; released on exit or crash)."""
    path = data_dir() / "locks" / f"{identity}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path):
        yield
