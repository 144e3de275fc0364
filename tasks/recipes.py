"""Recipes: validated descriptions of one variant each, their hash, and the recipe sets they come in.

A recipe names its backend; the backend (`tasks/backends/`) adds its own rules and translates the recipe
into its tool's terms.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quantforge.core.errors import QuantforgeError, truncated
from quantforge.core.yaml_input import MAX_ECHO, MAX_MESSAGE, read_yaml
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.gate import GateLimits
from quantforge.tasks.slo import Slo
from quantforge.tasks.targets import Target, target_problems

RECIPE_SETS_DIR = Path(__file__).parent / "recipe_sets"
SensitivityMetric = Literal[
    "weight_quantization_error",
    "hessian_input_activation",
    "mean_activation_variance",
    "max_activation_variance",
    "mean_activation_magnitude",
]


class Recipe(BaseModel):
    """One variant: its backend and weight format, the same fields for every backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    backend: str = "openvino"  # a name in tasks.backends.BACKENDS
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
    # Which layers keep `backup_precision` when ratio < 1 (nncf's SensitivityMetric). None: nncf's own
    # choice, weight_quantization_error without calibration data, max_activation_variance with it.
    sensitivity_metric: SensitivityMetric | None = None
    activations: Literal["none", "int8"] = "none"  # int8: static W8A8 through nncf.quantize
    smooth_quant_alpha: float | None = Field(default=None, ge=0.0, le=1.0)
    # Static INT8 only: nncf's remedy for u8 x s8 products that saturate on CPUs without VNNI (AVX2:
    # +331 % ppl on the bundled model without it, +18.7 % with; docs/decisions.md). `enable` unless set.
    overflow_fix: Literal["enable", "first_layer_only", "disable"] | None = None
    gate: GateLimits = GateLimits()  # this recipe's limits; unset ones fall back to its weight format's
    # The device it is made for (its profile's rules apply: tasks/targets.py); None: the run's `--target`s.
    target: Target | None = None

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, backend: str) -> str:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (have {', '.join(BACKENDS)})")
        return backend

    @model_validator(mode="before")
    @classmethod
    def _overflow_fix_for_static(cls, data: Any) -> Any:
        """A static nncf recipe that does not say gets `enable`: its variant may be served on any CPU."""
        if (
            isinstance(data, dict)
            and data.get("activations") == "int8"
            and data.get("backend", "openvino") == "openvino"
            and data.get("overflow_fix") is None
        ):
            return {**data, "overflow_fix": "enable"}
        return data

    @model_validator(mode="after")
    def _check_combination(self) -> "Recipe":
        backend = BACKENDS[self.backend]
        problems = backend.recipe_problems(self) + _combination_problems(self)
        if self.target is not None:
            problems += target_problems(self, self.target)
        if problems:
            raise ValueError("; ".join(problems))
        backend.check_with_tool(self)
        return self

    @property
    def data_aware(self) -> bool:
        """True when the recipe needs calibration data."""
        by_activations = self.sensitivity_metric not in (None, "weight_quantization_error")
        algorithms = self.awq or self.scale_estimation or self.gptq or self.lora_correction
        return algorithms or self.static or by_activations

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
        """Stable hash of the fields that change the bytes (not the name, the gate or the target: the
        targets file follows from the other fields)."""
        fields = self.model_dump(exclude={"name", "gate", "target"})
        if fields["overflow_fix"] is None:  # weight-only: hashed as before the field existed
            del fields["overflow_fix"]
        if fields["sensitivity_metric"] is None:  # nncf's own choice: hashed as before the field existed
            del fields["sensitivity_metric"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _combination_problems(recipe: Recipe) -> list[str]:
    """What no backend can do: the rules of the recipe's own fields."""
    problems = []
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
    if recipe.sensitivity_metric is not None and recipe.ratio == 1.0:
        problems.append(
            f"`sensitivity_metric` {recipe.sensitivity_metric!r} needs `ratio` below 1 "
            "(it picks the layers kept in backup precision)"
        )
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
    if recipe.overflow_fix is not None and not recipe.static:
        problems.append("`overflow_fix` needs `activations: int8`")
    return problems


class RecipeSet(BaseModel):
    """A named list of recipes, as loaded from YAML."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    recipes: list[Recipe] = Field(min_length=1)
    slo: Slo | None = None  # the application its variants must serve (`--slo FILE` replaces it)

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
    if where and where[0] == "slo":
        field = truncated(".".join(str(p) for p in where), MAX_ECHO)
        got = truncated(repr(first["input"]), MAX_ECHO)
        return f"field `{field}`: {first['msg'].removeprefix('Value error, ')} (got {got})"
    return first["msg"]
