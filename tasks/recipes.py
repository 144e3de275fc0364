"""Recipes: validated descriptions of one variant each, their hash, and one translation per backend.

`openvino` recipes become nncf calls (through optimum-intel's configs), `torchao` recipes torchao configs
applied in the main environment, `ipex` recipes a JSON spec for the IPEX worker in its own environment.
"""

import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantforge.core.errors import QuantforgeError, truncated
from quantforge.core.paths import data_dir
from quantforge.core.yaml_input import MAX_ECHO, MAX_MESSAGE, read_yaml

RECIPE_SETS_DIR = Path(__file__).parent / "recipe_sets"


class GateOverride(BaseModel):
    """Per-recipe gate limits; unset fields fall back to the defaults for the recipe's weight format."""

    model_config = ConfigDict(extra="forbid")

    max_ppl_increase_pct: float | None = Field(default=None, ge=0)
    max_ppl: float | None = Field(default=None, gt=0)
    min_speedup: float | None = Field(default=None, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)


Backend = Literal["openvino", "ipex", "torchao"]
# Options only nncf implements; the PyTorch-side backends refuse them instead of ignoring them.
OPENVINO_ONLY_FLAGS = ("awq", "scale_estimation", "gptq", "lora_correction")
DEFAULT_SMOOTH_QUANT_ALPHA = 0.5  # SmoothQuant's paper default, and IPEX's


