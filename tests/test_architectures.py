"""The reference articles' other architectures (Phi-2, Mistral, Qwen2) as tiny random-weight models."""

import pytest

from quantforge.tasks.backends import openvino
from quantforge.tasks.datasets import evaluation_windows
from quantforge.tasks.fetch import fetch_source
from quantforge.tasks.openvino_measure import perplexity, weight_shares
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.variants import variant_job
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import EVALUATION_TEXT

pytestmark = pytest.mark.model


@pytest.mark.parametrize("architecture", ["phi", "mistral", "qwen2"])
def test_tiny_model_exports_quantizes_and_scores(architecture, bundled_model, tmp_path):
    # Phi-2 has no grouped-query attention: as many key/value heads as query heads.
    overrides = {"num_key_value_heads": 4} if architecture == "phi" else {}
    model_dir = tiny_model(architecture, tmp_path / architecture, bundled_model, **overrides)

    source = fetch_source(str(model_dir))
    baseline = openvino.export_ir(source, "fp16")
    windows = evaluation_windows(str(EVALUATION_TEXT), source.local_dir, 128, 2)
    job = variant_job(source, Recipe(name="int8", bits=8), None, windows, None)
    openvino.quantize(baseline.path, job)
    variant = job.target
    base_ppl = perplexity(baseline.path, windows).ppl
    # Random weights: perplexity near the vocabulary size, and INT8 barely moves it.
    assert 1_000 < base_ppl < 500_000
    assert abs(perplexity(variant, windows).ppl / base_ppl - 1) < 0.05
    assert weight_shares(variant).int8 > 0.99
