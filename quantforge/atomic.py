"""Write-then-rename helpers: nothing half-written is ever visible under its final name."""

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
def atomic_dir(final: Path, needs_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to `final` only if the block succeeds.

    `needs_bytes` is checked against the free space first, so a write that cannot fit fails before it
    starts; a write that still runs out of space (another process filled the disk) gets the same clear
    error, and its partial files are removed either way.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(final.parent).free
    if free < needs_bytes:
        raise QuantforgeError(
            f"not enough disk space to write {final}: needs ~{needs_bytes / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free (nothing was written)"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        if final.exists():  # another run finished the same work first: keep theirs
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


def discard(path: Path) -> None:
    """Remove a folder by renaming it aside first: readers never see it half-deleted."""
    if not path.exists():
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, retired / path.name)
    shutil.rmtree(retired)


def _is_enospc(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        error = error.__cause__ or error.__context__
    return False


def write_json(path: Path, payload: object) -> None:
    """Write JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
