"""IPEX and torchao variants beside an OpenVINO one, end to end on the bundled model through Prefect.

Creates the IPEX environment with `make ipex-env` when it is missing (minutes, ~7 GB); skipped only
when that command fails, with its last output line as the reason.
"""

import subprocess
from pathlib import Path

import pytest
import yaml

from quantforge.flows.quantize import quantize_flow
from quantforge.tasks.backends.ipex import CODE_ROOT as REPO_ROOT
from quantforge.tasks.backends.ipex import CREATE_COMMAND, ipex_python
from quantforge.tasks.recipes import RECIPE_SETS_DIR
from quantforge.tasks.report import table_rows
from quantforge.tasks.request import QuantizeRequest
from tests.conftest import CALIBRATION_TEXT, EVALUATION_TEXT

pytestmark = [pytest.mark.e2e, pytest.mark.model, pytest.mark.ipex]
PER_CHANNEL_INT4_INCREASE_PCT = 143.0  # IPEX's default (per-channel) WOQ INT4 on this model, issue 7


@pytest.fixture(scope="module")
def ipex_env() -> Path:
    try:
        return ipex_python()
    except Exception:
        made = subprocess.run(CREATE_COMMAND.split(), cwd=REPO_ROOT, capture_output=True, text=True)
        if made.returncode != 0:
            last = (made.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"`{CREATE_COMMAND}` could not create the IPEX environment: {last}")
        return ipex_python()


