"""Wall time and peak memory of a step, sampled over the whole process tree."""

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil


@dataclass
class StepUsage:
    """What one step cost."""

    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # the name MLflow metrics use; the value is `tree_memory`


def tree_memory(process: psutil.Process) -> int:
    """Bytes of RAM the process and its descendants use: the sum of their PSS.

    Not the sum of RSS: a child forked to exec a tool (many happen during export) shows its parent's
    pages as its own RSS until it execs, and summing RSS counted them twice (3.4 GB for 1.75 GB used).
    PSS splits every shared page between the processes that map it.
    """
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:  # the process has ended
        return 0
    total = 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            total += member.memory_full_info().pss
    return total


class PeakSampler:
    """The peak of `tree_memory(process)` while the `with` block runs, sampled in a thread.

    Reading a process's PSS walks all its mappings (`smaps_rollup`: 78 ms for a 1.3 GiB process here,
    against 0.03 ms for its RSS): sampled every 50 ms, it kept the sampler thread busy most of the time
    on a two-core host, beside the work it measures. So between samples the sampler waits `interval` or
    nine times the last sample's own cost, whichever is longer: at most a tenth of one core.
    """

    def __init__(self, process: psutil.Process, interval: float = 0.05) -> None:
        self.process, self.interval = process, interval
        self.peak = 0
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _take(self) -> float:
        started = time.perf_counter()
        self.peak = max(self.peak, tree_memory(self.process))
        return time.perf_counter() - started

    def _sample(self) -> None:
        cost = 0.0
        while not self._done.wait(max(self.interval, 9 * cost)):
            cost = self._take()

    def __enter__(self) -> "PeakSampler":
        self._take()
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self.thread.join()
        self._take()


@contextlib.contextmanager
def measure(interval: float = 0.05) -> Iterator[StepUsage]:
    """Wall time and peak `tree_memory` of this process tree while the block runs."""
    usage = StepUsage()
    start = time.perf_counter()
    sampler = PeakSampler(psutil.Process(), interval)
    try:
        with sampler:
            yield usage
    finally:
        usage.seconds = time.perf_counter() - start
        usage.peak_rss_mb = sampler.peak / 2**20


# Peak memory of export + compression grows with the parameter count: ~8 bytes per parameter (the
# fp32 weights loaded once, the fp16 IR, nncf's working copies), plus ~2 GiB of libraries. The Llama-3
# reference article needed ~60 GB for 8 B parameters (8 B x 8 bytes = 60 GiB).
BYTES_PER_PARAMETER = 8
PROCESS_OVERHEAD_GIB = 2


def memory_slots(parameters: int) -> int:
    """GiB of RAM to reserve for exporting and quantizing a model of `parameters` weights."""
    return math.ceil(parameters * BYTES_PER_PARAMETER / 2**30) + PROCESS_OVERHEAD_GIB


def memory_limit_name() -> str:
    """The Prefect global concurrency limit of this host's RAM, in GiB slots."""
    return os.environ.get("QUANTFORGE_MEMORY_LIMIT") or f"memory-{socket.gethostname()}"


@contextlib.contextmanager
def reserved_memory(parameters: int) -> Iterator[None]:
    """Hold this host's memory slots while the block runs (no limit created on the server: no wait)."""
    from prefect.concurrency.sync import concurrency

    with concurrency(memory_limit_name(), occupy=memory_slots(parameters), strict=False):
        yield
