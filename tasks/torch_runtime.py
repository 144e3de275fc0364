"""Measuring a PyTorch causal LM: perplexity and divergence on token windows, decode speed, size. Used in
both environments, and the scoring (`score_windows`) by the OpenVINO runtime too.

The main environment (torchao, the PyTorch fp32 reference) and the IPEX worker (`workers/ipex_worker.py`,
torch 2.8 + transformers 4.51) import this file, so it needs nothing but numpy, torch and transformers.
The protocol is the OpenVINO one of `tasks/openvino_measure.py`: one forward pass per window from a fresh
state, token t predicted from tokens < t, summed cross-entropy of window[1:], the same fixed prompt and
greedy new-token count for speed.
"""

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SPEED_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
# A baseline's next-token distributions are kept per token in a compact form (`compact`): the TOP_K
# largest log-probs and their ids, REST_SAMPLES ids drawn from the rest with their log-probs, and the
# log of the rest's mass (docs/decisions.md: the error it adds to the KLD, measured on the bundled model).
TOP_K = 32
REST_SAMPLES = 32
COMPACT_FORM = f"top {TOP_K} + {REST_SAMPLES} drawn"  # in the baselines' cache keys: another form, new keys
REFERENCE_FILES = {  # one .npy file per part, in the order `compact` returns them
    "top_logprobs.npy": np.float32,
    "top_ids.npy": np.int32,
    "sample_logprobs.npy": np.float32,
    "sample_ids.npy": np.int32,
    "rest_logmass.npy": np.float32,
}


def score_windows(
    logits_of: Callable[[np.ndarray], Any],
    windows: np.ndarray,
    against: Path | None = None,
    keep: Path | None = None,
) -> dict:
    """Score every window from its logits (`logits_of(window)`: a [length, vocab] tensor, token t predicted
    from tokens < t), one window at a time so memory holds one window's distributions.

    Returns `perplexity` (the keys of `quantforge.core.records.Perplexity`) and `divergence` (those of
    `Divergence`, against the baseline distributions kept in the folder `against`; None without one).
    With `keep`, these windows' distributions are written into that folder in the same compact form.
    """
    import torch

    count, length = windows.shape
    reference = read_reference(against, count, length - 1) if against is not None else None
    kept = None
    window_nll, window_kld, window_top1, token_kld = [], [], [], []
    with torch.inference_mode():
        for index, window in enumerate(windows):
            log_probs = torch.log_softmax(logits_of(window)[:-1].float(), dim=-1)
            targets = torch.from_numpy(np.ascontiguousarray(window[1:]))[:, None]
            window_nll.append(-float(log_probs.gather(1, targets).double().sum()))
            if keep is not None:
                parts = compact(log_probs, seed=index)
                kept = kept or new_reference(keep, count, parts)
                for array, part in zip(kept, parts, strict=True):
                    array[index] = part.numpy()
            if reference is not None:
                baseline = (torch.from_numpy(np.array(array[index])) for array in reference)
                kld, agrees = token_divergence(log_probs, *baseline)
                token_kld.append(kld.numpy())
                window_kld.append(float(kld.double().sum()))
                window_top1.append(int(agrees.sum()))
    for array in kept or ():
        array.flush()
    scored = count * (length - 1)
    mean = sum(window_nll) / scored
    ppl = math.nan if math.isnan(mean) else math.exp(min(mean, 709.0))  # exp(709.8) overflows a float
    perplexity = {
        "ppl": ppl,
        "mean_nll": mean,
        "tokens_scored": scored,
        "windows": count,
        "window_nll": window_nll,
    }
    divergence = None
    if reference is not None:
        divergence = {
            "mean_kld": sum(window_kld) / scored,
            "p99_kld": float(np.percentile(np.concatenate(token_kld), 99)),  # linear, as llama.cpp's
            "top1_agreement": sum(window_top1) / scored,
            "top_k": int(reference[0].shape[-1]),
            "rest_samples": int(reference[2].shape[-1]),
            "window_kld": window_kld,
            "window_top1": window_top1,
        }
    return {"perplexity": perplexity, "divergence": divergence}


