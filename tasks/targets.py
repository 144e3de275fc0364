"""Device profiles: what a target device (CPU, GPU, NPU) asks of a recipe, the runtime config a serving host
passes it, and how a variant is checked there.

Every OpenVINO variant carries `openvino_targets.json`: for each device whose profile its recipe meets, the
properties to pass (`openvino_genai.LLMPipeline(folder, device, properties)`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.atomic import write_json
from quantforge.tasks.export import IR_XML

if TYPE_CHECKING:  # recipes validate against the profiles, so they import this module, not the reverse
    from quantforge.tasks.recipes import Recipe


class Target(StrEnum):
    """A device variants are made for (an enum, not a Literal: `--target` is a list option, which typer
    builds from an enum only)."""

    CPU = "cpu"
    GPU = "gpu"
    NPU = "npu"


TARGETS_FILE = "openvino_targets.json"
VERIFIED = "verified"
NOT_VERIFIED = "not verified (device absent)"
# A serving host's own folder: the cache is where it compiles, never part of the variant's files.
HOST_ONLY = ("CACHE_DIR",)


@dataclass(frozen=True)
class Profile:
    """One target device: OpenVINO's name for it, the properties a serving host passes, how a variant is
    checked there, and the recipe fields it requires (field: allowed values and why)."""

    device: str
    properties: dict[str, str | int]
    check: Literal["compile_model", "LLMPipeline"]
    source: str  # where OpenVINO documents the properties and requirements
    requires: dict[str, tuple[tuple[Any, ...], str]] = field(default_factory=dict)


PROFILES: dict[Target, Profile] = {
    # One request at a time on all cores, as quantforge measures; f32 so every CPU computes alike (the
    # plugin computes in bf16 or f16 where the CPU does natively, which its docs say can cost LLMs
    # accuracy); seed 000's ov_config.
    Target.CPU: Profile(
        device="CPU",
        properties={
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f32",
            "CACHE_DIR": "model_cache",
        },
        check="compile_model",
        source="https://github.com/openvinotoolkit/openvino/blob/master/docs/articles_en/openvino-workflow/running-inference/inference-devices-and-modes/cpu-device.rst",
    ),
    # f16 is the GPU plugin's precision for an f16 IR; seed 000 passes f32 for Phi-2 (an override a host
    # makes per model). The docs recommend a permanent cache: GPU kernels compile per shape.
    Target.GPU: Profile(
        device="GPU",
        properties={
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f16",
            "CACHE_DIR": "model_cache",
        },
        check="compile_model",
        source="https://github.com/openvinotoolkit/openvino/blob/master/docs/articles_en/openvino-workflow/running-inference/inference-devices-and-modes/gpu-device.rst",
    ),
    # The NPU plugin computes in FP16 (no precision hint), its NUM_STREAMS is read-only and LATENCY is its
    # default hint (npu-device.rst, beside the source below). It runs static shapes only: LLMPipeline
    # reshapes the LLM to a prompt of MAX_PROMPT_LEN and an answer of at least MIN_RESPONSE_LEN tokens
    # (the documented defaults, written so a host sees the context it gets). Compiling takes long: the
    # docs recommend CACHE_DIR.
    Target.NPU: Profile(
        device="NPU",
        properties={"CACHE_DIR": "model_cache", "MAX_PROMPT_LEN": 1024, "MIN_RESPONSE_LEN": 128},
        check="LLMPipeline",
        source="https://github.com/openvinotoolkit/openvino/blob/master/docs/articles_en/openvino-workflow-generative/inference-with-genai/inference-with-genai-on-npu.rst",
        # "LLMs must be exported with": symmetric 4-bit weights, channel-wise (-1) or groups of 128, ratio 1.0
        # (the same page, OpenVINO 2026.3). Asymmetric group-wise INT4 crashes the NPU compiler.
        requires={
            "bits": ((4,), "LLMs on NPU take 4-bit weights"),
            "sym": ((True,), "the NPU compiler takes symmetric INT4 weights only"),
            "group_size": ((None, -1, 128), "channel-wise or groups of 128"),
            "group_size_fallback": (("ignore", "error"), "adjust picks group sizes other than 128"),
            "ratio": ((1.0,), "every weight of the ratio in INT4"),
        },
    ),
}


def target_problems(recipe: Recipe, target: Target) -> list[str]:
    """What the target device refuses in the recipe, one line per field."""
    device = PROFILES[target].device
    if recipe.backend != "openvino" and target != "cpu":
        return [
            f"`backend` must be openvino on {device} ({recipe.backend} runs on the CPU), got {recipe.backend}"
        ]
    problems = []
    for name, (allowed, why) in PROFILES[target].requires.items():
        value = getattr(recipe, name)
        if name == "group_size_fallback" and recipe.group_size != 128:
            continue  # channel-wise has no group to fall back from; other groups are refused as such
        if value not in allowed:
            wanted = " or ".join(json.dumps(a) for a in allowed)
            problems.append(f"`{name}` must be {wanted} on {device} ({why}), got {json.dumps(value)}")
    return problems


def refused_for_targets(recipes: Sequence[Recipe], targets: Sequence[Target]) -> str | None:
    """One line naming each recipe without a `target` of its own that one of the run's targets refuses."""
    refused = [
        f"`targets` {target}: recipe {recipe.name!r}: {'; '.join(problems)}"
        for target in dict.fromkeys(targets)
        for recipe in recipes
        if recipe.target is None and (problems := target_problems(recipe, target))
    ]
    return "; ".join(refused) or None