@pytest.fixture(scope="module")
def cpu_has_bf16(ipex_env) -> bool:
    """IPEX's bf16 needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT (an AVX2-only CPU has neither)."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from workers.ipex_worker import cpu_has_bf16; print(cpu_has_bf16())"
    )
    done = subprocess.run(
        [str(ipex_env), "-c", script, str(REPO_ROOT)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1] == "True"


@pytest.fixture(scope="module")
def run(ipex_env, cpu_has_bf16, bundled_model, prefect_harness, tmp_path_factory):
    """The `pytorch` set plus OpenVINO INT8, in one request: one report with all three backends.

    Its own MLflow database: another test of the session may have registered the same int8-asym."""
    folder = tmp_path_factory.mktemp("pytorch-variants")
    recipes = yaml.safe_load((RECIPE_SETS_DIR / "pytorch.yaml").read_text())
    if not cpu_has_bf16:  # see test_ipex_bf16_is_refused_in_one_line_on_a_cpu_without_bf16
        recipes["recipes"] = [r for r in recipes["recipes"] if r["name"] != "ipex-bf16"]
    recipes["recipes"].append({"name": "int8-asym", "bits": 8})
    (folder / "side-by-side.yaml").write_text(yaml.safe_dump(recipes))
    request = QuantizeRequest(
        model=str(bundled_model),
        recipes=str(folder / "side-by-side.yaml"),
        calibration=str(CALIBRATION_TEXT),
        evaluation=str(EVALUATION_TEXT),
        num_samples=8,
        seq_len=128,
        max_eval_windows=2,
        new_tokens=8,
        output_dir=folder / "output",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        return quantize_flow(request)


def by_name(report):
    return {v.recipe: v for v in report.variants}


def test_the_fp32_baseline_agrees_across_environments(run):
    pytorch = run.baselines["pytorch"].metrics.perplexity.ppl
    assert abs(run.backend_baseline_ppl["ipex"] / pytorch - 1) <= 0.005
    openvino = run.baselines["openvino"].metrics.perplexity.ppl  # the OpenVINO IR, for the side by side
    assert abs(openvino / pytorch - 1) <= 0.005


def test_every_variant_is_made_measured_and_gated(run):
    variants = by_name(run)
    assert {v.backend for v in variants.values()} == {"openvino", "ipex", "torchao"}
    for result in variants.values():
        assert not result.reused and result.verdict.reasons
        assert result.metrics.speed.tokens_per_second > 0 and result.metrics.size_mb > 0
        assert result.verdict.passed == all(r.startswith("pass") for r in result.verdict.reasons)
        assert (result.model_version is not None) == result.verdict.passed
    for name in ("ipex-bf16", "ipex-woq-int8", "torchao-int8", "int8-asym"):
        if name in variants:
            assert variants[name].ppl_increase_pct < 2.0 and variants[name].verdict.passed, name
    # W8A8 is gated at +5 % like OpenVINO's; whatever it measures, a failure is recorded, not registered
    assert variants["ipex-smoothquant-int8"].verdict.passed == (
        variants["ipex-smoothquant-int8"].ppl_increase_pct <= 5.0
    )


def test_group_wise_int4_beats_ipex_per_channel_default(run):
    variants = by_name(run)
    int4 = variants["ipex-woq-int4"]
    assert int4.ppl_increase_pct < PER_CHANNEL_INT4_INCREASE_PCT
    assert int4.ppl_increase_pct > variants["ipex-woq-int8"].ppl_increase_pct
    assert int4.metrics.weights.int4 > 0.5 and variants["torchao-int4"].metrics.weights.int4 > 0.5
    # gate default for INT4 is +10 %: the verdict follows the measured figure
    for name in ("ipex-woq-int4", "torchao-int4"):
        assert variants[name].verdict.passed == (variants[name].ppl_increase_pct <= 10.0)


def test_the_table_shows_all_backends_side_by_side(run):
    rows = table_rows(run)
    assert [r["backend"] for r in rows[:2]] == ["openvino", "pytorch"]
    assert {r["variant"]: r["backend"] for r in rows[2:]} == {v.recipe: v.backend for v in run.variants}


def test_ipex_artifacts_load_for_generation_without_quantizing_again(run, ipex_env):
    folder = by_name(run)["ipex-woq-int4"].path
    assert {"ipex_model.pt", "config.json", "tokenizer.json", "quantforge_ipex.json", "manifest.json"} <= {
        p.name for p in folder.iterdir()
    }
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1])\n"
        "from workers.ipex_worker import load_ipex_variant\n"
        "from transformers import AutoTokenizer\n"
        "model = load_ipex_variant(Path(sys.argv[2]))\n"
        "tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])\n"
        "ids = tokenizer('The capital of France is', return_tensors='pt', return_token_type_ids=False)\n"
        "new = model.generate(**ids, max_new_tokens=4, do_sample=False)\n"
        "print(new.shape[1] - ids['input_ids'].shape[1])\n"
    )
    done = subprocess.run(
        [str(ipex_env), "-c", script, str(REPO_ROOT), str(folder)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "4"


def test_torchao_artifact_loads_quantized_in_transformers(run):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(by_name(run)["torchao-int8"].path)
    weight = model.model.layers[0].mlp.up_proj.weight
    assert type(weight).__name__ == "Int8Tensor" and weight.qdata.dtype == torch.int8


def test_ipex_toolchain_is_read_from_its_own_environment(ipex_env):
    from quantforge.tasks.backends.ipex import BACKEND

    assert BACKEND.toolchain() == {
        "intel-extension-for-pytorch": "2.8.0",
        "transformers": "4.51.3",
        "torch": "2.8.0",
    }


def test_ipex_bf16_is_made_where_the_cpu_supports_it(run, cpu_has_bf16):
    if not cpu_has_bf16:
        pytest.skip("this CPU has no AVX-512 BW/VL/DQ or AVX-NE-CONVERT: IPEX cannot run bf16 here")
    assert by_name(run)["ipex-bf16"].verdict.passed


def test_ipex_bf16_is_refused_in_one_line_on_a_cpu_without_bf16(cpu_has_bf16, bundled_model):
    if cpu_has_bf16:
        pytest.skip("this CPU runs IPEX bf16 (see test_ipex_bf16_is_made_where_the_cpu_supports_it)")
    from quantforge.tasks.backends.ipex import run_ipex_worker, to_ipex_spec
    from quantforge.tasks.recipes import Recipe

    spec = {"action": "variant", "model_dir": str(bundled_model), "evaluation": "unused.npy"}
    spec |= {"output_dir": "unused", "ipex": to_ipex_spec(Recipe(name="bf16", backend="ipex", bits=16))}
    with pytest.raises(Exception, match=r"IPEX worker failed \(variant\): bf16 needs a CPU with AVX-512"):
        run_ipex_worker(spec)
