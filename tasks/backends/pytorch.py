"""The PyTorch runtime, shared by the torchao and IPEX backends: the fp32 source measured with
transformers, on the same windows and under the same protocol as OpenVINO (`tasks/torch_runtime.py`)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.records import Divergence, Metrics, Perplexity, Speed, WeightShares
from quantforge.tasks import torch_runtime
from quantforge.tasks.backends.base import Baseline, Runtime
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.fetch import SourceModel
from quantforge.tasks.host import host_profile
from quantforge.tasks.metrics_cache import cached_baseline, cached_metrics, windows_key

if TYPE_CHECKING:
    from quantforge.tasks.recipes import Recipe
    from quantforge.tasks.request import QuantizeRequest

# Options only nncf implements; the PyTorch-side backends refuse them instead of ignoring them.
OPENVINO_ONLY_FLAGS = ("awq", "scale_estimation", "gptq", "lora_correction")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


class PyTorchRuntime(Runtime):
    name = "pytorch"
    label = "original (PyTorch fp32)"

    def baseline(self, source: SourceModel, evaluation: TokenSet, request: QuantizeRequest) -> Baseline:
        """The fp32 source in PyTorch: what torchao and IPEX variants are judged against."""
        metrics, reference = measure_pytorch_baseline_task(source.local_dir, evaluation, request.new_tokens)
        return Baseline(runtime=self.name, label=self.label, metrics=metrics, reference=reference)

    def rescored(self, baseline: Baseline, source: SourceModel, evaluation: TokenSet) -> Baseline:
        metrics, reference = measure_pytorch_baseline_task(source.local_dir, evaluation, None)
        metrics = metrics.model_copy(update={"speed": baseline.metrics.speed})
        return baseline.model_copy(update={"metrics": metrics, "reference": reference})


RUNTIME = PyTorchRuntime()


def openvino_only_problems(recipe: Recipe) -> list[str]:
    """What IPEX and torchao cannot do, named by field rather than silently ignored."""
    backend = recipe.backend
    problems = [
        f"`{flag}` is an OpenVINO (nncf) option, not available with backend {backend}"
        for flag in OPENVINO_ONLY_FLAGS
        if getattr(recipe, flag)
    ]
    if recipe.ratio < 1.0:
        problems.append(f"`ratio` below 1 is an OpenVINO (nncf) option, not available with backend {backend}")
    for field in ("backup_precision", "overflow_fix", "sensitivity_metric"):
        if getattr(recipe, field) is not None:
            problems.append(f"`{field}` is an OpenVINO (nncf) option, not available with backend {backend}")
    return problems


def speed_prompt_ids(model_dir: Path) -> np.ndarray:
    """The speed prompt's token ids, made here once so both environments decode from the same ids."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dir)(torch_runtime.SPEED_PROMPT)["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def measure_pytorch(
    model_dir: Path, source_dir: Path, windows: TokenSet, new_tokens: int | None, against: Path | None
) -> Metrics:
    """Perplexity, decode speed, size and weight shares of a transformers folder, as transformers loads it,
    and its divergence from the baseline whose distributions are kept in `against` (when given)."""
    # `f32`: what it scores at; in the key since metrics carry a host profile (older entries have none)
    key = f"pytorch|{model_dir.resolve()}|{windows_key(windows)}|{new_tokens}|against {against}|f32"
    return cached_metrics(key, lambda: _measure(model_dir, source_dir, windows, new_tokens, against=against))


def measure_pytorch_baseline(
    source_dir: Path, windows: TokenSet, new_tokens: int | None
) -> tuple[Metrics, Path]:
    """The fp32 source's metrics, and the folder keeping its next-token distributions."""
    key = (
        f"pytorch|{source_dir.resolve()}|{windows_key(windows)}|{new_tokens}|{torch_runtime.COMPACT_FORM}|f32"
    )
    return cached_baseline(key, lambda keep: _measure(source_dir, source_dir, windows, new_tokens, keep=keep))


def _measure(
    model_dir: Path,
    source_dir: Path,
    windows: TokenSet,
    new_tokens: int | None,
    against: Path | None = None,
    keep: Path | None = None,
) -> Metrics:
    import torch
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    speed = None
    if new_tokens:
        speed = Speed(**torch_runtime.decode_speed(model, speed_prompt_ids(source_dir), new_tokens))
    scored = torch_runtime.score_windows(
        lambda window: torch_runtime.model_logits(model, window), windows.windows, against, keep
    )
    divergence = scored["divergence"]
    return Metrics(
        perplexity=Perplexity(**scored["perplexity"]),
        divergence=Divergence(**divergence) if divergence else None,
        speed=speed,
        size_mb=torch_runtime.folder_size_mb(model_dir),
        weights=WeightShares(**torch_runtime.weight_shares(model)),
        seconds=time.perf_counter() - started,
        host=host_profile("f32", openvino=False),  # loaded as float32: torchao computes in it too
    )


def copy_tokenizer(source_dir: Path, out: Path) -> None:
    """The source's tokenizer files beside a saved variant, so transformers loads it alone."""
    for name in TOKENIZER_FILES:
        if (source_dir / name).exists() and not (out / name).exists():
            shutil.copy2(source_dir / name, out / name)


measure_pytorch_task = task(measure_pytorch, name="pytorch-measure", cache_policy=NO_CACHE)
measure_pytorch_baseline_task = task(measure_pytorch_baseline, name="pytorch-measure", cache_policy=NO_CACHE)
