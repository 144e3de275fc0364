"""PyTorch-side backends without a model: translations, refusals, the missing-env error, baseline check."""

import pytest
import torch
from pydantic import ValidationError
from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, MappingType, PerGroup

from quantforge.core.errors import QuantforgeError
from quantforge.tasks.backends.ipex import check_baseline_agreement, to_ipex_spec
from quantforge.tasks.backends.torchao import to_torchao_config
from quantforge.tasks.recipes import Recipe, load_recipe_set
from quantforge.tasks.request import QuantizeRequest


def test_ipex_translation_of_the_four_shipped_recipes():
    recipes = {r.name: r for r in load_recipe_set("pytorch").recipes}
    assert to_ipex_spec(recipes["ipex-bf16"]) == {"mode": "bf16"}
    assert to_ipex_spec(recipes["ipex-smoothquant-int8"]) == {"mode": "smoothquant", "alpha": 0.5}
    assert to_ipex_spec(recipes["ipex-woq-int8"]) == {
        "mode": "woq",
        "weight_dtype": "INT8",
        "group_size": -1,
        "weight_qscheme": "ASYMMETRIC",
        "lowp_mode": "BF16",
    }
    assert to_ipex_spec(recipes["ipex-woq-int4"]) == {
        "mode": "woq",
        "weight_dtype": "INT4",
        "group_size": 64,
        "weight_qscheme": "ASYMMETRIC",
        "lowp_mode": "BF16",
    }


def test_smooth_quant_alpha_is_configurable_and_defaults_to_half():
    tuned = Recipe(name="sq", backend="ipex", bits=8, activations="int8", smooth_quant_alpha=0.8)
    default = Recipe(name="sq", backend="ipex", bits=8, activations="int8")
    assert to_ipex_spec(tuned)["alpha"] == 0.8 and to_ipex_spec(default)["alpha"] == 0.5
    assert tuned.content_hash() != default.content_hash()


def test_torchao_translation():
    int8 = to_torchao_config(Recipe(name="a", backend="torchao", bits=8, sym=True))
    assert isinstance(int8, Int8WeightOnlyConfig)
    int4 = to_torchao_config(Recipe(name="b", backend="torchao", bits=4, group_size=64))
    assert isinstance(int4, IntxWeightOnlyConfig)
    assert (int4.weight_dtype, int4.granularity, int4.mapping_type) == (
        torch.int4,
        PerGroup(64),
        MappingType.ASYMMETRIC,
    )


def test_the_same_fields_on_another_backend_are_another_variant():
    hashes = {
        Recipe(name="x", backend=b, bits=8, sym=True).content_hash() for b in ("openvino", "ipex", "torchao")
    }
    assert len(hashes) == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "ipex", "bits": 4, "group_size": 64, "awq": True}, "`awq` is an OpenVINO (nncf) option"),
        ({"backend": "torchao", "bits": 4, "group_size": 64, "ratio": 0.8}, "`ratio` below 1 is an OpenVINO"),
        ({"backend": "torchao", "bits": 8}, "`sym` must be true with backend torchao and bits=8"),
        (
            {"backend": "torchao", "bits": 8, "sym": True, "activations": "int8"},
            "not available with backend torchao",
        ),
        ({"backend": "torchao", "bits": 16}, "`bits` must be 4 or 8 with backend torchao, got 16"),
        ({"backend": "openvino", "bits": 16}, "`bits` must be 4 or 8 with backend openvino, got 16"),
        ({"backend": "ipex", "bits": 16, "group_size": 64}, "bits=16 (bfloat16) takes no"),
        ({"backend": "ipex", "bits": 8, "backup_precision": "int8_sym"}, "`backup_precision` is an OpenVINO"),
    ],
)
def test_what_a_backend_cannot_do_is_refused_by_field(fields, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Recipe(name="bad", **fields)


def test_ipex_recipes_fail_fast_naming_the_command_when_the_env_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTFORGE_IPEX_ENV", str(tmp_path / "no-env"))
    with pytest.raises(ValidationError, match="create it with `make ipex-env`"):
        QuantizeRequest(model="HuggingFaceTB/SmolLM2-135M-Instruct", recipes="pytorch", calibration="c4")
    # torchao recipes of the same set need nothing else
    QuantizeRequest(model="HuggingFaceTB/SmolLM2-135M-Instruct", recipes="pytorch", only=["torchao-int4"])


def test_baselines_that_disagree_across_environments_stop_the_run():
    check_baseline_agreement(24.95, 24.92)  # 0.12 %
    # the rope_theta trap: the same weights under transformers 4.51 without a top-level rope_theta
    with pytest.raises(
        QuantforgeError, match=r"29.720 in the IPEX environment and 24.920 here \(19.26 % apart"
    ):
        check_baseline_agreement(29.72, 24.92)
