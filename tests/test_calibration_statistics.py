"""Calibration statistics collected once per IR and calibration set, and loaded by every later
data-aware INT4 recipe (nncf's `statistics_path`): the same bytes as without them, and never half-made."""

import pytest

from quantforge.core.manifest import is_intact
from quantforge.tasks.backends import openvino
from quantforge.tasks.datasets import calibration_samples, evaluation_windows
from quantforge.tasks.export import IR_BIN, IR_XML
from quantforge.tasks.fetch import fetch_source
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.variants import variant_job
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import CALIBRATION_TEXT, EVALUATION_TEXT

pytestmark = pytest.mark.model

AWQ_SE = Recipe(name="int4-awq-se", bits=4, group_size=32, ratio=0.8, awq=True, scale_estimation=True)
LORA = Recipe(
    name="int4-se-lora", bits=4, group_size=32, ratio=0.8, scale_estimation=True, lora_correction=True
)


@pytest.fixture(scope="module")
def tiny(bundled_model, tmp_path_factory):
    """A tiny Llama's IR, its calibration samples and evaluation windows."""
    source = fetch_source(
        str(tiny_model("llama", tmp_path_factory.mktemp("tiny") / "llama", bundled_model, seed=5))
    )
    ir = openvino.export_ir(source, "fp16").path
    calibration = calibration_samples(str(CALIBRATION_TEXT), str(EVALUATION_TEXT), source.local_dir, 8, 64, 0)
    evaluation = evaluation_windows(str(EVALUATION_TEXT), source.local_dir, 128, 1)
    return source, ir, calibration, evaluation


def test_the_second_recipe_loads_the_first_ones_statistics_and_makes_what_nncf_makes_without(tiny, tmp_path):
    import nncf
    import openvino as ov

    source, ir, calibration, evaluation = tiny
    statistics = openvino.statistics_dir(ir, calibration)
    assert not statistics.exists()

    openvino.quantize(ir, variant_job(source, AWQ_SE, calibration, evaluation, None))
    assert is_intact(statistics)
    assert (statistics / openvino.NNCF_STATISTICS / "statistics_metadata.json").is_file()
    collected = statistics.stat().st_ino

    lora = variant_job(source, LORA, calibration, evaluation, None)
    openvino.quantize(ir, lora)
    assert statistics.stat().st_ino == collected  # loaded, not collected again

    model = ov.Core().read_model(ir / IR_XML)
    _, kwargs = openvino.nncf_call(LORA)
    kwargs["subset_size"] = len(calibration.windows)
    dataset = openvino._calibration_dataset(model, calibration)
    ov.save_model(
        nncf.compress_weights(model, dataset=dataset, **kwargs), tmp_path / IR_XML, compress_to_fp16=False
    )
    assert (lora.target / IR_BIN).read_bytes() == (tmp_path / IR_BIN).read_bytes()


def test_a_collection_that_fails_leaves_no_statistics_and_the_next_one_collects(tiny):
    source, ir, calibration, evaluation = tiny
    # Each sample one rank too many: the IR refuses it during the collection, after nncf has started it.
    broken = calibration.model_copy(
        update={"windows": calibration.windows[:, None, :], "content_hash": "f" * 64}
    )
    statistics = openvino.statistics_dir(ir, broken)
    with pytest.raises(RuntimeError, match="infer_request"):
        openvino.quantize(ir, variant_job(source, AWQ_SE, broken, evaluation, None))
    assert not [p.name for p in ir.parent.iterdir() if statistics.name in p.name]

    seeded = calibration_samples(str(CALIBRATION_TEXT), str(EVALUATION_TEXT), source.local_dir, 8, 64, 1)
    openvino.quantize(ir, variant_job(source, AWQ_SE, seeded, evaluation, None))
    assert is_intact(openvino.statistics_dir(ir, seeded))
