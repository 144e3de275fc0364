"""Write-then-rename helpers: nothing half-written is ever visible under its final name.

A writer's temporary siblings of `final` are `.NAME.OWNER.partial` (what it writes) and `.NAME.OWNER.old`
(what it replaces), where OWNER is host, pid and a random part; the writer holds the lock
`.NAME.OWNER.lock` for as long as they exist. The next writer of `final` removes the siblings whose lock
it can take: their writer is dead (kill -9, power loss), whichever container or pid namespace it ran in.
A live writer elsewhere keeps its lock, so its files are left alone even when its pid means nothing here.
Files and folders are flushed to disk before the rename that publishes them, and the rename after it.
"""

import contextlib
import ctypes
import errno
import functools
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from quantforge.core.errors import ServiceError
from quantforge.core.locks import exclusive

_OWNER = r"[A-Za-z0-9-]{1,40}-[0-9]+-[0-9a-f]{8}"  # host, pid, random: see _writing
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
# Filesystems that cannot exchange two names (NFS, SMB, some FUSE) answer one of these.
_CANNOT_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


@dataclass(frozen=True)
class _Writer:
    """One writer's temporary siblings of `final`."""

    final: Path
    owner: str

    def sibling(self, kind: str) -> Path:
        return self.final.with_name(f".{self.final.name}.{self.owner}.{kind}")

    @property
    def partial(self) -> Path:
        return self.sibling("partial")

    @property
    def old(self) -> Path:
        return self.sibling("old")

    @property
    def lock(self) -> Path:
        return self.sibling("lock")


@contextlib.contextmanager
def atomic_dir(final: Path, needs_bytes: int = 0, replace_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to `final` only if the block succeeds.

    An existing `final` is kept (another run finished the same work first) unless `replace_existing`:
    then the two are swapped by rename, so `final` holds the old or the new folder, complete, at every
    instant. `needs_bytes` is checked against the free space first, so a write that cannot fit fails
    before it starts; a write that still runs out of space (another process filled the disk) gets the
    same clear error, and its partial files are removed either way.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    require_free_space(final.parent, needs_bytes, f"write {final}")
    try:
        with _writing(final) as writer:
            writer.partial.mkdir()
            yield writer.partial
            _flush_tree(writer.partial)
            if not final.exists():
                os.rename(writer.partial, final)
            elif replace_existing:
                _swap(writer, final)
            _flush(final.parent)
    except Exception as error:
        # Libraries word a full disk their own way (OpenVINO: "basic_ios::clear: iostream error") and
        # remove what they could not finish, so judge by the space left once our partial files are gone.
        if _is_enospc(error) or shutil.disk_usage(final.parent).free < needs_bytes:
            raise ServiceError(f"disk full while writing {final} (nothing was kept)") from None
        raise


@contextlib.contextmanager
def scratch_dir(beside: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of `beside`, removed on exit (or by the next writer of
    `beside` if this process dies)."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    with _writing(beside) as writer:
        writer.partial.mkdir()
        yield writer.partial


def require_free_space(folder: Path, needs_bytes: int, what: str) -> None:
    """Refuse, before anything is written, an operation that cannot fit on `folder`'s disk."""
    free = shutil.disk_usage(folder).free
    if free < needs_bytes:
        raise ServiceError(
            f"not enough disk space to {what}: needs ~{needs_bytes / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free (nothing was written)"
        )


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling file path; rename it to `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    with _writing(final) as writer:
        writer.partial.touch()
        yield writer.partial
        _flush(writer.partial)
        os.replace(writer.partial, final)
        _flush(final.parent)


def write_json(path: Path, payload: object) -> None:
    """Write JSON atomically (temp file + rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def discard(path: Path) -> None:
    """Remove a folder by renaming it aside first: readers never see it half-deleted."""
    if not path.exists():
        return
    with _writing(path) as writer:
        os.rename(path, writer.old)  # removed with the writer's other siblings


def remove_stale(final: Path) -> None:
    """Remove the temporary siblings of `final` whose writer is dead; finish a swap it left halfway."""
    # Only names `_writing` makes: a `.NAME.backup.old` kept by hand beside `final` is not a leftover.
    sibling = re.compile(rf"\.{re.escape(final.name)}\.({_OWNER})\.(?:partial|old|lock)")
    owners = {match[1] for path in final.parent.iterdir() if (match := sibling.fullmatch(path.name))}
    for owner in sorted(owners):
        writer = _Writer(final, owner)
        with exclusive(writer.lock, wait=False) as writer_is_dead:
            if writer_is_dead:
                _settle(writer)


@contextlib.contextmanager
def _writing(final: Path) -> Iterator[_Writer]:
    """Hold a fresh writer identity for `final`; its siblings are removed on exit."""
    writer = _Writer(final, f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}")  # matches _OWNER
    with exclusive(writer.lock):  # before any sibling exists: a sibling always has a live or a free lock
        try:
            yield writer
        finally:
            _settle(writer)


def _settle(writer: _Writer) -> None:
    """Remove a writer's siblings. Both `partial` and `old` with no `final` mean it stopped between the
    two renames of a swap; `partial` was complete by then, so it is put in place first."""
    if writer.partial.exists() and writer.old.exists() and not writer.final.exists():
        os.rename(writer.partial, writer.final)
    for leftover in (writer.partial, writer.old):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink(missing_ok=True)


def _swap(writer: _Writer, final: Path) -> None:
    """Put the finished `partial` at `final`; the replaced folder ends in a sibling, removed on exit."""
    if _exchange(writer.partial, final):
        return  # one atomic step; `partial` now holds the old folder
    os.rename(final, writer.old)  # this filesystem cannot exchange: a crash here is undone by _settle
    os.rename(writer.partial, final)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two names atomically (Linux renameat2 RENAME_EXCHANGE); False where the filesystem cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)  # glibc < 2.28 and older musl lack it
    if renameat2 is None:
        return False
    names = (os.fsencode(first), os.fsencode(second))
    if renameat2(_AT_FDCWD, names[0], _AT_FDCWD, names[1], _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _CANNOT_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # Python 3.11's os has no renameat2


@functools.cache
def _host() -> str:
    """This host's (or container's) name as it may appear in a file name; for the humans reading it."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _flush_tree(folder: Path) -> None:
    """Flush every file and folder under `folder` to disk, so a power loss after the rename cannot leave
    renamed but empty files."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _flush(Path(root, name))
        _flush(Path(root))


def _flush(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _is_enospc(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        error = error.__cause__ or error.__context__
    return False


def link_files(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    """Hard-link the files of `source` (not its folders, not the names in `skip`) into `target`, created
    if missing; copied where a link cannot be made (another file system): no second copy of weights."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in skip:
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copy2(path, target / path.name)
