"""Pages of a read-only memory-mapped file handed back while a step reads through it once.

OpenVINO maps an IR's weights file (`read_model`, read-only, shared). Compressing reads every weight
once, and each page read stays mapped, so the process holds the whole source IR until the model is
freed: 15 GiB for an 8 B model, beside the compressed copy it builds. `madvise(MADV_DONTNEED)` on a
read-only shared mapping only unmaps its pages (they stay in the page cache; a later read maps them
again, unchanged). The Python mmap module cannot do this to a mapping it did not make, hence ctypes
(docs/decisions.md, "Compression hands back the pages it has read").
"""

import contextlib
import ctypes
import threading
from collections.abc import Iterator

MADV_DONTNEED = 4


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def read_only_mappings(file_name: str) -> list[tuple[int, int]]:
    """Address ranges of this process's read-only mappings of files named `file_name`."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5].endswith("/" + file_name) and "w" not in fields[1]:
                low, high = (int(bound, 16) for bound in fields[0].split("-"))
                ranges.append((low, high))
    return ranges


@contextlib.contextmanager
def pages_handed_back(file_name: str, interval: float = 0.5) -> Iterator[None]:
    """While the block runs, every `interval` seconds unmap the resident pages of this process's
    read-only mappings of `file_name`."""
    libc = _libc()
    done = threading.Event()

    def hand_back() -> None:
        while not done.wait(interval):
            for low, high in read_only_mappings(file_name):
                libc.madvise(low, high - low, MADV_DONTNEED)

    thread = threading.Thread(target=hand_back, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
