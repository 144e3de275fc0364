"""The IPEX backend: bf16, SmoothQuant INT8 and weight-only INT8/INT4 made and measured by
`workers/ipex_worker.py` in IPEX's own environment (`.venv-ipex`: torch 2.8, transformers 4.51), judged
against the PyTorch runtime's fp32 baseline once the worker's own fp32 score agrees with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.atomic import atomic_dir
from quantforge.core.errors import QuantforgeError
from quantforge.core.records import Metrics, Perplexity, Speed, StepUsage, WeightShares
from quantforge.tasks import torch_runtime
from quantforge.tasks.backends import pytorch
from quantforge.tasks.backends.base import Backend, Baseline, Job, Made, write_manifest
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.fetch import SourceModel, parameter_count
from quantforge.tasks.host import host_profile
from quantforge.tasks.metrics_cache import cached_metrics, windows_key
from quantforge.tasks.toolchain import installed_versions, versions_hash

if TYPE_CHECKING:
    from quantforge.tasks.recipes import Recipe

CODE_ROOT = Path(__file__).resolve().parents[2]  # the repository, or the installed package
CREATE_COMMAND = "make ipex-env"
WORKER = CODE_ROOT / "workers" / "ipex_worker.py"
# Same weights, same windows, two environments: beyond this the IPEX figures are not comparable.
MAX_BASELINE_DISAGREEMENT_PCT = 0.5
DEFAULT_SMOOTH_QUANT_ALPHA = 0.5  # SmoothQuant's paper default, and IPEX's


class IpexBackend(Backend):
    name = "ipex"
    runtime = pytorch.RUNTIME
    packages = ("intel-extension-for-pytorch", "transformers", "torch")
    tool = "Intel Extension for PyTorch"
    library_tags = ("pytorch", "intel-extension-for-pytorch")
    reuses_cache = False  # the worker measures what it makes, in its own environment

    def check_available(self) -> None:
        ipex_python()

    def recipe_problems(self, recipe: Recipe) -> list[str]:
        problems = []
        if recipe.bits not in (4, 8, 16):
            problems.append(f"`bits` must be 4 or 8 or 16 with backend ipex, got {recipe.bits}")
        problems += pytorch.openvino_only_problems(recipe)
        if recipe.bits == 16 and (recipe.static or recipe.group_size is not None or recipe.sym):
            problems.append("bits=16 (bfloat16) takes no `activations`, `group_size` or `sym`")
        return problems

    def toolchain(self) -> dict[str, str]:
        """Read from the IPEX environment, not this one."""
        return installed_versions(self.packages, ipex_site_packages())

    def check_baseline(self, source: SourceModel, evaluation: TokenSet, baseline: Baseline) -> float:
        ppl = ipex_baseline_task(source, evaluation).ppl
        check_baseline_agreement(ppl, baseline.metrics.perplexity.ppl)
        return ppl

    def make(self, job: Job, baseline: Baseline) -> Made:
        """Quantize, save and measure in the worker; the folder is renamed into place only when complete."""
        if job.recipe.data_aware and job.calibration is None:
            raise QuantforgeError(f"recipe {job.recipe.name!r} is data-aware and needs `calibration` data")
        with (
            atomic_dir(job.target, parameter_count(job.source.local_dir) * 4) as tmp,
            tempfile.TemporaryDirectory() as scratch,
        ):
            spec = {
                "action": "variant",
                "model_dir": str(job.source.local_dir),
                "evaluation": _windows_file(job.evaluation, Path(scratch)),
                "calibration": _windows_file(job.calibration, Path(scratch))
                if job.recipe.data_aware
                else None,
                "output_dir": str(tmp),
                "ipex": to_ipex_spec(job.recipe),
                "prompt_ids": pytorch.speed_prompt_ids(job.source.local_dir).tolist(),
                "new_tokens": job.new_tokens or 1,
            }
            result = run_ipex_worker(spec)
            manifest = write_manifest(job, tmp)
        metrics = Metrics(
            perplexity=Perplexity(**result["perplexity"]),
            speed=Speed(**result["speed"]) if job.new_tokens else None,
            size_mb=torch_runtime.folder_size_mb(job.target),
            weights=WeightShares(**result["weights"]),
            # the worker runs on this host; its precision is the recipe's (bf16, or int8 with fp32 compute)
            host=host_profile(None, openvino=False),
        )
        usage = StepUsage(seconds=result["quantize_seconds"], peak_pss_mb=result["quantize_peak_rss_mb"])
        return Made(manifest=manifest, usage=usage, metrics=metrics)

    def measure(self, job: Job, baseline: Baseline) -> Metrics:
        raise QuantforgeError("IPEX variants are measured by the worker that makes them")

    def usage(self, repo_id: str) -> list[str]:
        return [
            "```python",
            "# in an environment with torch 2.8, intel-extension-for-pytorch 2.8 and transformers 4.51",
            "from pathlib import Path",
            "from huggingface_hub import snapshot_download",
            "from workers.ipex_worker import load_ipex_variant  # quantforge's loader (no re-quantization)",
            "from transformers import AutoTokenizer",
            f'folder = snapshot_download("{repo_id}")',
            "model, tokenizer = load_ipex_variant(Path(folder)), AutoTokenizer.from_pretrained(folder)",
            'inputs = tokenizer("What is AMX?", return_tensors="pt")',
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))",
            "```",
        ]


def ipex_env_dir() -> Path:
    """`QUANTFORGE_IPEX_ENV`, else `.venv-ipex/` beside the code."""
    return Path(os.environ.get("QUANTFORGE_IPEX_ENV") or CODE_ROOT / ".venv-ipex")


def ipex_python() -> Path:
    """The IPEX environment's interpreter; raise naming the command that creates it when it is missing."""
    python = ipex_env_dir() / "bin" / "python"
    if not (ipex_env_dir() / ".installed").exists() or not python.exists():
        raise QuantforgeError(
            f"backend ipex needs its own environment {ipex_env_dir()} (torch 2.8 + IPEX 2.8), which is "
            f"missing: create it with `{CREATE_COMMAND}` (about 3-5 min, 7 GB)"
        )
    return python


