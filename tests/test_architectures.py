"""The reference articles' other architectures (Phi-2, Mistral, Qwen2) as tiny random-weight models."""

import pytest

from quantforge.core.manifest import MANIFEST_FILE
from quantforge.tasks.backends import openvino
from quantforge.tasks.datasets import evaluation_windows
from quantforge.tasks.fetch import fetch_source
from quantforge.tasks.openvino_measure import perplexity, weight_shares
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.request import QuantizeRequest
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


def test_a_bf16_source_keeps_bf16_weights_and_its_baseline_can_be_scored_on_int8_weights(
    bundled_model, prefect_harness, tmp_path
):
    """Llama-3 and most current checkpoints are bf16: the IR keeps them as they are (no cast, no second
    copy); a baseline too large to compile in 16 bits is scored on its INT8 weight-only copy."""
    import openvino as ov
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = tiny_model("llama", tmp_path / "bf16", bundled_model)
    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).save_pretrained(model_dir)
    source = fetch_source(str(model_dir))
    ir = openvino.export_ir(source, "auto")
    assert ir.dtype == "bf16"
    matrices = [
        op.get_output_element_type(0).get_type_name()
        for op in ov.Core().read_model(ir.path / "openvino_model.xml").get_ordered_ops()
        if op.get_type_name() == "Constant" and len(op.shape) == 2
    ]
    assert matrices and set(matrices) == {"bf16"}

    windows = evaluation_windows(str(EVALUATION_TEXT), source.local_dir, 128, 2)
    assert openvino.baseline_weights("auto", source) == "full"  # 1 B parameters and up: int8
    request = QuantizeRequest(model=str(model_dir), recipes="quick", baseline_weights="int8", new_tokens=4)
    baseline = openvino.OpenVinoRuntime().baseline(source, windows, request)
    assert baseline.label == openvino.INT8_LABEL
    assert baseline.folder == ir.path and baseline.scored == ir.path.with_name(ir.path.name + "-int8")
    assert baseline.metrics.weights.int8 > 0.99
    assert abs(baseline.metrics.perplexity.ppl / perplexity(ir.path, windows).ppl - 1) < 0.05

    # The default set's int8-asym is the baseline's INT8 copy, byte for byte: linked, not made twice.
    job = variant_job(source, Recipe(name="int8-asym", bits=8), None, windows, None)
    openvino.quantize(ir.path, job)
    weights = "openvino_model.bin"
    assert (job.target / weights).stat().st_ino == (baseline.scored / weights).stat().st_ino
    assert (job.target / MANIFEST_FILE).is_file()
