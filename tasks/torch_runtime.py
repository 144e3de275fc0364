"""Measuring a PyTorch causal LM: perplexity on token windows, decode speed, size. Used in both environments.

The main environment (torchao, the PyTorch fp32 reference) and the IPEX worker (`workers/ipex_worker.py`,
torch 2.8 + transformers 4.51) import this file, so it needs nothing but numpy, torch and transformers.
The protocol is the OpenVINO one of `tasks/openvino_measure.py`: one forward pass per window from a fresh
state, token t predicted from tokens < t, summed cross-entropy of window[1:], the same fixed prompt and
greedy new-token count for speed.
"""

import math
import statistics
import time
from pathlib import Path

import numpy as np

SPEED_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def window_nll(logits, window: np.ndarray) -> float:
    """Summed negative log-likelihood of window[1:] given logits[:-1]."""
    import torch

    predicted = logits[:-1].float()
    return float(torch.nn.functional.cross_entropy(predicted, torch.from_numpy(window[1:]), reduction="sum"))


def perplexity(model, windows: np.ndarray) -> dict:
    """Score every window in one forward pass; the keys are those of `quantforge.core.records.Perplexity`."""
    import torch

    total_nll = 0.0
    with torch.inference_mode():
        for window in windows:
            ids = torch.from_numpy(np.ascontiguousarray(window))[None]
            output = model(input_ids=ids, attention_mask=torch.ones_like(ids))
            logits = output.logits if hasattr(output, "logits") else output[0]  # IPEX returns a tuple
            total_nll += window_nll(logits[0], window)
    scored = windows.shape[0] * (windows.shape[1] - 1)
    mean = total_nll / scored
    ppl = math.nan if math.isnan(mean) else math.exp(min(mean, 709.0))  # exp(709.8) overflows a float
    return {"ppl": ppl, "mean_nll": mean, "tokens_scored": scored, "windows": int(windows.shape[0])}


class _TokenClock:
    """A transformers streamer that only notes when each generated token arrives."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if self._prompt_seen:  # the first call carries the prompt, not a generated token
            self.arrivals.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def decode_speed(model, prompt_ids: np.ndarray, new_tokens: int, repeats: int = 2) -> dict:
    """Median of `repeats` greedy generations of exactly `new_tokens` tokens after a warm-up.

    `prompt_ids` is `SPEED_PROMPT` tokenized by the main environment, so both environments decode from
    the same ids. TTFT is prompt-to-first-token; throughput counts the tokens after the first over the
    time they took, as openvino_genai's does. The keys are those of `quantforge.core.records.Speed`.
    """
    import torch

    input_ids = torch.from_numpy(np.ascontiguousarray(prompt_ids))[None]
    ids = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    settings = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    runs = []
    with torch.inference_mode():
        model.generate(**ids, **settings)
        for _ in range(repeats):
            clock = _TokenClock()
            started = time.perf_counter()
            model.generate(**ids, **settings, streamer=clock)
            first, last = clock.arrivals[0], clock.arrivals[-1]
            throughput = (len(clock.arrivals) - 1) / (last - first) if len(clock.arrivals) > 1 else math.nan
            runs.append((throughput, (first - started) * 1000))
    return {
        "tokens_per_second": statistics.median(r[0] for r in runs),
        "ttft_ms": statistics.median(r[1] for r in runs),
        "new_tokens": new_tokens,
    }


def folder_size_mb(folder: Path) -> float:
    """Size on disk of the folder's files, in MiB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def weight_shares(model) -> dict:
    """Share of Linear/Embedding weight elements stored as 4-bit, 8-bit and floating point."""
    import torch

    counts = {"int4": 0, "int8": 0, "float": 0}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear | torch.nn.Embedding) or weight is None:
            continue
        kind = _storage_kind(weight)
        counts[kind] += weight.numel() if kind == "float" else math.prod(weight.shape)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.items()}


def _storage_kind(weight) -> str:
    """`int4`, `int8` or `float`: torchao's quantized tensors keep integer data in `qdata`."""
    import torch

    if not hasattr(weight, "qdata"):
        return "float"
    # IntxUnpackedToInt8Tensor holds int4 values one per byte and says so in `target_dtype`.
    target = getattr(weight, "target_dtype", weight.qdata.dtype)
    return "int4" if target in (torch.int4, torch.uint4) else "int8"
