"""Divergence and its statistics on synthetic distributions with known answers (no model needed)."""

import math

import numpy as np
import pytest
import torch

from quantforge.tasks import torch_runtime

VOCAB, LENGTH, WINDOWS = 500, 129, 8


def logits(seed: int, scale: float = 3.0) -> torch.Tensor:
    """Random logits of every window: [WINDOWS, LENGTH, VOCAB]."""
    return scale * torch.randn(WINDOWS, LENGTH, VOCAB, generator=torch.Generator().manual_seed(seed))


def windows() -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, size=(WINDOWS, LENGTH))


def score(all_logits: torch.Tensor, **kwargs) -> dict:
    """`score_windows` over synthetic logits, looked up by window content."""
    ids = windows()
    by_window = {ids[i].tobytes(): all_logits[i] for i in range(WINDOWS)}
    return torch_runtime.score_windows(lambda window: by_window[window.tobytes()], ids, **kwargs)


def exact_kld(base: torch.Tensor, variant: torch.Tensor) -> np.ndarray:
    """Full-vocabulary KL(base || variant) of every scored token: [WINDOWS, LENGTH - 1]."""
    log_p = torch.log_softmax(base[:, :-1].double(), dim=-1)
    log_q = torch.log_softmax(variant[:, :-1].double(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).numpy()


def test_a_model_against_its_own_distributions_diverges_by_nothing(tmp_path):
    base = logits(1)
    kept = score(base, keep=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == set(torch_runtime.REFERENCE_FILES)
    again = score(base, against=tmp_path)
    assert again["perplexity"] == kept["perplexity"] and kept["divergence"] is None
    divergence = again["divergence"]
    assert divergence["mean_kld"] == 0.0 and divergence["p99_kld"] == 0.0
    assert divergence["top1_agreement"] == 1.0 and divergence["window_top1"] == [LENGTH - 1] * WINDOWS
    assert divergence["window_kld"] == [0.0] * WINDOWS


def test_window_nll_is_the_summed_cross_entropy_of_each_window():
    base = logits(2)
    scored = score(base)["perplexity"]
    targets = torch.from_numpy(windows()[:, 1:])
    expected = [
        float(torch.nn.functional.cross_entropy(base[i, :-1], targets[i], reduction="sum"))
        for i in range(WINDOWS)
    ]
    assert scored["window_nll"] == pytest.approx(expected, rel=1e-6)
    assert scored["mean_nll"] == pytest.approx(sum(expected) / (WINDOWS * (LENGTH - 1)), rel=1e-6)
    assert scored["ppl"] == pytest.approx(math.exp(scored["mean_nll"]))
    assert (scored["tokens_scored"], scored["windows"]) == (WINDOWS * (LENGTH - 1), WINDOWS)


def test_the_compact_form_is_exact_when_the_rest_holds_no_mass(tmp_path):
    """Every token's mass in 10 tokens (the others 60 nats below): the top-64 form gives the exact KLD."""
    base = torch.full((WINDOWS, LENGTH, VOCAB), -60.0)
    base[..., :10] = logits(3)[..., :10]
    variant = base + 0.3 * logits(4)
    score(base, keep=tmp_path)
    divergence = score(variant, against=tmp_path)["divergence"]
    exact = exact_kld(base, variant)
    assert divergence["mean_kld"] == pytest.approx(exact.mean(), rel=1e-5)
    assert divergence["window_kld"] == pytest.approx(exact.sum(axis=1).tolist(), rel=1e-5)
    assert divergence["p99_kld"] == pytest.approx(np.percentile(exact, 99), rel=1e-5)


def test_with_most_mass_in_the_rest_its_drawn_tokens_estimate_the_exact_kld(tmp_path):
    """Flat distributions: the top 32 of 500 tokens hold 30 % of the mass. Counting the rest as one
    outcome would find 0.037 nats of the exact 0.125; the tokens drawn from it find it within 3 %."""
    base, variant = logits(5, scale=1.0), logits(5, scale=1.0) + 0.5 * logits(6, scale=1.0)
    score(base, keep=tmp_path)
    divergence = score(variant, against=tmp_path)["divergence"]
    exact = exact_kld(base, variant)
    assert divergence["mean_kld"] == pytest.approx(exact.mean(), rel=0.03)
    assert (divergence["top_k"], divergence["rest_samples"]) == (32, 32)


def test_top1_agreement_counts_the_tokens_whose_most_likely_next_token_is_the_baseline_s(tmp_path):
    base = logits(7)
    variant = base.clone()
    top = base.argmax(-1)
    flipped = torch.zeros(WINDOWS, LENGTH, dtype=torch.bool)
    flipped[:, ::4] = True  # every fourth position: another token takes the lead
    variant[flipped, (top[flipped] + 1) % VOCAB] = base.max(-1).values[flipped] + 5.0
    score(base, keep=tmp_path)
    divergence = score(variant, against=tmp_path)["divergence"]
    agree = (~flipped[:, :-1]).sum(dim=1).tolist()
    assert divergence["window_top1"] == agree
    assert divergence["top1_agreement"] == pytest.approx(sum(agree) / (WINDOWS * (LENGTH - 1)))


def test_distributions_of_other_windows_are_refused(tmp_path):
    score(logits(8), keep=tmp_path)
    with pytest.raises(ValueError, match=r"^`against`: .* not of 2x128$"):
        torch_runtime.score_windows(lambda window: logits(8)[0], windows()[:2], against=tmp_path)
