"""Measuring an OpenVINO model folder: perplexity on fixed token windows, weight precision shares, size,
and decode speed through openvino_genai. The PyTorch side is `torch_runtime.py`, under the same protocol."""

import math
import time
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from rich.progress import Progress

from quantforge.core.records import Metrics, Perplexity, Speed, WeightShares
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.export import IR_XML
from quantforge.tasks.metrics_cache import cached_metrics, windows_key
from quantforge.tasks.torch_runtime import SPEED_PROMPT, folder_size_mb

# Perplexity runs at OpenVINO's default inference precision (bf16 on AMX CPUs): what serving gets, 3.4x
# faster than an f32 hint here, and within 0.1 % of PyTorch fp32 on the bundled model (docs/decisions.md).


def window_nll(logits: np.ndarray, window: np.ndarray) -> float:
    """Summed negative log-likelihood of window[1:] given logits[:-1] (torch's fused log-softmax)."""
    import torch

    predicted = torch.from_numpy(np.ascontiguousarray(logits[:-1], dtype=np.float32))
    return float(torch.nn.functional.cross_entropy(predicted, torch.from_numpy(window[1:]), reduction="sum"))


def perplexity(model_dir: Path, windows: TokenSet) -> Perplexity:
    """Score every window in one forward pass each (fresh state); token t is predicted from tokens < t."""
    import openvino as ov

    compiled = ov.Core().compile_model(model_dir / IR_XML, "CPU")
    request = compiled.create_infer_request()
    input_names = {port.get_any_name() for port in compiled.inputs}
    data = windows.windows
    positions = np.arange(data.shape[1], dtype=np.int64)[None]
    total_nll = 0.0
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"perplexity {model_dir.name}", total=len(data))
        for window in data:
            request.reset_state()
            inputs = {
                "input_ids": window[None],
                "attention_mask": np.ones_like(window[None]),
                "position_ids": positions,
                "beam_idx": np.zeros(1, dtype=np.int32),
            }
            request.infer({k: v for k, v in inputs.items() if k in input_names})
            total_nll += window_nll(request.get_tensor("logits").data[0], window)
            progress.advance(bar)
    scored = data.shape[0] * (data.shape[1] - 1)
    mean = total_nll / scored
    ppl = math.nan if math.isnan(mean) else math.exp(min(mean, 709.0))  # exp(709.8) overflows a float
    return Perplexity(ppl=ppl, mean_nll=mean, tokens_scored=scored, windows=len(data))


def weight_shares(model_dir: Path) -> WeightShares:
    """Count weight elements by storage type. Scales and zero points (last dim 1, or 1-D) are not weights."""
    import openvino as ov

    counts = {"int4": 0, "int8": 0, "float": 0}
    kinds = {
        "u4": "int4",
        "i4": "int4",
        "nf4": "int4",
        "u8": "int8",
        "i8": "int8",
        "f16": "float",
        "f32": "float",
        "bf16": "float",
    }
    for op in ov.Core().read_model(model_dir / IR_XML).get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        shape = list(op.get_output_shape(0))
        kind = kinds.get(op.get_output_element_type(0).get_type_name())
        if kind and len(shape) >= 2 and shape[-1] > 1:
            counts[kind] += math.prod(shape)
    total = sum(counts.values()) or 1
    return WeightShares(**{k: v / total for k, v in counts.items()})


def decode_speed(model_dir: Path, new_tokens: int = 64, repeats: int = 2) -> Speed:
    """Median of `repeats` greedy generations of exactly `new_tokens` tokens, after one warm-up."""
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(str(model_dir), "CPU")
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens = new_tokens
    config.min_new_tokens = new_tokens
    config.ignore_eos = True
    config.do_sample = False
    pipe.generate(SPEED_PROMPT, config)
    runs = []
    for _ in range(repeats):
        metrics = pipe.generate([SPEED_PROMPT], config).perf_metrics
        runs.append((metrics.get_throughput().mean, metrics.get_ttft().mean))
    throughput = float(np.median([r[0] for r in runs]))
    ttft = float(np.median([r[1] for r in runs]))
    return Speed(tokens_per_second=throughput, ttft_ms=ttft, new_tokens=new_tokens)


def measure_model(model_dir: Path, windows: TokenSet, new_tokens: int | None) -> Metrics:
    """All metrics of one model folder; cached per (folder, evaluation windows, new-token count)."""

    def compute() -> Metrics:
        started = time.perf_counter()
        metrics = Metrics(
            perplexity=perplexity(model_dir, windows),
            speed=decode_speed(model_dir, new_tokens) if new_tokens else None,
            size_mb=folder_size_mb(model_dir),
            weights=weight_shares(model_dir),
        )
        metrics.seconds = time.perf_counter() - started
        return metrics

    return cached_metrics(f"openvino|{model_dir.resolve()}|{windows_key(windows)}|{new_tokens}", compute)


measure_model_task = task(measure_model, name="openvino-measure", cache_policy=NO_CACHE)
