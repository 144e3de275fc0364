"""The PyTorch-side backends: torchao in this environment, IPEX through its worker in `.venv-ipex`.

Both are measured with tasks/torch_runtime.py on the evaluation windows the flow hands them, so their
perplexities compare with each other and with the PyTorch fp32 reference measured here.
"""

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.atomic import atomic_dir, discard, write_json
from quantforge.core.errors import QuantforgeError
from quantforge.core.manifest import Manifest
from quantforge.core.paths import data_dir
from quantforge.tasks import torch_runtime
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.evaluate import Metrics, Perplexity, Speed, WeightShares
from quantforge.tasks.fetch import SourceModel, parameter_count
from quantforge.tasks.ipex_env import WORKER, ipex_python
from quantforge.tasks.quantize import write_manifest
from quantforge.tasks.recipes import Recipe, to_ipex_spec, to_torchao_config
from quantforge.tasks.resources import StepUsage, measure
from quantforge.tasks.toolchain import toolchain_hash

# Same weights, same windows, two environments: beyond this the IPEX figures are not comparable.
MAX_BASELINE_DISAGREEMENT_PCT = 0.5
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def speed_prompt_ids(model_dir: Path) -> np.ndarray:
    """The speed prompt's token ids, made here once so both environments decode from the same ids."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dir)(torch_runtime.SPEED_PROMPT)["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def _cached_metrics(key: str, compute) -> Metrics:
    cache = data_dir() / "metrics" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
    if cache.exists():
        return Metrics.model_validate_json(cache.read_text())
    metrics = compute()
    write_json(cache, metrics.model_dump(mode="json"))
    return metrics


def measure_pytorch(model_dir: Path, source_dir: Path, windows: TokenSet, new_tokens: int | None) -> Metrics:
    """Perplexity, decode speed, size and weight shares of a transformers folder, as transformers loads it."""
    key = f"pytorch|{model_dir.resolve()}|{windows.content_hash}|{windows.windows.shape}|{new_tokens}"

    def compute() -> Metrics:
        import time

        import torch
        from transformers import AutoModelForCausalLM

        started = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        speed = None
        if new_tokens:
            speed = Speed(**torch_runtime.decode_speed(model, speed_prompt_ids(source_dir), new_tokens))
        metrics = Metrics(
            perplexity=Perplexity(**torch_runtime.perplexity(model, windows.windows)),
            speed=speed,
            size_mb=torch_runtime.folder_size_mb(model_dir),
            weights=WeightShares(**torch_runtime.weight_shares(model)),
        )
        metrics.seconds = time.perf_counter() - started
        return metrics

    return _cached_metrics(key, compute)


def make_torchao_variant(source: SourceModel, recipe: Recipe, target: Path) -> tuple[Manifest, StepUsage]:
    """Quantize with torchao through transformers' TorchAoConfig; saved so transformers loads it as is."""
    import torch
    from transformers import AutoModelForCausalLM, TorchAoConfig

    discard(target)
    with atomic_dir(target, parameter_count(source.local_dir) * 2) as tmp:
        with measure() as usage:
            model = AutoModelForCausalLM.from_pretrained(
                source.local_dir,
                dtype=torch.float32,
                quantization_config=TorchAoConfig(quant_type=to_torchao_config(recipe)),
            )
            model.save_pretrained(tmp)
        _copy_tokenizer(source.local_dir, tmp)
        return write_manifest(source, recipe, None, tmp), usage


def _copy_tokenizer(source_dir: Path, out: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source_dir / name).exists() and not (out / name).exists():
            shutil.copy2(source_dir / name, out / name)


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
    windows = f"{evaluation.content_hash}|{evaluation.windows.shape}"
    key = f"ipex-baseline|{source.sha}|{windows}|{toolchain_hash('ipex')}"

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

    return _cached_metrics(key, compute).perplexity


def check_baseline_agreement(ipex_ppl: float, pytorch_ppl: float) -> None:
    """Fail loudly when the IPEX environment scores the same fp32 weights differently."""
    gap = abs(ipex_ppl / pytorch_ppl - 1) * 100
    if not gap <= MAX_BASELINE_DISAGREEMENT_PCT:
        raise QuantforgeError(
            f"the fp32 baseline scores {ipex_ppl:.3f} in the IPEX environment and {pytorch_ppl:.3f} here "
            f"({gap:.2f} % apart, limit {MAX_BASELINE_DISAGREEMENT_PCT} %): IPEX figures would not be "
            "comparable (check config.json: transformers 4.51 reads `rope_theta` only at top level)"
        )


def make_ipex_variant(
    source: SourceModel,
    recipe: Recipe,
    calibration: TokenSet | None,
    evaluation: TokenSet,
    new_tokens: int | None,
    target: Path,
) -> tuple[Manifest, Metrics, StepUsage]:
    """Quantize, save and measure in the IPEX worker; the folder is renamed into place only when complete."""
    if recipe.data_aware and calibration is None:
        raise QuantforgeError(f"recipe {recipe.name!r} is data-aware and needs `calibration` data")
    discard(target)
    with (
        atomic_dir(target, parameter_count(source.local_dir) * 4) as tmp,
        tempfile.TemporaryDirectory() as scratch,
    ):
        spec = {
            "action": "variant",
            "model_dir": str(source.local_dir),
            "evaluation": _windows_file(evaluation, Path(scratch)),
            "calibration": _windows_file(calibration, Path(scratch)) if recipe.data_aware else None,
            "output_dir": str(tmp),
            "ipex": to_ipex_spec(recipe),
            "prompt_ids": speed_prompt_ids(source.local_dir).tolist(),
            "new_tokens": new_tokens or 1,
        }
        result = run_ipex_worker(spec)
        manifest = write_manifest(source, recipe, calibration, tmp)
    metrics = Metrics(
        perplexity=Perplexity(**result["perplexity"]),
        speed=Speed(**result["speed"]) if new_tokens else None,
        size_mb=torch_runtime.folder_size_mb(target),
        weights=WeightShares(**result["weights"]),
    )
    usage = StepUsage(seconds=result["quantize_seconds"], peak_pss_mb=result["quantize_peak_rss_mb"])
    return manifest, metrics, usage


measure_pytorch_task = task(measure_pytorch, name="evaluate", cache_policy=NO_CACHE)
make_torchao_variant_task = task(make_torchao_variant, name="quantize", cache_policy=NO_CACHE)
make_ipex_variant_task = task(make_ipex_variant, name="quantize", cache_policy=NO_CACHE)
ipex_baseline_task = task(ipex_baseline, name="ipex-baseline", cache_policy=NO_CACHE)