def compact(log_probs, seed: int, top: int = TOP_K, samples: int = REST_SAMPLES) -> tuple:
    """The compact form of next-token distributions ([tokens, vocab] log-probs), per token: the `top`
    largest log-probs (descending) and their ids; `samples` ids drawn from the rest of the distribution
    (with replacement, seeded: the same form every time) and their log-probs; the log of the rest's
    mass (summed over the rest, so exact even when tiny, where 1 - sum(top) would cancel)."""
    import torch

    vocab = log_probs.shape[-1]
    top_logprobs, top_ids = log_probs.topk(min(top, vocab), dim=-1)
    rest = log_probs.exp().scatter(-1, top_ids, 0.0)  # a sum of small terms: no cancellation
    mass = rest.sum(-1)
    draws = min(samples, vocab - top_ids.shape[-1])
    sample_ids = top_ids[:, :0]
    if draws:
        drawable = mass > 0  # not a token with no mass left, nor a broken model's NaN
        if not drawable.all():  # such a token draws anything: its rest weighs nothing (or is NaN anyway)
            rest[~drawable] = 1.0
        generator = torch.Generator().manual_seed(seed)
        sample_ids = torch.multinomial(rest, draws, replacement=True, generator=generator)
    return top_logprobs, top_ids, log_probs.gather(-1, sample_ids), sample_ids, mass.log()


def token_divergence(log_q, top_log_p, top_ids, sample_log_p, sample_ids, rest_log_p) -> tuple:
    """KL(p || q) per token, with p in its compact form: exact over p's top k, and over the rest its mass
    times the mean log-ratio of the tokens drawn from it (an unbiased estimate of the rest's share);
    and whether q's most likely token is p's (`top_ids[:, 0]`)."""
    import torch

    top_ids, sample_ids = top_ids.long(), sample_ids.long()
    top = _kl_terms(top_log_p, log_q.gather(-1, top_ids)).sum(-1)
    ratio = (sample_log_p - log_q.gather(-1, sample_ids)).mean(-1)  # NaN without draws: no rest either
    rest = torch.where(torch.isneginf(rest_log_p), 0.0, rest_log_p.exp() * ratio)
    return top + rest, log_q.argmax(-1) == top_ids[:, 0]


def _kl_terms(log_p, log_q):
    """p (log p - log q), 0 where p is 0."""
    import torch

    return torch.where(torch.isneginf(log_p), 0.0, log_p.exp() * (log_p - log_q))


def new_reference(folder: Path, count: int, parts: tuple) -> tuple[np.ndarray, ...]:
    """Writable arrays in `folder` for `count` windows of the compact form (`parts`: one window's)."""
    return tuple(
        np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=(count, *part.shape))
        for (name, dtype), part in zip(REFERENCE_FILES.items(), parts, strict=True)
    )


def read_reference(folder: Path, count: int, tokens: int) -> tuple[np.ndarray, ...]:
    """The compact form kept in `folder`, mapped (read window by window); it must be of these windows."""
    arrays = tuple(np.load(folder / name, mmap_mode="r") for name in REFERENCE_FILES)
    if arrays[-1].shape != (count, tokens):
        raise ValueError(
            f"`against`: {folder} holds distributions of {arrays[-1].shape} tokens, not of {count}x{tokens}"
        )
    return arrays


def model_logits(model, window: np.ndarray):
    """One window's logits [length, vocab] from a fresh state (IPEX's graph returns a tuple)."""
    import torch

    ids = torch.from_numpy(np.ascontiguousarray(window))[None]
    output = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return (output.logits if hasattr(output, "logits") else output[0])[0]


def perplexity(model, windows: np.ndarray) -> dict:
    """Score every window in one forward pass; the keys are those of `quantforge.core.records.Perplexity`."""
    return score_windows(lambda window: model_logits(model, window), windows)["perplexity"]


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
