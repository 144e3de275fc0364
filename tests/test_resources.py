"""Peak memory counts a forked child's shared pages once, as the kernel does."""

import multiprocessing

import numpy as np
import psutil

from tasks.resources import measure, tree_memory

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
