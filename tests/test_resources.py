"""Peak memory counts a forked child's shared pages once, as the kernel does; the memory reserved for a
model counts the logits of its evaluation windows."""

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from quantforge.core.errors import QuantforgeError
from quantforge.tasks.resources import PeakSampler, measure, memory_slots, reserved_memory, tree_memory

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
    assert usage.peak_pss_mb * MIB < before + 1.3 * weights.nbytes + 64 * MIB


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


def fake_model(folder: Path, parameters: int, vocab_size: int) -> Path:
    """A model folder as the memory check reads it: config.json and a safetensors file of `parameters`."""
    from safetensors.numpy import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"vocab_size": vocab_size}))
    save_file({"weight": np.zeros(parameters, dtype=np.float16)}, folder / "model.safetensors")
    return folder


def test_the_logits_of_a_window_count_in_the_memory_reserved(prefect_harness, tmp_path, monkeypatch):
    """Within this host's limit the slots are held while the block runs; a window whose logits
    (8192 tokens x 152 k vocabulary: 14 GiB) take more than the limit is refused in one line first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    monkeypatch.setenv("QUANTFORGE_MEMORY_LIMIT", "memory-test-logits")
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="memory-test-logits", limit=8)
        )
    model = fake_model(tmp_path / "qwen-like", 1000, 151_936)
    assert memory_slots(1000, 512, 151_936) == 3  # 0.9 GiB of logits, rounded up, and the libraries
    with reserved_memory(model, 512), get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("memory-test-logits").active_slots == 3
    with pytest.raises(QuantforgeError) as refused, reserved_memory(model, 8192):
        pytest.fail("the block ran")
    assert str(refused.value) == (
        "`window`: qwen-like needs 16 GiB to export, quantize and evaluate on windows of 8192 tokens, "
        "more than this host's memory limit 'memory-test-logits' (8 GiB)"
    )
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("memory-test-logits").active_slots == 0
