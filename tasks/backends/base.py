"""What a backend is, and what every backend shares.

A backend makes variants one way (OpenVINO + NNCF, torchao, IPEX): it has its own recipe rules, its own
toolchain, its own way to make and to measure a variant, and its own lines in the model card. Its
variants run on a runtime (OpenVINO or PyTorch), whose baseline they are judged against.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from quantforge.core.atomic import write_json
from quantforge.core.manifest import MANIFEST_FILE, Manifest, file_entries
from quantforge.core.records import Metrics, StepUsage
from quantforge.tasks.datasets import TokenSet, shared_name
from quantforge.tasks.fetch import SourceModel
from quantforge.tasks.toolchain import installed_versions

if TYPE_CHECKING:  # recipes validate against the backends, so they import this module, not the reverse
    from quantforge.tasks.recipes import Recipe
    from quantforge.tasks.request import QuantizeRequest


@dataclass(frozen=True)
class Job:
    """One variant to make: its source, recipe and data, what identifies it and where it goes."""

    source: SourceModel
    recipe: Recipe
    calibration: TokenSet | None
    evaluation: TokenSet
    new_tokens: int | None
    identity: str  # hash of the recipe, the backend's toolchain and (data-aware) the calibration ids
    toolchain: dict[str, str]
    target: Path
    devices: tuple[str, ...] = ("CPU",)  # the OpenVINO devices this run checks the variant on
    precision: str = "f32"  # the precision its runtime scores it at (`Runtime.protocol_precision`)


class Baseline(BaseModel):
    """The unquantized source on one runtime: what that runtime's variants are judged against."""

    runtime: str
    label: str  # how the model card and the report name it
    metrics: Metrics
    folder: Path | None = None  # what variants start from, where the runtime has one (OpenVINO: the IR)
    scored: Path | None = None  # the folder measured, when not `folder` (OpenVINO's INT8 copy of a large IR)
    # its next-token distributions, kept to measure its variants' divergence; None when taken from a record
    reference: Path | None = None
    usage: StepUsage | None = None  # what preparing it cost in this run; None when nothing was prepared
    precision: str = "f32"  # the precision it and its variants are scored at (`Runtime.protocol_precision`)


@dataclass
class Made:
    """A variant's folder written: its manifest, what making it cost (None: this host's cache had it),
    and its metrics when the backend measures while making."""

    manifest: Manifest
    usage: StepUsage | None
    metrics: Metrics | None = None


class Runtime(ABC):
    """Where variants run and are measured; its baseline is measured once per run."""

    name: ClassVar[str]
    label: ClassVar[str]

    @abstractmethod
    def baseline(self, source: SourceModel, evaluation: TokenSet, request: QuantizeRequest) -> Baseline:
        """Prepare and measure the unquantized source on this runtime."""

    @abstractmethod
    def rescored(self, baseline: Baseline, source: SourceModel, evaluation: TokenSet) -> Baseline:
        """`baseline` scored on other windows (perplexity and kept distributions; its speed, which does
        not depend on them, as it was)."""

    def protocol_precision(self, requested: str) -> str:
        """The precision this runtime scores perplexity at when `requested` is asked (the request's
        `inference_precision`): PyTorch scores the fp32 model in fp32 whatever is asked."""
        return "f32"


class Backend(ABC):
    """One way of making variants; `tasks.backends.BACKENDS` names them all."""

    name: ClassVar[str]
    runtime: ClassVar[Runtime]
    packages: ClassVar[tuple[str, ...]]  # the installed packages that decide the variant's bytes
    tool: ClassVar[str]  # the quantizing tool, as the model card says it
    library_tags: ClassVar[tuple[str, str]]  # the card's `library_name` and the tool's tag
    reuses_cache: ClassVar[bool] = True  # False: a variant is always made again (measured while made)

    def check_available(self) -> None:
        """Raise QuantforgeError naming what is missing when this host cannot run the backend."""
        return None

    def recipe_problems(self, recipe: Recipe) -> list[str]:
        """What this backend cannot do with the recipe, one line per field (the bits it takes first)."""
        return []

    def check_with_tool(self, recipe: Recipe) -> None:
        """The tool's own checks of a recipe whose fields agree; raise ValueError with its message."""
        return None

    def toolchain(self) -> dict[str, str]:
        """Installed versions of `packages` (part of every variant's identity)."""
        return installed_versions(self.packages)

    def check_baseline(self, source: SourceModel, evaluation: TokenSet, baseline: Baseline) -> float | None:
        """Where the backend measures in an environment of its own: the source's perplexity there, after
        checking it agrees with the runtime's baseline. None otherwise."""
        return None

    @abstractmethod
    def make(self, job: Job, baseline: Baseline) -> Made:
        """Write the variant's folder at `job.target`, renamed into place only once complete."""

    @abstractmethod
    def measure(self, job: Job, baseline: Baseline) -> Metrics:
        """Measure the variant at `job.target` on the job's evaluation windows, against `baseline`."""

    @abstractmethod
    def usage(self, repo_id: str) -> list[str]:
        """Markdown lines: how a serving host loads the published variant."""


def write_manifest(job: Job, folder: Path) -> Manifest:
    """The variant's manifest in `folder`: lineage, identity, toolchain, every file."""
    uses_calibration = job.recipe.data_aware and job.calibration is not None
    manifest = Manifest(
        source_repo=job.source.repo,
        source_sha=job.source.sha,
        recipe_name=job.recipe.name,
        recipe=job.recipe.model_dump(mode="json"),
        recipe_hash=job.recipe.content_hash(),
        variant_identity=job.identity,
        toolchain=job.toolchain,
        calibration=shared_name(job.calibration.spec) if uses_calibration else None,
        calibration_hash=job.calibration.content_hash if uses_calibration else None,
        files=file_entries(folder),
    )
    write_json(folder / MANIFEST_FILE, manifest.model_dump(mode="json"))
    return manifest
