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
    peak_rss_mb: float = 0.0  # the name stored manifests and MLflow metrics use; the value is `tree_memory`


def tree_memory(process: psutil.Process) -> int:
    """Bytes of RAM the process and its descendants use: the sum of their PSS.

    Not the sum of RSS: a child forked to exec a tool (many happen during export) shows its parent's
    pages as its own RSS until it execs, and summing RSS counted them twice (3.4 GB for 1.75 GB used).
    PSS splits every shared page between the processes that map it.
    """
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_full_info().pss
    return total


@contextlib.contextmanager
def measure(interval: float = 0.05) -> Iterator[StepUsage]:
    """Sample `tree_memory` every `interval` seconds while the block runs; fill in the usage when it ends."""
    usage = StepUsage()
    process = psutil.Process()
    peak = [tree_memory(process)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            peak[0] = max(peak[0], tree_memory(process))

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    try:
        yield usage
    finally:
        done.set()
        sampler.join()
        usage.seconds = time.perf_counter() - start
        usage.peak_rss_mb = max(peak[0], tree_memory(process)) / 2**20


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
