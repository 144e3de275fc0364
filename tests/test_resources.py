"""Peak memory counts a forked child's shared pages once, as the kernel does."""

import multiprocessing
import time

import numpy as np
import psutil

from tasks.resources import PeakSampler, measure, tree_memory

MIB = 2**20


def _wait(ready, release) -> None:
    ready.set()
    release.wait(60)


def test_a_forked_child_does_not_double_the_memory_of_its_parent():
    process = psutil.Process()
    before = tree_memory(process)
    weights = np.ones(256 * MIB // 8)  # 256 MiB, touched
    fork = multiprocessing.get_context("fork")
    ready, release = fork.Event(), fork.Event()
    with measure(interval=0.01) as usage:
        child = fork.Process(target=_wait, args=(ready, release))
        child.start()
        ready.wait(30)
        rss_sum = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
        in_use = tree_memory(process)
        release.set()
        child.join()
    assert rss_sum - before > 1.8 * weights.nbytes  # RSS sees the shared 256 MiB in both processes
    assert in_use - before < 1.3 * weights.nbytes  # PSS splits them: counted once
    assert usage.peak_rss_mb * MIB < before + 1.3 * weights.nbytes + 64 * MIB


def test_sampling_takes_at_most_a_small_share_of_a_core():
    """Reading PSS is slow (it walks every mapping): even asked to sample without pause, the sampler
    spaces its samples so that it uses about a tenth of one core, not all of it."""
    weights = np.ones(512 * MIB // 8)  # many touched pages make each sample cost more
    with PeakSampler(psutil.Process(), interval=0.0) as sampler:
        time.sleep(2.0)
        (thread,) = [t for t in psutil.Process().threads() if t.id == sampler.thread.native_id]
    busy = (thread.user_time + thread.system_time) / 2.0
    assert busy < 0.25, f"the sampler used {busy:.0%} of a core"
    assert sampler.peak > weights.nbytes
