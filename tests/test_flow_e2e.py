"""The default sweep end to end on the bundled model, through Prefect, then a rerun that reuses it all."""

import json

import pytest

from flows.quantize import quantize_flow
from tasks.request import QuantizeRequest
from tests.conftest import CALIBRATION_TEXT, EVALUATION_TEXT

pytestmark = [pytest.mark.e2e, pytest.mark.model]


@pytest.fixture(scope="module")
def sweep(bundled_model, prefect_harness, tmp_path_factory):
    """One default sweep, small calibration so it fits CI; the rerun's report beside it."""
    output = tmp_path_factory.mktemp("output")
    request = QuantizeRequest(
        model="bundled:SmolLM2-135M-Instruct",
        recipes="default",
        calibration=str(CALIBRATION_TEXT),
        evaluation=str(EVALUATION_TEXT),
        num_samples=24,
        seq_len=128,
        max_eval_windows=8,
        new_tokens=16,
        output_dir=output,
    )
    first = quantize_flow(request)
    return first, quantize_flow(request), output


def by_name(report):
    return {v.recipe: v for v in report.variants}


def test_every_recipe_is_measured_and_judged(sweep):
    first, _, _ = sweep
    variants = by_name(first)
    assert set(variants) == {
        "int8-asym",
        "int4-asym-g128",
        "int4-sym-g64-r08",
        "int4-awq-se",
        "int4-gptq",
        "int8-static-sq",
    }
    for result in variants.values():
        assert result.verdict.reasons and not result.reused
        assert result.metrics.speed.tokens_per_second > 0 and result.metrics.size_mb > 0
    assert variants["int8-asym"].ppl_increase_pct < 2.0 and variants["int8-asym"].verdict.passed
    assert variants["int8-asym"].metrics.weights.int8 > 0.99
    assert variants["int4-asym-g128"].metrics.weights.int4 > 0.7
    # 4-bit loses more than 8-bit; calibration (AWQ + scale estimation) wins back part of it.
    assert variants["int4-asym-g128"].ppl_increase_pct > variants["int8-asym"].ppl_increase_pct
    assert (
        variants["int4-awq-se"].metrics.perplexity.ppl <= variants["int4-sym-g64-r08"].metrics.perplexity.ppl
    )
    assert first.best in first.pareto_front or first.best is None
    assert (
        first.best == "int8-asym"
        or variants[first.best].metrics.size_mb < variants["int8-asym"].metrics.size_mb
    )


def test_report_files_and_self_contained_variant_folders(sweep):
    first, _, output = sweep
    (folder,) = [p for p in output.iterdir() if not p.name.startswith(".")]
    report = json.loads((folder / "report.json").read_text())
    assert report["source_sha"] == first.source_sha and len(report["variants"]) == 6
    assert "| int4-awq-se |" in (folder / "report.md").read_text()
    assert (folder / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    for name in by_name(first):
        files = {p.name for p in (folder / "variants" / name).iterdir()}
        assert {
            "openvino_model.xml",
            "openvino_model.bin",
            "openvino_tokenizer.xml",
            "openvino_detokenizer.xml",
            "config.json",
            "openvino_config.json",
        } <= files


@pytest.mark.parametrize("recipe", ["int4-awq-se", "int8-static-sq"])
def test_variants_load_in_openvino_genai_and_optimum(sweep, recipe):
    import openvino_genai
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    path = by_name(sweep[0])[recipe].path
    text = openvino_genai.LLMPipeline(str(path), "CPU").generate("The capital of France is", max_new_tokens=8)
    assert isinstance(text, str) and text.strip()
    model = OVModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = model.generate(
        **tokenizer("Hello, my name is", return_tensors="pt"), max_new_tokens=5, do_sample=False
    )
    assert ids.shape[1] > 5


def test_rerun_reuses_every_variant_and_the_export(sweep):
    first, rerun, _ = sweep
    assert rerun.export_reused and all(v.reused for v in rerun.variants)
    assert {v.recipe: v.identity for v in rerun.variants} == {v.recipe: v.identity for v in first.variants}
    assert rerun.wall_seconds < first.wall_seconds / 3