class Recipe(BaseModel):
    """One variant: its backend and weight format, the same fields for every backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    backend: Backend = "openvino"
    bits: int = 8  # 4 or 8; 16 means bfloat16 weights and compute, no integer quantization (ipex only)
    sym: bool = False
    group_size: int | None = None  # None: per-channel; -1 also means per-channel in nncf
    # When a layer's width is not a multiple of group_size (SmolLM2's 576 and 128): `adjust` picks the
    # nearest group size that divides it, `ignore` leaves the layer in backup precision, `error` refuses.
    group_size_fallback: Literal["adjust", "ignore", "error"] = "adjust"
    ratio: float = Field(default=1.0, ge=0.0, le=1.0)  # share of weights in `bits`, the rest in backup
    backup_precision: Literal["int8_asym", "int8_sym", "none"] | None = None
    awq: bool = False
    scale_estimation: bool = False
    gptq: bool = False
    lora_correction: bool = False
    activations: Literal["none", "int8"] = "none"  # int8: static W8A8 through nncf.quantize
    smooth_quant_alpha: float | None = Field(default=None, ge=0.0, le=1.0)
    gate: GateOverride = GateOverride()

    @model_validator(mode="after")
    def _check_combination(self) -> "Recipe":
        problems = _combination_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        if self.backend == "openvino":
            _check_with_optimum(self)
        return self

    @property
    def data_aware(self) -> bool:
        """True when the recipe needs calibration data."""
        return self.awq or self.scale_estimation or self.gptq or self.lora_correction or self.static

    @property
    def static(self) -> bool:
        """True for weights+activations (static) quantization."""
        return self.activations == "int8"

    @property
    def weight_format(self) -> str:
        """The gate-defaults key: `int8`, `int4`, `w8a8` or `bf16`."""
        if self.bits == 16:
            return "bf16"
        return "w8a8" if self.static else f"int{self.bits}"

    def content_hash(self) -> str:
        """Stable hash of the fields that change the bytes (not the name, not the gate)."""
        fields = self.model_dump(exclude={"name", "gate"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _check_with_optimum(recipe: Recipe) -> None:
    """optimum-intel's own checks, so nothing it would refuse gets through.

    Remembered per recipe and optimum-intel version: importing optimum-intel takes seconds (torch,
    transformers, nncf), and a rerun whose variants are all registered never needs it otherwise.
    """
    checked = data_dir() / "recipes-checked" / f"{recipe.content_hash()}-{version('optimum-intel')}"
    if checked.exists():
        return
    to_optimum_config(recipe)
    checked.parent.mkdir(parents=True, exist_ok=True)
    checked.touch()


def _combination_problems(recipe: Recipe) -> list[str]:
    problems = []
    allowed_bits = (4, 8, 16) if recipe.backend == "ipex" else (4, 8)
    if recipe.bits not in allowed_bits:
        problems.append(
            f"`bits` must be {' or '.join(map(str, allowed_bits))} with backend {recipe.backend}, "
            f"got {recipe.bits}"
        )
    if recipe.backend != "openvino":
        problems += _pytorch_backend_problems(recipe)
    if recipe.bits in (8, 16):
        if recipe.group_size not in (None, -1):
            problems.append(f"`group_size` is for 4-bit weights, got {recipe.group_size} with bits=8")
        if recipe.ratio < 1.0:
            problems.append(f"`ratio` below 1 is for 4-bit weights, got {recipe.ratio} with bits=8")
        for flag in ("awq", "scale_estimation", "gptq", "lora_correction"):
            if getattr(recipe, flag):
                problems.append(f"`{flag}` is for 4-bit weights, not bits=8")
        if recipe.backup_precision is not None:
            problems.append("`backup_precision` is for 4-bit weights, not bits=8")
    if recipe.group_size is not None and recipe.group_size != -1 and recipe.group_size <= 0:
        problems.append(f"`group_size` must be positive or -1, got {recipe.group_size}")
    if recipe.gptq and recipe.lora_correction:
        problems.append("`gptq` and `lora_correction` cannot be combined")
    if recipe.gptq and recipe.awq:
        problems.append("`gptq` and `awq` cannot be combined")
    if recipe.static and recipe.bits != 8:
        problems.append(f"`activations: int8` needs bits=8, got {recipe.bits}")
    if recipe.smooth_quant_alpha is not None and not recipe.static:
        problems.append("`smooth_quant_alpha` needs `activations: int8`")
    return problems


def _pytorch_backend_problems(recipe: Recipe) -> list[str]:
    """What IPEX and torchao cannot do, named by field rather than silently ignored."""
    backend = recipe.backend
    problems = [
        f"`{flag}` is an OpenVINO (nncf) option, not available with backend {backend}"
        for flag in OPENVINO_ONLY_FLAGS
        if getattr(recipe, flag)
    ]
    if recipe.ratio < 1.0:
        problems.append(f"`ratio` below 1 is an OpenVINO (nncf) option, not available with backend {backend}")
    if recipe.backup_precision is not None:
        problems.append(
            f"`backup_precision` is an OpenVINO (nncf) option, not available with backend {backend}"
        )
    if backend == "torchao":
        if recipe.static:
            problems.append("`activations: int8` is not available with backend torchao (weight-only)")
        if recipe.bits == 8 and not recipe.sym:
            problems.append(
                "`sym` must be true with backend torchao and bits=8 (its INT8 weight-only is symmetric)"
            )
    if recipe.bits == 16 and (recipe.static or recipe.group_size is not None or recipe.sym):
        problems.append("bits=16 (bfloat16) takes no `activations`, `group_size` or `sym`")
    return problems


def to_optimum_config(recipe: Recipe) -> Any:
    """The one translation: a Recipe as optimum-intel's config (its to_nncf_dict feeds nncf)."""
    from optimum.intel import OVQuantizationConfig, OVWeightQuantizationConfig

    if recipe.static:
        return OVQuantizationConfig(
            bits=8,
            sym=recipe.sym,
            smooth_quant_alpha=recipe.smooth_quant_alpha,
            model_type="transformer",  # keeps LayerNorm/softmax paths out of INT8, as optimum does for LLMs
        )
    return OVWeightQuantizationConfig(
        bits=recipe.bits,
        sym=recipe.sym,
        group_size=recipe.group_size,
        ratio=recipe.ratio,
        quant_method="awq" if recipe.awq else "default",
        scale_estimation=recipe.scale_estimation or None,
        gptq=recipe.gptq or None,
        lora_correction=recipe.lora_correction or None,
        backup_precision=recipe.backup_precision,
        group_size_fallback=recipe.group_size_fallback if recipe.bits == 4 else None,
    )


