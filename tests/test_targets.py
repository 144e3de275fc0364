"""Device profiles: NPU refusals, the npu set, the targets file written next to a variant's IR and read
back, and what a run reports for devices present and absent (this machine has a CPU only)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quantforge.core.errors import QuantforgeError
from quantforge.core.manifest import read_manifest
from quantforge.core.records import Metrics
from quantforge.tasks.recipes import Recipe, load_recipe_set
from quantforge.tasks.request import QuantizeRequest
from quantforge.tasks.targets import (
    NOT_VERIFIED,
    PROFILES,
    TARGETS_FILE,
    VERIFIED,
    Target,
    read_targets,
    runtime_config,
    target_problems,
)
from tests.conftest import EVALUATION_TEXT

QUANTFORGE = str(Path(sys.executable).with_name("quantforge"))  # the console script users run
CPU = {
    "PERFORMANCE_HINT": "LATENCY",
    "NUM_STREAMS": 1,
    "INFERENCE_PRECISION_HINT": "f32",
    "CACHE_DIR": "model_cache",
}
GPU = {
    "PERFORMANCE_HINT": "LATENCY",
    "NUM_STREAMS": 1,
    "INFERENCE_PRECISION_HINT": "f16",
    "CACHE_DIR": "model_cache",
}
NPU = {"CACHE_DIR": "model_cache", "MAX_PROMPT_LEN": 1024, "MIN_RESPONSE_LEN": 128}


def test_an_asymmetric_group_wise_int4_recipe_aimed_at_npu_is_one_line_exit_2_and_nothing_made(tmp_path):
    """Through the console script: refused while the request is built, before any download or export."""
    output = tmp_path / "out"
    done = subprocess.run(
        [QUANTFORGE, "run", "HuggingFaceTB/SmolLM2-135M-Instruct", "--recipes", "quick", "--only",
         "int4-asym-g128", "--target", "cpu", "--target", "npu", "--output-dir", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith(
        "error: `targets` npu: recipe 'int4-asym-g128': `sym` must be true on NPU (the NPU compiler takes "
        "symmetric INT4 weights only), got false"
    )
    assert "`group_size_fallback`" in line  # groups of 128 adjusted to other sizes on narrow layers
    assert not output.exists()


@pytest.mark.parametrize(
    ("fields", "field", "got"),
    [
        ({"bits": 4, "group_size": 128, "group_size_fallback": "ignore"}, "sym", "false"),
        ({"bits": 4, "sym": True, "group_size": 64}, "group_size", "64"),
        ({"bits": 8, "sym": True}, "bits", "8"),
        ({"bits": 4, "sym": True, "group_size": -1, "ratio": 0.8}, "ratio", "0.8"),
        ({"bits": 4, "sym": True, "group_size": 128}, "group_size_fallback", '"adjust"'),
        ({"bits": 8, "backend": "torchao", "sym": True}, "backend", "torchao"),
    ],
)
def test_a_recipe_of_its_own_aimed_at_npu_names_the_field_and_the_value(fields, field, got, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(json.dumps({"recipes": [{"name": "mine", "target": "npu", **fields}]}))
    with pytest.raises(QuantforgeError) as refused:
        load_recipe_set(str(path))
    message = str(refused.value)
    assert message.startswith(f"`recipes` in mine.yaml: recipe 'mine': `{field}` must be ")
    assert " on NPU (" in message and message.endswith(f"got {got}")


def test_the_npu_set_loads_meets_its_profile_and_runs_with_target_npu():
    recipes = load_recipe_set("npu").recipes
    assert {r.name for r in recipes} == {"int4-sym-cw", "int4-sym-cw-awq-se", "int4-sym-g128"}
    for recipe in recipes:
        assert recipe.target == Target.NPU and target_problems(recipe, Target.NPU) == []
        assert recipe.bits == 4 and recipe.sym and recipe.group_size in (-1, 128) and recipe.ratio == 1.0
        assert list(runtime_config(recipe)) == ["CPU", "GPU", "NPU"]
    request = QuantizeRequest(model="org/model", recipes="npu", targets=["npu"], calibration="wikitext2")
    assert request.targets == [Target.NPU]
    with pytest.raises(ValueError, match=r"`targets` npu: recipe 'int8-asym': `bits` must be 4 on NPU"):
        QuantizeRequest(model="org/model", recipes="quick", targets=["npu"])


def test_a_target_is_not_part_of_the_variant_identity():
    """The targets file follows from the fields that make the bytes: the same variant, whatever it aims at."""
    channel_wise = {"name": "a", "bits": 4, "sym": True, "group_size": -1}
    assert Recipe(**channel_wise, target="npu").content_hash() == Recipe(**channel_wise).content_hash()


def test_each_device_gets_what_openvino_documents_for_it():
    """NPU: no NUM_STREAMS (read-only there) and no precision hint (it computes in FP16); its prompt and
    answer lengths (static shapes) said. An NPU-unfit recipe's file leaves the NPU out."""
    assert {t: p.properties for t, p in PROFILES.items()} == {"cpu": CPU, "gpu": GPU, "npu": NPU}
    assert [p.device for p in PROFILES.values()] == ["CPU", "GPU", "NPU"]
    assert runtime_config(Recipe(name="c", bits=4, sym=True, group_size=-1)) == {
        "CPU": CPU,
        "GPU": GPU,
        "NPU": NPU,
    }
    assert runtime_config(Recipe(name="a", bits=4, group_size=128)) == {"CPU": CPU, "GPU": GPU}
    assert runtime_config(Recipe(name="s", bits=8, activations="int8")) == {"CPU": CPU, "GPU": GPU}


