"""Measuring an OpenVINO model folder: perplexity and divergence from its baseline on fixed token windows,
weight precision shares, size, and decode speed through openvino_genai. The PyTorch side is
`torch_runtime.py`, under the same protocol (and the same scoring)."""

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core import progress
from quantforge.core.mapped_files import pages_handed_back
from quantforge.core.records import Divergence, Metrics, Perplexity, Speed, WeightShares
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.export import IR_BIN, IR_XML
from quantforge.tasks.generation import GENERATION_FORM, generation_against
from quantforge.tasks.host import host_profile
from quantforge.tasks.metrics_cache import cached_baseline, cached_metrics, windows_key
from quantforge.tasks.torch_runtime import COMPACT_FORM, SPEED_PROMPT, folder_size_mb, score_windows

# Perplexity and divergence run at the precision the request pins (f32 unless asked: OpenVINO's default is
# bf16 on AMX CPUs, so figures of different hosts would not compare; docs/decisions.md), read back from the
# compiled model into the host profile. Decode speed keeps the serving default (`decode_speed`).


def scores(
    model_dir: Path,
    windows: TokenSet,
    against: Path | None = None,
    keep: Path | None = None,
    precision: str = "f32",
) -> tuple[Perplexity, Divergence | None, str]:
    """Score every window in one forward pass each (fresh state); token t is predicted from tokens < t.
    Against a baseline's kept distributions, the divergence too; with `keep`, keep this model's there
    (`torch_runtime.score_windows`). Also the precision the model ran at, as OpenVINO reports it."""
    forward, ran_at = window_logits(model_dir, windows.windows.shape[1], precision)
    total, done = len(windows.windows), 0

    def logits_of(window: np.ndarray):
        nonlocal done
        logits = forward(window)
        done += 1
        progress.advance(done, total, "windows")  # the live view's ETA
        return logits

    scored = score_windows(logits_of, windows.windows, against, keep)
    divergence = scored["divergence"]
    return Perplexity(**scored["perplexity"]), Divergence(**divergence) if divergence else None, ran_at


def window_logits(
    model_dir: Path, length: int, precision: str = "f32"
) -> tuple[Callable[[np.ndarray], Any], str]:
    """A function giving one window's logits ([length, vocab] torch tensor) from a fresh state, compiled at
    `precision` (`default`: the CPU plugin's own), and the precision it runs at as the plugin reports it
    (a CPU without bf16 compute runs an asked bf16 in f32)."""
    import openvino as ov
    import torch

    config = {} if precision == "default" else {"INFERENCE_PRECISION_HINT": precision}
    compiled = ov.Core().compile_model(model_dir / IR_XML, "CPU", config)
    ran_at = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    request = compiled.create_infer_request()
    input_names = {port.get_any_name() for port in compiled.inputs}
    positions = np.arange(length, dtype=np.int64)[None]

    def forward(window: np.ndarray) -> torch.Tensor:
        request.reset_state()
        inputs = {
            "input_ids": window[None],
            "attention_mask": np.ones_like(window[None]),
            "position_ids": positions,
            "beam_idx": np.zeros(1, dtype=np.int32),
        }
        request.infer({k: v for k, v in inputs.items() if k in input_names})
        return torch.from_numpy(request.get_tensor("logits").data[0])

    return forward, ran_at


def perplexity(model_dir: Path, windows: TokenSet) -> Perplexity:
    """Perplexity alone, as `scores` measures it (at f32)."""
    return scores(model_dir, windows)[0]


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


def decode_speed(pipe: Any, new_tokens: int = 64, repeats: int = 2) -> Speed:
    """Median of `repeats` greedy generations of exactly `new_tokens` tokens by an
    `openvino_genai.LLMPipeline`, after one warm-up."""
    import openvino_genai

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


def measure_model(
    model_dir: Path, windows: TokenSet, new_tokens: int | None, against: Path | None, precision: str
) -> Metrics:
    """All metrics of a variant's folder, with its divergence from the baseline whose distributions are
    kept in `against` (when given); cached per (folder, evaluation windows, new-token count, baseline,
    precision, prompts)."""
    key = (
        f"openvino|{model_dir.resolve()}|{windows_key(windows)}|{new_tokens}|against {against}|{precision}"
        f"|{GENERATION_FORM}"
    )
    return cached_metrics(key, lambda: _measure(model_dir, windows, new_tokens, precision, against=against))


def measure_baseline(
    model_dir: Path, windows: TokenSet, new_tokens: int | None, precision: str
) -> tuple[Metrics, Path]:
    """All metrics of the baseline's folder, and the folder keeping its next-token distributions and its
    greedy continuations."""
    key = (
        f"openvino|{model_dir.resolve()}|{windows_key(windows)}|{new_tokens}|{COMPACT_FORM}|{precision}"
        f"|{GENERATION_FORM}"
    )
    return cached_baseline(key, lambda keep: _measure(model_dir, windows, new_tokens, precision, keep=keep))


def _measure(
    model_dir: Path,
    windows: TokenSet,
    new_tokens: int | None,
    precision: str,
    against: Path | None = None,
    keep: Path | None = None,
) -> Metrics:
    started = time.perf_counter()
    # Compiling copies the weights into the CPU plugin's layout; the mapped file's pages read on the way
    # are handed back (1.6 against 2.3 GiB scoring an INT4 1.2 B model, the same speed).
    with pages_handed_back(IR_BIN):
        perplexity, divergence, ran_at = scores(model_dir, windows, against, keep, precision)
        speed, generation = None, None
        if new_tokens:  # decoding: not again in a rescoring round (new_tokens None), which keeps the first
            import openvino_genai

            pipe = openvino_genai.LLMPipeline(str(model_dir), "CPU")  # compiled once for both
            speed = decode_speed(pipe, new_tokens)
            generation = generation_against(pipe, against, keep)
            del pipe
    return Metrics(
        perplexity=perplexity,
        divergence=divergence,
        speed=speed,
        size_mb=folder_size_mb(model_dir),
        weights=weight_shares(model_dir),
        seconds=time.perf_counter() - started,
        host=host_profile(ran_at, openvino=True),
        generation=generation,
    )


measure_model_task = task(measure_model, name="openvino-measure", cache_policy=NO_CACHE)
measure_baseline_task = task(measure_baseline, name="openvino-measure", cache_policy=NO_CACHE)
