"""Recipes: validation with clear messages, stable hashes, and the translation to nncf arguments."""

import hashlib
import json
import os
import re
import subprocess
import sys
import typing

import nncf
import pytest
from pydantic import ValidationError

from quantforge.core.errors import QuantforgeError
from quantforge.tasks.backends.openvino import nncf_call
from quantforge.tasks.recipes import Recipe, available_sets, load_recipe_set


def test_weight_only_int4_translation_matches_nncf_arguments():
    recipe = Recipe(
        name="awq",
        bits=4,
        sym=True,
        group_size=64,
        ratio=0.8,
        backup_precision="int8_asym",
        awq=True,
        scale_estimation=True,
    )
    function, kwargs = nncf_call(recipe)
    assert function == "compress_weights"
    expected = {
        "mode": nncf.CompressWeightsMode.INT4_SYM,
        "group_size": 64,
        "ratio": 0.8,
        "awq": True,
        "scale_estimation": True,
        "gptq": None,
        "lora_correction": None,
        "backup_mode": nncf.BackupMode.INT8_ASYM,
    }
    assert {k: kwargs[k] for k in expected} == expected
    fallback = kwargs["advanced_parameters"].group_size_fallback_mode
    assert fallback == nncf.GroupSizeFallbackMode.ADJUST


def test_int8_weight_only_translation():
    function, kwargs = nncf_call(Recipe(name="int8", bits=8))
    assert function == "compress_weights"
    assert kwargs["mode"] == nncf.CompressWeightsMode.INT8_ASYM
    assert kwargs["group_size"] is None and kwargs["ratio"] == 1.0 and kwargs["awq"] is None


def test_static_int8_translation_carries_smooth_quant_alpha():
    function, kwargs = nncf_call(Recipe(name="w8a8", bits=8, activations="int8", smooth_quant_alpha=0.6))
    assert function == "quantize"
    assert kwargs["model_type"] == nncf.ModelType.TRANSFORMER
    assert kwargs["preset"] == nncf.QuantizationPreset.MIXED
    assert kwargs["advanced_parameters"].smooth_quant_alphas.matmul == 0.6


