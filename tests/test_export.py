"""The export in the flow's own process (sources under EXPORT_APART_FROM_PARAMETERS)."""

import gc

import pytest

from quantforge.core.manifest import is_intact
from quantforge.tasks.backends.openvino import export_ir
from quantforge.tasks.fetch import fetch_source
from quantforge_testing.tiny_models import tiny_model


@pytest.mark.model
def test_an_in_process_export_collects_garbage_without_walking_what_the_process_held(
    bundled_model, tmp_path, monkeypatch
):
    """optimum runs full garbage collections during an export. In the flow's process they must not walk
    every object the process held before (its imports: ~670 k objects, 0.42 s a collection), and those
    objects are under the collector again once the export is done."""
    model = tiny_model("llama", tmp_path / "tiny-llama", bundled_model)
    monkeypatch.setenv("QUANTFORGE_HOME", str(tmp_path / "home"))
    source = fetch_source(str(model))
    held = len(gc.get_objects())
    frozen_at_full_collections = []

    def record(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            frozen_at_full_collections.append(gc.get_freeze_count())

    gc.callbacks.append(record)
    try:
        ir = export_ir(source, "fp16")
    finally:
        gc.callbacks.remove(record)
    assert is_intact(ir.path)
    assert frozen_at_full_collections, "optimum ran no full collection: nothing left to test"
    assert min(frozen_at_full_collections) >= 0.9 * held
    assert gc.get_freeze_count() == 0
