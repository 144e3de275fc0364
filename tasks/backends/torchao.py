"""The torchao backend: weight-only INT8/INT4 applied by transformers' TorchAoConfig in this environment,
saved so transformers loads it as is, measured on the PyTorch runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quantforge.core.atomic import atomic_dir
from quantforge.core.records import Metrics
from quantforge.tasks.backends import pytorch
from quantforge.tasks.backends.base import Backend, Baseline, Job, Made, write_manifest
from quantforge.tasks.fetch import parameter_count
from quantforge.tasks.resources import measure

if TYPE_CHECKING:
    from quantforge.tasks.recipes import Recipe


class TorchAoBackend(Backend):
    name = "torchao"
    runtime = pytorch.RUNTIME
    packages = ("torchao", "transformers", "torch")
    tool = "torchao"
    library_tags = ("transformers", "torchao")

    def recipe_problems(self, recipe: Recipe) -> list[str]:
        problems = []
        if recipe.bits not in (4, 8):
            problems.append(f"`bits` must be 4 or 8 with backend torchao, got {recipe.bits}")
        problems += pytorch.openvino_only_problems(recipe)
        if recipe.static:
            problems.append("`activations: int8` is not available with backend torchao (weight-only)")
        if recipe.bits == 8 and not recipe.sym:
            problems.append(
                "`sym` must be true with backend torchao and bits=8 (its INT8 weight-only is symmetric)"
            )
        return problems

    def make(self, job: Job, baseline: Baseline) -> Made:
        import torch
        from transformers import AutoModelForCausalLM, TorchAoConfig

        with atomic_dir(job.target, parameter_count(job.source.local_dir) * 2) as tmp:
            with measure() as usage:
                model = AutoModelForCausalLM.from_pretrained(
                    job.source.local_dir,
                    dtype=torch.float32,
                    quantization_config=TorchAoConfig(quant_type=to_torchao_config(job.recipe)),
                )
                model.save_pretrained(tmp)
            pytorch.copy_tokenizer(job.source.local_dir, tmp)
            return Made(manifest=write_manifest(job, tmp), usage=usage)

    def measure(self, job: Job, baseline: Baseline) -> Metrics:
        return pytorch.measure_pytorch_task(
            job.target, job.source.local_dir, job.evaluation, job.new_tokens, baseline.reference
        )

    def usage(self, repo_id: str) -> list[str]:
        return [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer  # needs torchao installed",
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            "```",
        ]


def to_torchao_config(recipe: Recipe) -> Any:
    """The torchao translation: weight-only INT8 per output channel, or INT4 by groups (or per channel).

    INT4 uses torchao's `IntxWeightOnlyConfig` (int4 values unpacked to one byte each) because torchao's
    packed CPU INT4 tensor cannot be written to safetensors, and transformers 5 writes nothing else.
    """
    import torch
    from torchao.quantization import (
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
        MappingType,
        PerAxis,
        PerGroup,
    )

    if recipe.bits == 8:
        return Int8WeightOnlyConfig()
    group = PerAxis(0) if recipe.group_size in (None, -1) else PerGroup(recipe.group_size)
    return IntxWeightOnlyConfig(
        weight_dtype=torch.int4,
        granularity=group,
        mapping_type=MappingType.SYMMETRIC if recipe.sym else MappingType.ASYMMETRIC,
    )


BACKEND = TorchAoBackend()
