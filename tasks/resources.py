"""Wall time and peak memory of a step, sampled over the whole process tree."""

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from quantforge.core.errors import QuantforgeError
from quantforge.core.records import StepUsage


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
        usage.peak_pss_mb = sampler.peak / 2**20


# Peak memory of export + compression grows with the parameter count: ~8 bytes per parameter (the
# fp32 weights loaded once, the fp16 IR, nncf's working copies), plus ~2 GiB of libraries. The Llama-3
# reference article needed ~60 GB for 8 B parameters (8 B x 8 bytes = 60 GiB).
BYTES_PER_PARAMETER = 8
PROCESS_OVERHEAD_GIB = 2
# Evaluation holds the compiled model (at most the fp32 IR's 4 bytes per parameter, or PyTorch's fp32
# source) and the logits of one window, window x vocabulary float32, which perplexity holds twice
# (OpenVINO's output tensor and torch's log-softmax). Measured above the compiled model (tiny Llama, 49 k
# vocabulary, windows of 512 to 4096 tokens): 2.1 times the logits; 3 leaves room for the activations
# that grow with the window too. 8192 tokens over Qwen's 152 k vocabulary: 14 GiB.
EVALUATION_BYTES_PER_PARAMETER = 4
LOGITS_COPIES = 3


def memory_slots(parameters: int, window: int, vocab_size: int) -> int:
    """GiB of RAM to reserve for exporting, quantizing and evaluating a model of `parameters` weights
    whose perplexity is scored on windows of `window` tokens over `vocab_size` logits (the steps run one
    after the other: the larger need counts)."""
    quantize = parameters * BYTES_PER_PARAMETER
    evaluate = parameters * EVALUATION_BYTES_PER_PARAMETER + LOGITS_COPIES * window * vocab_size * 4
    return math.ceil(max(quantize, evaluate) / 2**30) + PROCESS_OVERHEAD_GIB


def memory_limit_name() -> str:
    """The Prefect global concurrency limit of this host's RAM, in GiB slots."""
    return os.environ.get("QUANTFORGE_MEMORY_LIMIT") or f"memory-{socket.gethostname()}"


@contextlib.contextmanager
def reserved_memory(model_dir: Path, window: int) -> Iterator[None]:
    """Hold this host's memory slots for the model while the block runs (no limit on the server: no
    wait); a need larger than the whole limit is refused in one line, before the block starts."""
    from prefect.concurrency.sync import concurrency

    from quantforge.tasks.fetch import parameter_count, read_json_object  # not at import: slo's child

    vocab_size = read_json_object(model_dir / "config.json", model_dir.name).get("vocab_size")
    slots = memory_slots(parameter_count(model_dir), window, vocab_size if isinstance(vocab_size, int) else 0)
    limit = _memory_limit()
    if limit is not None and slots > limit:
        raise QuantforgeError(
            f"`window`: {model_dir.name} needs {slots} GiB to export, quantize and evaluate on windows of "
            f"{window} tokens, more than this host's memory limit {memory_limit_name()!r} ({limit} GiB)"
        )
    with concurrency(memory_limit_name(), occupy=slots, strict=False):
        yield


def _memory_limit() -> int | None:
    """Slots of this host's active memory limit, None when the server has none."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(memory_limit_name())
        except ObjectNotFound:
            return None
    return limit.limit if limit.active else None