def ipex_site_packages() -> Path:
    """The IPEX environment's site-packages (same Python minor version as this one)."""
    ipex_python()
    return (
        ipex_env_dir() / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )


def to_ipex_spec(recipe: Recipe) -> dict[str, Any]:
    """The IPEX translation, as JSON for the worker: names of IPEX's own enums, no IPEX import here."""
    if recipe.bits == 16:
        return {"mode": "bf16"}
    if recipe.static:
        alpha = recipe.smooth_quant_alpha
        return {"mode": "smoothquant", "alpha": DEFAULT_SMOOTH_QUANT_ALPHA if alpha is None else alpha}
    return {
        "mode": "woq",
        "weight_dtype": f"INT{recipe.bits}",
        "group_size": -1 if recipe.group_size is None else recipe.group_size,
        "weight_qscheme": "SYMMETRIC" if recipe.sym else "ASYMMETRIC",
        # Dequantize to bf16 and run AMX bf16 GEMMs: the fast path on this CPU, and no activation
        # quantization (lowp INT8 would quantize activations too, which weight-only is meant to avoid).
        "lowp_mode": "BF16",
    }


def run_ipex_worker(spec: dict) -> dict:
    """One call of workers/ipex_worker.py in the IPEX environment; its last stderr line on failure."""
    python = ipex_python()
    with tempfile.TemporaryDirectory(prefix="quantforge-ipex-") as scratch:
        spec_path, result_path = Path(scratch) / "spec.json", Path(scratch) / "result.json"
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run(
            [str(python), str(WORKER), str(spec_path), str(result_path)], capture_output=True, text=True
        )
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise QuantforgeError(
                f"IPEX worker failed ({spec['action']}): {lines[-1] if lines else done.returncode}"
            )
        return json.loads(result_path.read_text())


def _windows_file(windows: TokenSet, folder: Path) -> str:
    path = folder / f"{windows.role}.npy"
    np.save(path, windows.windows)
    return str(path)


def ipex_baseline(source: SourceModel, evaluation: TokenSet) -> Perplexity:
    """The fp32 source scored in the IPEX environment (transformers 4.51), cached per source and windows."""
    toolchain = versions_hash(BACKEND.toolchain())

    def compute() -> Metrics:
        with tempfile.TemporaryDirectory(prefix="quantforge-ipex-") as scratch:
            spec = {
                "action": "baseline",
                "model_dir": str(source.local_dir),
                "evaluation": _windows_file(evaluation, Path(scratch)),
            }
            result = run_ipex_worker(spec)
        return Metrics(
            perplexity=Perplexity(**result["perplexity"]),
            speed=None,
            size_mb=0.0,
            weights=WeightShares(int4=0.0, int8=0.0, float=1.0),
        )

    return cached_metrics(
        f"ipex-baseline|{source.sha}|{windows_key(evaluation)}|{toolchain}", compute
    ).perplexity


def check_baseline_agreement(ipex_ppl: float, pytorch_ppl: float) -> None:
    """Fail loudly when the IPEX environment scores the same fp32 weights differently."""
    gap = abs(ipex_ppl / pytorch_ppl - 1) * 100
    if not gap <= MAX_BASELINE_DISAGREEMENT_PCT:
        raise QuantforgeError(
            f"the fp32 baseline scores {ipex_ppl:.3f} in the IPEX environment and {pytorch_ppl:.3f} here "
            f"({gap:.2f} % apart, limit {MAX_BASELINE_DISAGREEMENT_PCT} %): IPEX figures would not be "
            "comparable (check config.json: transformers 4.51 reads `rope_theta` only at top level)"
        )


ipex_baseline_task = task(ipex_baseline, name="ipex-baseline", cache_policy=NO_CACHE)
BACKEND = IpexBackend()