def to_torchao_config(recipe: Recipe) -> Any:
    """The torchao translation: weight-only INT8 per output channel, or INT4 by groups (or per channel).

    INT4 uses torchao's `IntxWeightOnlyConfig` (int4 values unpacked to one byte each) because torchao's
    packed CPU INT4 tensor cannot be written to safetensors, and transformers 5 writes nothing else.
    """
    import torch
    from torchao.quantization import (
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
        MappingType,
        PerAxis,
        PerGroup,
    )

    if recipe.bits == 8:
        return Int8WeightOnlyConfig()
    group = PerAxis(0) if recipe.group_size in (None, -1) else PerGroup(recipe.group_size)
    return IntxWeightOnlyConfig(
        weight_dtype=torch.int4,
        granularity=group,
        mapping_type=MappingType.SYMMETRIC if recipe.sym else MappingType.ASYMMETRIC,
    )


def to_ipex_spec(recipe: Recipe) -> dict[str, Any]:
    """The IPEX translation, as JSON for the worker: names of IPEX's own enums, no IPEX import here."""
    if recipe.bits == 16:
        return {"mode": "bf16"}
    if recipe.static:
        alpha = recipe.smooth_quant_alpha
        return {"mode": "smoothquant", "alpha": DEFAULT_SMOOTH_QUANT_ALPHA if alpha is None else alpha}
    return {
        "mode": "woq",
        "weight_dtype": f"INT{recipe.bits}",
        "group_size": -1 if recipe.group_size is None else recipe.group_size,
        "weight_qscheme": "SYMMETRIC" if recipe.sym else "ASYMMETRIC",
        # Dequantize to bf16 and run AMX bf16 GEMMs: the fast path on this CPU, and no activation
        # quantization (lowp INT8 would quantize activations too, which weight-only is meant to avoid).
        "lowp_mode": "BF16",
    }


def nncf_call(recipe: Recipe) -> tuple[str, dict[str, Any]]:
    """Which nncf function the recipe runs and its keyword arguments (no dataset, no model)."""
    kwargs = to_optimum_config(recipe).to_nncf_dict()
    return ("quantize" if recipe.static else "compress_weights"), kwargs


class RecipeSet(BaseModel):
    """A named list of recipes, as loaded from YAML."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    recipes: list[Recipe] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "RecipeSet":
        names = [r.name for r in self.recipes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"recipe names must be unique, repeated: {', '.join(duplicates)}")
        return self


def available_sets() -> list[str]:
    """Names of the recipe sets shipped with quantforge."""
    return sorted(p.stem for p in RECIPE_SETS_DIR.glob("*.yaml"))


def load_recipe_set(name_or_path: str) -> RecipeSet:
    """Load a shipped set by name, or a YAML file by path; errors name the recipe and field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_SETS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise QuantforgeError(
                f"`recipes`: unknown recipe set {truncated(repr(name_or_path), MAX_ECHO)} "
                f"(shipped: {', '.join(available_sets())})"
            )
    elif not path.exists():
        raise QuantforgeError(f"`recipes`: file {truncated(repr(str(path)), MAX_ECHO)} does not exist")
    data = read_yaml(path, "recipes")
    try:
        return RecipeSet.model_validate(data)
    except ValidationError as error:
        message = f"`recipes` in {path.name}: {_first_error(error, data)}"
        raise QuantforgeError(truncated(message, MAX_MESSAGE)) from None


def _first_error(error: ValidationError, data: Any) -> str:
    first = error.errors()[0]
    where = first["loc"]
    if len(where) >= 2 and where[0] == "recipes" and isinstance(where[1], int):
        raw = data["recipes"][where[1]]
        name = raw.get("name", f"#{where[1]}") if isinstance(raw, dict) else f"#{where[1]}"
        field = truncated(".".join(str(p) for p in where[2:]), MAX_ECHO)
        label = f"recipe {truncated(repr(name), MAX_ECHO)}" + (f" field `{field}`" if field else "")
        value = f" (got {truncated(repr(first['input']), MAX_ECHO)})" if field else ""
        return f"{label}: {first['msg'].removeprefix('Value error, ')}{value}"
    return first["msg"]
