"""Write-then-rename helpers: nothing half-written is ever visible under its final name.

Temporary names carry the writer's pid (`.NAME.PID.RANDOM.partial`), so leftovers of a writer that
was killed (kill -9, power loss) are recognised and removed by the next writer of the same name.
"""

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from quantforge.errors import QuantforgeError


@contextlib.contextmanager
def atomic_dir(final: Path, needs_bytes: int = 0, replace_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to `final` only if the block succeeds.

    An existing `final` is kept (another run finished the same work first) unless `replace_existing`.
    `needs_bytes` is checked against the free space first, so a write that cannot fit fails before it
    starts; a write that still runs out of space (another process filled the disk) gets the same clear
    error, and its partial files are removed either way.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    require_free_space(final.parent, needs_bytes, f"write {final}")
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(final), suffix=".partial", dir=final.parent))
    try:
        yield tmp
        if final.exists() and replace_existing:
            discard(final)
        if final.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        # Libraries word a full disk their own way (OpenVINO: "basic_ios::clear: iostream error") and
        # remove what they could not finish, so judge by the space left once our partial files are gone.
        if isinstance(error, Exception) and (
            _is_enospc(error) or shutil.disk_usage(final.parent).free < needs_bytes
        ):
            raise QuantforgeError(f"disk full while writing {final} (nothing was kept)") from None
        raise


def require_free_space(folder: Path, needs_bytes: int, what: str) -> None:
    """Refuse, before anything is written, an operation that cannot fit on `folder`'s disk."""
    free = shutil.disk_usage(folder).free
    if free < needs_bytes:
        raise QuantforgeError(
            f"not enough disk space to {what}: needs ~{needs_bytes / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free (nothing was written)"
        )


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling file path; rename it to `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    handle, name = tempfile.mkstemp(prefix=_prefix(final), suffix=".partial", dir=final.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: object) -> None:
    """Write JSON atomically (temp file + rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def discard(path: Path) -> None:
    """Remove a folder by renaming it aside first: readers never see it half-deleted."""
    if not path.exists():
        return
    retired = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".old", dir=path.parent))
    os.replace(path, retired / path.name)
    shutil.rmtree(retired)


def remove_stale(final: Path) -> None:
    """Remove temporary siblings of `final` whose writer process no longer exists."""
    for leftover in final.parent.glob(f".{final.name}.*"):
        pid = leftover.name.removeprefix(f".{final.name}.").split(".", 1)[0]
        if leftover.suffix in (".partial", ".old") and pid.isdigit() and not _alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _prefix(final: Path) -> str:
    return f".{final.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_enospc(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        error = error.__cause__ or error.__context__
    return False
