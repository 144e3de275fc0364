"""QuantizeRequest: the single input of the quantize flow, validated before any work starts."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from quantforge.core.errors import QuantforgeError
from quantforge.tasks.gate import GateLimits
from quantforge.tasks.ipex_env import ipex_python
from quantforge.tasks.publish import DEFAULT_REPO_TEMPLATE, hub_repo_id
from quantforge.tasks.recipes import Recipe, load_recipe_set


class QuantizeRequest(BaseModel):
    """What to quantize, how, and how to judge it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Hub id (org/name) or local model directory")
    revision: str = Field(default="main", min_length=1, description="branch, tag or commit of a Hub model")
    recipes: str = Field(default="default", description="recipe set name or YAML path")
    only: list[str] = Field(default_factory=list, description="run just these recipes of the set")
    calibration: str | None = Field(
        default=None, description="wikitext2, c4, or a .txt/.jsonl file or folder"
    )
    evaluation: str = Field(default="wikitext2", description="wikitext2, c4, or a .txt/.jsonl file or folder")
    num_samples: int = Field(default=64, ge=1, le=4096, description="calibration samples")
    seq_len: int = Field(default=128, ge=8, le=8192, description="tokens per calibration sample")
    window: int = Field(default=512, ge=16, le=8192, description="tokens per perplexity window")
    max_eval_windows: int = Field(default=32, ge=1, description="cap on evaluation windows")
    seed: int = Field(default=0, ge=0, description="calibration sampling seed")
    new_tokens: int = Field(default=64, ge=1, le=4096, description="tokens generated for the speed test")
    export_dtype: Literal["fp16", "fp32"] = "fp16"
    gates: GateLimits = GateLimits()
    output_dir: Path = Path("quantforge-output")
    trust_remote_code: bool = False
    allow_pickle: bool = False
    hub_namespace: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="publish passing variants to the Hub under this user or organisation",
    )
    hub_private: bool = Field(default=False, description="create the Hub repos private")
    hub_repo_template: str = Field(default=DEFAULT_REPO_TEMPLATE, description="Hub repo name of each variant")
    promote_best: bool = Field(
        default=False, description="point the `champion` alias at the best passing variant's version"
    )

    @model_validator(mode="after")
    def _check_recipes(self) -> "QuantizeRequest":
        recipes = self.selected_recipes()
        needing_data = [r.name for r in recipes if r.data_aware]
        if needing_data and self.calibration is None:
            raise ValueError(
                f"`calibration` is required by data-aware recipes: {', '.join(needing_data)} "
                "(pass --calibration wikitext2, c4 or a text file)"
            )
        if any(r.backend == "ipex" for r in recipes):
            try:
                ipex_python()
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

    def selected_recipes(self) -> list[Recipe]:
        """The recipes of the set, narrowed to `only` when given."""
        recipes = load_recipe_set(self.recipes).recipes
        if not self.only:
            return recipes
        unknown = sorted(set(self.only) - {r.name for r in recipes})
        if unknown:
            raise QuantforgeError(f"`only`: no recipe named {', '.join(unknown)} in set {self.recipes!r}")
        return [r for r in recipes if r.name in self.only]
