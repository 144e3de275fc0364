"""Wall time and peak resident memory of a step, sampled over the whole process tree."""

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil


@dataclass
class StepUsage:
    """What one step cost."""

    seconds: float = 0.0
    peak_rss_mb: float = 0.0


def _tree_rss(process: psutil.Process) -> int:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


@contextlib.contextmanager
def measure(interval: float = 0.05) -> Iterator[StepUsage]:
    """Sample RSS every `interval` seconds while the block runs; fill in the usage when it ends."""
    usage = StepUsage()
    process = psutil.Process()
    peak = [_tree_rss(process)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            peak[0] = max(peak[0], _tree_rss(process))

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    try:
        yield usage
    finally:
        done.set()
        sampler.join()
        usage.seconds = time.perf_counter() - start
        usage.peak_rss_mb = max(peak[0], _tree_rss(process)) / 2**20