def runtime_config(recipe: Recipe) -> dict[str, dict[str, str | int]]:
    """By OpenVINO device, what a serving host passes: each device whose profile the recipe meets."""
    return {p.device: p.properties for name, p in PROFILES.items() if not target_problems(recipe, name)}


def write_targets(folder: Path, recipe: Recipe) -> None:
    """The variant's targets file, next to its IR."""
    write_json(folder / TARGETS_FILE, runtime_config(recipe))


def read_targets(folder: Path) -> dict[str, dict[str, str | int]]:
    """The variant's targets file; empty for a variant made before there was one."""
    path = folder / TARGETS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def verify_targets(
    folder: Path, devices: Sequence[str], available: Sequence[str] | None = None
) -> dict[str, str]:
    """Each of `devices` the variant's targets file holds: verified (compiled there with its properties,
    the cache left out), not verified (absent from `available`, default this host's), or failed."""
    import openvino as ov

    targets = read_targets(folder)
    if not targets:
        return {}
    host = ov.Core().available_devices if available is None else available
    present = {name.split(".")[0] for name in host}  # GPU.0, GPU.1: the GPU
    return {
        device: _checked(folder, device, targets[device]) if device in present else NOT_VERIFIED
        for device in devices
        if device in targets
    }


def _checked(folder: Path, device: str, properties: dict[str, str | int]) -> str:
    """Compile the variant on `device` as its profile says; `failed: <first line>` if the plugin refuses."""
    import openvino as ov

    config = {k: v for k, v in properties.items() if k not in HOST_ONLY}
    check = next(p.check for p in PROFILES.values() if p.device == device)
    try:
        if check == "LLMPipeline":  # NPU: static shapes, which the pipeline makes
            import openvino_genai

            openvino_genai.LLMPipeline(str(folder), device, config)
        else:
            ov.Core().compile_model(folder / IR_XML, device, config)
    except RuntimeError as error:  # OpenVINO's message follows a line naming its own source file
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        said = [line for line in lines if not line.startswith("Exception from ")]
        return f"failed: {said[0][:200] if said else type(error).__name__}"
    return VERIFIED


verify_targets_task = task(verify_targets, name="openvino-verify-targets", cache_policy=NO_CACHE)