@pytest.mark.model
def test_a_run_for_the_npu_reports_cpu_verified_and_npu_not_and_the_file_loads(
    bundled_model, prefect_harness, tmp_path
):
    """The quantize flow on a tiny Llama with the npu set's channel-wise recipe (its own `target: npu`):
    its variant carries the targets file (in its manifest), a host loads it with the CPU's properties,
    and the report says CPU verified, NPU not verified (this machine has a CPU only)."""
    import openvino_genai

    from quantforge.flows.quantize import quantize_flow
    from quantforge_testing.tiny_models import tiny_model

    model = tiny_model("llama", tmp_path / "llama", bundled_model)
    output = tmp_path / "output"
    request = QuantizeRequest(
        model=str(model),
        recipes="npu",
        only=["int4-sym-cw"],
        evaluation=str(EVALUATION_TEXT),
        max_eval_windows=2,
        new_tokens=4,
        output_dir=output,
    )
    (result,) = quantize_flow(request).variants
    # The run's target (cpu, the default) and the recipe's own (npu); not every device its file names.
    assert result.targets == {"CPU": VERIFIED, "NPU": NOT_VERIFIED}
    (run,) = output.iterdir()
    assert "- **int4-sym-cw**: CPU verified; NPU not verified (device absent)" in (
        (run / "report.md").read_text().splitlines()
    )
    assert json.loads((run / "report.json").read_text())["variants"][0]["targets"] == result.targets

    variant = run / "variants" / "int4-sym-cw"
    assert read_targets(variant) == {"CPU": CPU, "GPU": GPU, "NPU": NPU}
    manifest = read_manifest(variant)
    assert TARGETS_FILE in manifest.files and manifest.recipe["target"] == "npu"
    cache = tmp_path / "model_cache"
    config = {**read_targets(variant)["CPU"], "CACHE_DIR": str(cache)}
    assert (
        openvino_genai.LLMPipeline(str(variant), "CPU", config).generate("The", max_new_tokens=2) is not None
    )
    assert any(cache.iterdir())  # the CPU plugin took CACHE_DIR
    assert_the_host_goes_with_every_figure(result, run, variant)


def assert_the_host_goes_with_every_figure(result, run: Path, variant: Path) -> None:
    """The host profile in the variant's metrics, report.json, report.md, its MLflow run (whose lookup is
    at the protocol's precision only) and its model card with a load snippet per device of its targets
    file; the precision read back from the compiled model, an asked bf16 recorded as what it ran at."""
    import openvino as ov

    from quantforge.registry.tracking import mlflow_client
    from quantforge.registry.variants import lookup
    from quantforge.tasks.backends.base import Baseline
    from quantforge.tasks.host import describe
    from quantforge.tasks.model_card import CardContext, dataset_ref, model_card
    from quantforge.tasks.openvino_measure import window_logits

    host = result.metrics.host
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert (host.inference_precision, host.openvino, host.openvino_capabilities) == (
        "f32",
        ov.get_version(),
        capabilities,
    )
    report = json.loads((run / "report.json").read_text())
    assert report["variants"][0]["metrics"]["host"] == host.model_dump(mode="json")
    assert report["baselines"]["openvino"]["metrics"]["host"] == host.model_dump(mode="json")
    assert f"- {describe(host)}: baseline (openvino), int4-sym-cw" in (run / "report.md").read_text()

    record = lookup(result.identity, report["evaluation_hash"], "f32")
    assert record.metrics.host == host and record.lineage.inference_precision == "f32"
    assert lookup(result.identity, report["evaluation_hash"], "bf16") is None
    tags = mlflow_client().get_run(record.run_id).data.tags
    assert (tags["quantforge.host.cpu"], tags["quantforge.host.isa"]) == (host.cpu, ", ".join(host.isa))
    assert tags["quantforge.inference_precision"] == tags["quantforge.host.inference_precision"] == "f32"

    _, ran_at = window_logits(variant, 8, "bf16")  # a CPU without bf16 compute runs it in f32
    assert ran_at == ("bf16" if "BF16" in capabilities else "f32")
    assert window_logits(variant, 8, "f32")[1] == "f32"

    baseline = Baseline(
        runtime="openvino", label="original", metrics=Metrics(**report["baselines"]["openvino"]["metrics"])
    )
    context = CardContext(
        repo_id="acme/tiny-int4",
        endpoint="https://hub.example",
        evaluation=dataset_ref("wikitext2", None, "evaluation"),
    )
    card = model_card(result.model_copy(update={"path": variant}), read_manifest(variant), baseline, context)
    assert f"Measured on: {describe(host)}." in card.splitlines()
    for device, status in (
        ("CPU", f"{VERIFIED} on the host that made it"),
        ("NPU", f"{NOT_VERIFIED} on the host that made it"),
        ("GPU", "not checked by the run that made it"),
    ):
        assert f"**{device}**: {status}." in card
        properties = json.dumps(read_targets(variant)[device])
        assert f"properties = {properties}  # CACHE_DIR: a folder of the serving host" in card
        assert f'pipe = openvino_genai.LLMPipeline(folder, "{device}", properties)' in card


def test_a_device_that_refuses_the_variant_is_failed_never_verified(tmp_path):
    """A host claiming a GPU whose plugin cannot load (no OpenCL here): `failed: <why>`, not verified."""
    from quantforge.tasks.targets import verify_targets, write_targets

    write_targets(tmp_path, Recipe(name="a", bits=4, group_size=128))
    targets = verify_targets(tmp_path, ["CPU", "GPU"], ["CPU", "GPU.0"])
    assert set(targets) == {"CPU", "GPU"}
    assert all(status.startswith("failed: ") for status in targets.values())  # no IR in the folder at all