def test_static_int8_fixes_overflow_unless_told_and_weight_only_hashes_as_before():
    """optimum-intel's default is `disable`, which saturates on CPUs without VNNI (docs/decisions.md)."""
    unsaid = Recipe(name="w8a8", bits=8, activations="int8")
    assert unsaid.overflow_fix == "enable"
    assert nncf_call(unsaid)[1]["advanced_parameters"].overflow_fix == nncf.OverflowFix.ENABLE
    for value in typing.get_args(Recipe.model_fields["overflow_fix"].annotation.__args__[0]):
        said = Recipe(name="w8a8", bits=8, activations="int8", overflow_fix=value)  # each is nncf's
        assert nncf_call(said)[1]["advanced_parameters"].overflow_fix == nncf.OverflowFix(value)
    told = Recipe(name="w8a8", bits=8, activations="int8", overflow_fix="disable")
    assert told.content_hash() != unsaid.content_hash()  # other bytes, another variant
    weight_only = Recipe(name="int8", bits=8)
    assert weight_only.overflow_fix is None
    # as before either field existed (sensitivity_metric: tests/test_search.py)
    fields = weight_only.model_dump(exclude={"name", "gate", "target", "overflow_fix", "sensitivity_metric"})
    before_the_field = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    assert weight_only.content_hash() == before_the_field


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bits": 3}, "`bits` must be 4 or 8 with backend openvino, got 3"),
        ({"bits": 8, "group_size": 64}, "`group_size` is for 4-bit weights, got 64 with bits=8"),
        ({"bits": 8, "ratio": 0.5}, "`ratio` below 1 is for 4-bit weights"),
        ({"bits": 4, "group_size": 64, "gptq": True, "lora_correction": True}, "cannot be combined"),
        ({"bits": 8, "awq": True}, "`awq` is for 4-bit weights"),
        ({"bits": 4, "activations": "int8"}, "`activations: int8` needs bits=8"),
        ({"bits": 8, "smooth_quant_alpha": 0.5}, "`smooth_quant_alpha` needs `activations: int8`"),
        ({"bits": 8, "overflow_fix": "enable"}, "`overflow_fix` needs `activations: int8`"),
        (
            {"backend": "ipex", "bits": 8, "activations": "int8", "overflow_fix": "enable"},
            "`overflow_fix` is an OpenVINO (nncf) option, not available with backend ipex",
        ),
        ({"bits": 4, "group_size": 0}, "`group_size` must be positive or -1"),
    ],
)
def test_invalid_combinations_are_refused_with_the_field_named(fields, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        Recipe(name="bad", **fields)


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_ratio_outside_unit_interval_is_refused(ratio):
    with pytest.raises(ValidationError, match="ratio"):
        Recipe(name="bad", bits=4, ratio=ratio)


def test_recipe_hash_ignores_name_and_gate_but_not_fields():
    base = Recipe(name="a", bits=4, group_size=128)
    assert (
        base.content_hash() == Recipe(name="b", bits=4, group_size=128, gate={"max_ppl": 30}).content_hash()
    )
    assert base.content_hash() != Recipe(name="a", bits=4, group_size=64).content_hash()


def test_shipped_sets_load_and_default_covers_every_family():
    assert {"default", "quick"} <= set(available_sets())
    default = load_recipe_set("default").recipes
    assert any(r.awq and r.scale_estimation for r in default)
    assert any(r.gptq for r in default)
    assert any(r.static and r.smooth_quant_alpha for r in default)
    assert any(r.bits == 8 and not r.static for r in default)


def test_yaml_errors_name_the_recipe_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("recipes:\n  - name: ok\n    bits: 8\n  - name: broken\n    bits: 4\n    ratio: 2\n")
    with pytest.raises(QuantforgeError, match=r"recipe 'broken' field `ratio`.*got 2"):
        load_recipe_set(str(path))


def test_unknown_set_lists_the_shipped_ones():
    with pytest.raises(QuantforgeError, match=r"unknown recipe set 'nope' \(shipped: default, npu, pytorch"):
        load_recipe_set("nope")


def test_a_set_checked_once_loads_again_without_importing_optimum(tmp_path):
    """optimum-intel's checks cost seconds of imports: a rerun of the same recipes skips them."""
    script = (
        "import sys; from quantforge.tasks.recipes import load_recipe_set; load_recipe_set('default'); "
        "print('optimum.intel' in sys.modules)"
    )
    env = {**os.environ, "QUANTFORGE_HOME": str(tmp_path)}

    def imported_optimum() -> bool:
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip().splitlines()[-1] == "True"

    assert imported_optimum()  # first load: optimum-intel checks every recipe
    assert not imported_optimum()
    assert len(list((tmp_path / "recipes-checked").iterdir())) == len(load_recipe_set("default").recipes)


def alias_bomb(levels: int) -> bytes:
    """The "billion laughs" document: each level lists nine aliases of the one below, 9**levels strings."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join([*lines, f"recipes: [*l{levels - 1}]", ""]).encode()


MERGE_BOMB = b"\n".join(
    [b"m0: &m0 {bits: 8}"] + [b"m%d: &m%d {<<: [*m%d, *m%d]}" % (n, n, n - 1, n - 1) for n in range(1, 20)]
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"recipes:\n  - name: x\n    bits: [8\n",
            "`recipes`: bad.yaml is not valid YAML: expected ',' or ']', but got '<stream end>' (line 4)",
        ),
        (alias_bomb(7), "`recipes`: bad.yaml is not valid YAML: aliases (*l0) are not accepted"),
        (MERGE_BOMB, "`recipes`: bad.yaml is not valid YAML: aliases (*m0) are not accepted"),
        (b"recipes: " + b"[" * 5000 + b"]" * 5000, "nested deeper than 16 levels (line 1)"),
        (b"# " + b"x" * 70_000, "`recipes`: bad.yaml is larger than 64 KiB"),
        (b"recipes:\n  - name: '" + b"x" * 60_000 + b"'\n", "`recipes` in bad.yaml: recipe 'xxxxxxxx"),
        (b"recipes:\n  - name: x\n    bits: '" + b"8" * 60_000 + b"'\n", "field `bits`"),
        (b"\xff\xfe\xff\xfe\x00\xd8", "`recipes`: bad.yaml is not valid YAML: "),
    ],
)
def test_broken_or_hostile_recipe_files_are_one_short_line(content, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(QuantforgeError) as refused:
        load_recipe_set(str(path))
    line = str(refused.value)
    assert message in line
    assert len(line) <= 300 and "\n" not in line


def test_anchors_without_aliases_and_plain_merge_keys_still_load(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("recipes:\n  - &first\n    name: int8\n    <<: {bits: 8}\n")
    assert load_recipe_set(str(path)).recipes[0].bits == 8
