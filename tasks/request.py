"""QuantizeRequest: the single input of the quantize flow, validated before any work starts."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from quantforge.core.errors import QuantforgeError, truncated
from quantforge.core.yaml_input import MAX_MESSAGE
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.datasets import PAPERS_DATASET, Protocol
from quantforge.tasks.gate import GateLimits
from quantforge.tasks.publish import DEFAULT_REPO_TEMPLATE, hub_repo_id
from quantforge.tasks.recipes import Recipe, load_recipe_set
from quantforge.tasks.search import SEARCH, exploration_order
from quantforge.tasks.slo import Slo, load_slo
from quantforge.tasks.targets import Target, refused_for_targets


class QuantizeRequest(BaseModel):
    """What to quantize, how, and how to judge it."""

    model_config = ConfigDict(extra="forbid")

    # Each field's description is its `quantforge run` option's help (quantforge/cli_options.py).
    model: str = Field(min_length=1, description="Hub id (org/name) or a local model directory.")
    revision: str = Field(
        default="main", min_length=1, description="Branch, tag or commit sha of a Hub model."
    )
    recipes: str = Field(
        default="default",
        description="Recipe set name (see `quantforge recipes`) or YAML path; `search`: an INT4 search.",
    )
    # The search's budget: its candidates (in the order of tasks/search.py) and, optionally, its minutes.
    search_budget: int = Field(
        default=12, ge=1, le=500, description="`--recipes search`: at most this many candidates."
    )
    search_minutes: float | None = Field(
        default=None,
        gt=0,
        description="`--recipes search`: start no candidate after 60 % of these minutes (the rest scores "
        "the survivors fully).",
    )
    search_windows: int = Field(
        default=4, ge=1, description="`--recipes search`: evaluation windows the KLD proxy is scored on."
    )
    only: list[str] = Field(default_factory=list, description="Run only this recipe of the set (repeatable).")
    recipe: Recipe | None = Field(
        default=None,
        description="One recipe instead of a set (`quantforge run` builds it from optimum-cli's options).",
    )
    calibration: str | None = Field(
        default=None, description="Calibration text: wikitext2, c4, or a .txt/.jsonl file or folder."
    )
    evaluation: str = Field(
        default="wikitext2", description="Evaluation text: wikitext2, c4, or a .txt/.jsonl file or folder."
    )
    num_samples: int = Field(default=64, ge=1, le=4096, description="Calibration samples.")
    seq_len: int = Field(default=128, ge=8, le=8192, description="Tokens per calibration sample.")
    window: int = Field(default=512, ge=16, le=8192, description="Tokens per perplexity window.")
    max_eval_windows: int = Field(default=32, ge=1, description="At most this many evaluation windows.")
    protocol: Protocol = Field(
        default="quantforge",
        description="Perplexity protocol: quantforge (--window, --max-eval-windows of the evaluation text) "
        "or gptq (the GPTQ/AWQ papers': wikitext2's test split, every window of the model's context or "
        "2048).",
    )
    seed: int = Field(default=0, ge=0, description="Calibration sampling seed.")
    new_tokens: int = Field(
        default=64, ge=1, le=4096, description="Tokens generated in the decode speed test."
    )
    export_dtype: Literal["auto", "fp16", "bf16", "fp32"] = Field(
        default="auto", description="Precision of the exported IR; auto: bf16 for a bf16 source, else fp16."
    )
    baseline_weights: Literal["auto", "full", "int8"] = Field(
        default="auto",
        description="Weights the OpenVINO baseline is scored with: full (the exported IR), int8 (its INT8 "
        "weight-only copy), auto (int8 from 1 B parameters, as optimum-cli exports them).",
    )
    # f32 so figures of different hosts compare: OpenVINO's default is bf16 or f16 on CPUs that compute it
    # natively (AVX-512 BF16, AMX), f32 elsewhere. Decode speed runs at the serving default either way.
    inference_precision: Literal["f32", "bf16", "f16", "default"] = Field(
        default="f32",
        description="Precision OpenVINO scores perplexity and divergence at (INFERENCE_PRECISION_HINT); "
        "default: the CPU plugin's own (bf16 on AMX CPUs).",
    )
    targets: list[Target] = Field(
        default_factory=lambda: [Target.CPU],
        min_length=1,
        description="Device the variants are for (repeatable): cpu, gpu, npu; a recipe's own `target` wins.",
    )
    gates: GateLimits = Field(
        default=GateLimits(), description="Run-wide gate limits: over each recipe's own and the defaults."
    )
    slo: Path | None = Field(
        default=None,
        description="Service-level objective (YAML): variants that pass are measured under its load and "
        "gated on it; replaces the recipe set's `slo:`.",
    )
    output_dir: Path = Field(
        default=Path("quantforge-output"), description="Folder for the variants and the report."
    )
    trust_remote_code: bool = Field(default=False, description="Allow models whose config needs remote code.")
    allow_pickle: bool = Field(
        default=False, description="Accept pickled (*.bin) weights when the model has no safetensors."
    )
    hub_namespace: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Publish passing variants to the Hub (HF_ENDPOINT, token HF_TOKEN) under this namespace.",
    )
    hub_private: bool = Field(default=False, description="Create the Hub repos private.")
    hub_repo_template: str = Field(
        default=DEFAULT_REPO_TEMPLATE,
        description="Hub repo of each variant; fields {namespace}, {source}, {recipe}.",
    )
    promote_best: bool = Field(
        default=False, description="Point the `champion` alias at the best passing variant's version."
    )

    @model_validator(mode="after")
    def _one_recipe_or_a_set(self) -> "QuantizeRequest":
        if self.recipe is not None and (given := sorted({"recipes", "only"} & self.model_fields_set)):
            raise ValueError(
                f"`recipe` {self.recipe.name!r} replaces the recipe set: not with `{'`, `'.join(given)}`"
            )
        return self

    @model_validator(mode="after")
    def _check_protocol(self) -> "QuantizeRequest":
        if self.protocol == "quantforge":
            return self
        if self.recipes == SEARCH:  # its KLD proxy takes the first windows of quantforge's protocol
            raise ValueError(
                f"`protocol` {self.protocol!r}: not with `recipes` {SEARCH!r} (quantforge's only)"
            )
        if self.evaluation != PAPERS_DATASET:
            raise ValueError(
                f"`protocol` {self.protocol!r} scores {PAPERS_DATASET}'s test split: not `evaluation` "
                f"{self.evaluation!r}"
            )
        # Other values than the defaults: the CLI passes every option, so a field given is not told apart
        # from one left at its default.
        fields = type(self).model_fields
        given = [
            f"`{n}` {getattr(self, n)}"
            for n in ("window", "max_eval_windows")
            if getattr(self, n) != fields[n].default
        ]
        if given:
            raise ValueError(
                f"`protocol` {self.protocol!r} sets the windows (the model's context or 2048 tokens, every "
                f"one): not with {', '.join(given)}"
            )
        return self

    @model_validator(mode="after")
    def _search_options_for_search(self) -> "QuantizeRequest":
        search_fields = ("search_budget", "search_minutes", "search_windows")
        given = [f for f in search_fields if getattr(self, f) != type(self).model_fields[f].default]
        if given and self.recipes != SEARCH:
            raise ValueError(f"`{'`, `'.join(given)}`: only with `recipes` {SEARCH!r}, got {self.recipes!r}")
        return self

    @model_validator(mode="after")
    def _check_recipes(self) -> "QuantizeRequest":
        recipes = self.selected_recipes()
        if refused := refused_for_targets(recipes, self.targets):
            raise ValueError(truncated(refused, MAX_MESSAGE))
        needing_data = [r.name for r in recipes if r.data_aware]
        if needing_data and self.calibration is None:
            raise ValueError(
                f"`calibration` is required by data-aware recipes: {', '.join(needing_data)} "
                "(pass --calibration wikitext2, c4 or a text file)"
            )
        for backend in dict.fromkeys(r.backend for r in recipes):
            try:
                BACKENDS[backend].check_available()
            except QuantforgeError as error:
                raise ValueError(str(error)) from None
        return self

    @model_validator(mode="after")
    def _check_slo(self) -> "QuantizeRequest":
        if self.slo is not None:
            try:
                load_slo(self.slo)
            except QuantforgeError as error:
                raise ValueError(str(error)) from None
        return self

    @model_validator(mode="after")
    def _check_hub_repo_template(self) -> "QuantizeRequest":
        try:
            hub_repo_id(self.hub_repo_template, self.hub_namespace or "namespace", "org/model", "recipe")
        except QuantforgeError as error:
            raise ValueError(str(error).split(": ", 1)[1]) from None
        return self

    def service_objective(self) -> Slo | None:
        """The SLO of `slo`'s file, else the recipe set's own; None: no SLO gate."""
        if self.slo is not None:
            return load_slo(self.slo)
        if self.recipe is not None or self.recipes == SEARCH:
            return None
        return load_recipe_set(self.recipes).slo

    def selected_recipes(self) -> list[Recipe]:
        """The one `recipe`, or the recipes of the set narrowed to `only` when given."""
        if self.recipe is not None:
            return [self.recipe]
        if self.recipes == SEARCH:
            recipes = exploration_order(self.search_budget)
        else:
            recipes = load_recipe_set(self.recipes).recipes
        if not self.only:
            return recipes
        unknown = sorted(set(self.only) - {r.name for r in recipes})
        if unknown:
            raise QuantforgeError(f"`only`: no recipe named {', '.join(unknown)} in set {self.recipes!r}")
        return [r for r in recipes if r.name in self.only]
