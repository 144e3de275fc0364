"""The OpenVINO backend: the source exported once to an IR, compressed by NNCF as the recipe says
(through optimum-intel's configs), measured with OpenVINO and openvino_genai."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.atomic import atomic_dir, discard, link_files, write_json
from quantforge.core.child_process import in_child_process
from quantforge.core.errors import QuantforgeError
from quantforge.core.locks import identity_lock
from quantforge.core.manifest import CHECKSUMS_FILE, is_intact, write_checksums
from quantforge.core.mapped_files import pages_handed_back
from quantforge.core.pass_records import check_once
from quantforge.core.paths import data_dir
from quantforge.core.records import Metrics
from quantforge.tasks.backends.base import Backend, Baseline, Job, Made, Runtime, write_manifest
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.export import IR_BIN, IR_XML, BaselineIR, ExportDtype, export_baseline, source_dtype
from quantforge.tasks.fetch import SourceModel, parameter_count
from quantforge.tasks.openvino_measure import measure_baseline_task, measure_model_task
from quantforge.tasks.resources import measure
from quantforge.tasks.targets import write_targets
from quantforge.tasks.toolchain import installed_versions, versions_hash

if TYPE_CHECKING:
    from quantforge.tasks.recipes import Recipe
    from quantforge.tasks.request import QuantizeRequest

# optimum-cli exports a model from 1 B parameters with INT8 weights (its `_MAX_UNCOMPRESSED_SIZE`). Its
# 16-bit IR, compiled on a CPU without bf16 compute, takes twice its bytes (the weights widened to f32):
# 30 GiB for an 8 B model. Such a baseline is scored with the INT8 copy (docs/decisions.md).
INT8_BASELINE_FROM_PARAMETERS = 10**9
INT8_LABEL = "original (OpenVINO IR, INT8 weight-only)"
NNCF_STATISTICS = "nncf"  # the folder nncf dumps statistics into, inside `statistics_dir`
PACKAGES = ("openvino", "openvino-tokenizers", "nncf", "optimum-intel", "optimum", "transformers", "torch")


class OpenVinoRuntime(Runtime):
    name = "openvino"
    label = "original (OpenVINO IR)"

    def baseline(self, source: SourceModel, evaluation: TokenSet, request: QuantizeRequest) -> Baseline:
        """The source exported once per (sha, dtype, toolchain), measured like every variant: as exported,
        or its INT8 weight-only copy (`baseline_weights`)."""
        ir = task(export_ir, name="openvino-export", cache_policy=NO_CACHE)(source, request.export_dtype)
        scored = ir.path
        label = self.label
        if baseline_weights(request.baseline_weights, source) == "int8":
            scored = task(int8_copy, name="openvino-baseline-int8", cache_policy=NO_CACHE)(ir.path)
            label = INT8_LABEL
        precision = self.protocol_precision(request.inference_precision)
        metrics, reference = measure_baseline_task(scored, evaluation, request.new_tokens, precision)
        return Baseline(
            runtime=self.name,
            label=label,
            metrics=metrics,
            folder=ir.path,
            scored=scored,
            reference=reference,
            usage=ir.usage,
            precision=precision,
        )

    def rescored(self, baseline: Baseline, source: SourceModel, evaluation: TokenSet) -> Baseline:
        scored = baseline.scored or baseline.folder
        metrics, reference = measure_baseline_task(scored, evaluation, None, baseline.precision)
        metrics = metrics.model_copy(update={"speed": baseline.metrics.speed})
        return baseline.model_copy(update={"metrics": metrics, "reference": reference})

    def protocol_precision(self, requested: str) -> str:
        return requested


class OpenVinoBackend(Backend):
    name = "openvino"
    runtime = OpenVinoRuntime()
    packages = PACKAGES
    tool = "OpenVINO + NNCF"
    library_tags = ("openvino", "nncf")

    def recipe_problems(self, recipe: Recipe) -> list[str]:
        if recipe.bits not in (4, 8):
            return [f"`bits` must be 4 or 8 with backend openvino, got {recipe.bits}"]
        return []

    def check_with_tool(self, recipe: Recipe) -> None:
        _check_with_optimum(recipe)

    def make(self, job: Job, baseline: Baseline) -> Made:
        return quantize(baseline.folder, job)

    def measure(self, job: Job, baseline: Baseline) -> Metrics:
        return measure_model_task(
            job.target, job.evaluation, job.new_tokens, baseline.reference, job.precision
        )

    def usage(self, repo_id: str) -> list[str]:
        return [
            "```python",
            "import openvino_genai",
            "from huggingface_hub import snapshot_download",
            f'pipe = openvino_genai.LLMPipeline(snapshot_download("{repo_id}"), "CPU")',
            'print(pipe.generate("What is OpenVINO?", max_new_tokens=64))',
            "```",
            "",
            "```python",
            "from optimum.intel import OVModelForCausalLM",
            "from transformers import AutoTokenizer",
            f'model = OVModelForCausalLM.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            "```",
        ]


def export_ir(source: SourceModel, dtype: Literal["auto"] | ExportDtype) -> BaselineIR:
    """The source as an OpenVINO IR, exported once per (source, dtype, this backend's toolchain); `auto`
    keeps a bf16 source's precision, else fp16."""
    resolved = source_dtype(source.local_dir) if dtype == "auto" else dtype
    return export_baseline(source, resolved, versions_hash(installed_versions(PACKAGES)))


def baseline_weights(requested: Literal["auto", "full", "int8"], source: SourceModel) -> str:
    """`auto` follows optimum-cli, which exports models from 1 B parameters with INT8 weights."""
    if requested != "auto":
        return requested
    return "int8" if parameter_count(source.local_dir) >= INT8_BASELINE_FROM_PARAMETERS else "full"


def int8_copy(ir_dir: Path) -> Path:
    """The IR at `ir_dir` with every weight in per-channel asymmetric INT8 (nncf's INT8_ASYM, data-free),
    made once beside it, in a child process (the compression reads every weight of the IR)."""
    target = _int8_dir(ir_dir)
    with identity_lock(f"ir-int8--{ir_dir.parent.name}--{ir_dir.name}"):
        if is_intact(target):
            return target
        discard(target)
        with atomic_dir(target, (ir_dir / IR_BIN).stat().st_size) as tmp:
            what = f"INT8 baseline of {ir_dir.parent.name}"
            in_child_process(what, _compress, ir_dir, _int8_recipe(), None, tmp)
            write_checksums(tmp)
    return target


def quantize(ir_dir: Path, job: Job) -> Made:
    """A fresh read of the IR at `ir_dir` compressed by nncf as the job's recipe says, written at
    `job.target` with its manifest, atomically."""
    if job.recipe.data_aware and job.calibration is None:
        raise QuantforgeError(f"recipe {job.recipe.name!r} is data-aware and needs `calibration` data")
    needs_bytes = (ir_dir / IR_BIN).stat().st_size  # a compressed copy is never larger
    with atomic_dir(job.target, needs_bytes) as tmp:
        with measure() as usage:
            int8 = _int8_dir(ir_dir)
            if job.recipe.content_hash() == _int8_recipe().content_hash() and is_intact(int8):
                link_files(int8, tmp, skip=(CHECKSUMS_FILE,))  # the INT8 baseline's bytes: one copy on disk
            else:
                _compress(ir_dir, job.recipe, job.calibration, tmp)
        write_targets(tmp, job.recipe)  # the devices it runs on and their properties: in the manifest
        return Made(manifest=write_manifest(job, tmp), usage=usage)


@functools.cache
def _int8_recipe() -> Recipe:
    from quantforge.tasks.recipes import Recipe  # recipes imports the backends: not at module level

    return Recipe(name="int8-asym", bits=8)  # the default set's int8-asym


def _int8_dir(ir_dir: Path) -> Path:
    return ir_dir.with_name(f"{ir_dir.name}-int8")


def to_optimum_config(recipe: Recipe) -> Any:
    """The one translation: a Recipe as optimum-intel's config (its to_nncf_dict feeds nncf)."""
    from optimum.intel import OVQuantizationConfig, OVWeightQuantizationConfig

    if recipe.static:
        return OVQuantizationConfig(
            bits=8,
            sym=recipe.sym,
            smooth_quant_alpha=recipe.smooth_quant_alpha,
            overflow_fix=recipe.overflow_fix,
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
        sensitivity_metric=recipe.sensitivity_metric,
        group_size_fallback=recipe.group_size_fallback if recipe.bits == 4 else None,
    )


def nncf_call(recipe: Recipe) -> tuple[str, dict[str, Any]]:
    """Which nncf function the recipe runs and its keyword arguments (no dataset, no model)."""
    kwargs = to_optimum_config(recipe).to_nncf_dict()
    return ("quantize" if recipe.static else "compress_weights"), kwargs


def _check_with_optimum(recipe: Recipe) -> None:
    """optimum-intel's own checks, so nothing it would refuse gets through.

    Remembered per recipe and optimum-intel version: importing optimum-intel takes seconds (torch,
    transformers, nncf), and a rerun whose variants are all registered never needs it otherwise.
    """
    checked = data_dir() / "recipes-checked" / f"{recipe.content_hash()}-{version('optimum-intel')}"
    check_once(checked, lambda: to_optimum_config(recipe))


def statistics_dir(ir_dir: Path, calibration: TokenSet) -> Path:
    """Where the calibration statistics of the IR at `ir_dir` on exactly these samples are kept."""
    return ir_dir.with_name(f"{ir_dir.name}-statistics-{calibration.content_hash[:16]}")


@contextlib.contextmanager
def shared_statistics(ir_dir: Path, calibration: TokenSet, kwargs: dict[str, Any]) -> Iterator[None]:
    """Point nncf's `statistics_path` at the statistics every data-aware INT4 recipe of this IR and
    these samples shares: collected once (nncf then gathers what AWQ, scale estimation, LoRA correction
    and every sensitivity metric need) and loaded by every later recipe, whose bytes do not change.

    The first recipe collects them into a temporary folder that becomes `statistics_dir` only once its
    compression succeeded, under a lock: a killed collection is never loaded, and a recipe that arrives
    meanwhile waits and loads instead of collecting again.
    """
    target = statistics_dir(ir_dir, calibration)
    with identity_lock(f"statistics--{ir_dir.parent.name}--{target.name}"):
        if not is_intact(target):
            discard(target)
            with atomic_dir(target) as tmp:
                # an absent folder: nncf collects the statistics, dumps them there, then compresses
                kwargs["advanced_parameters"] = _with_statistics_path(kwargs, tmp / NNCF_STATISTICS)
                yield
                write_checksums(tmp)
            return
    kwargs["advanced_parameters"] = _with_statistics_path(kwargs, target / NNCF_STATISTICS)
    yield  # loading needs no lock: a complete statistics folder is never rewritten


def _with_statistics_path(kwargs: dict[str, Any], path: Path) -> Any:
    return dataclasses.replace(kwargs["advanced_parameters"], statistics_path=str(path))


def _calibration_dataset(model, samples: TokenSet):
    """nncf.Dataset of full-sequence inputs for the stateful IR (nncf resets the state per item)."""
    import nncf

    names = {port.get_any_name() for port in model.inputs}

    def to_inputs(ids: np.ndarray) -> dict[str, np.ndarray]:
        inputs = {
            "input_ids": ids[None],
            "attention_mask": np.ones_like(ids[None]),
            "position_ids": np.arange(ids.shape[0], dtype=np.int64)[None],
            "beam_idx": np.zeros(1, dtype=np.int32),
        }
        return {k: v for k, v in inputs.items() if k in names}

    return nncf.Dataset(list(samples.windows), to_inputs)


def _compress(baseline_dir: Path, recipe: Recipe, calibration: TokenSet | None, out: Path) -> None:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(baseline_dir / IR_XML)  # fresh read: nncf compresses in place
    function, kwargs = nncf_call(recipe)
    dataset = _calibration_dataset(model, calibration) if recipe.data_aware else None
    if dataset is not None:
        kwargs["subset_size"] = len(calibration.windows)
    shared = function == "compress_weights" and recipe.bits == 4 and dataset is not None
    # nncf reads each source weight once: the pages read are handed back (1.5 against 3.8 GiB peak
    # for INT8 weights of a 1.2 B bf16 IR, the same bytes written).
    with (
        shared_statistics(baseline_dir, calibration, kwargs) if shared else contextlib.nullcontext(),
        pages_handed_back(IR_BIN),
    ):
        if function == "quantize":
            compressed = nncf.quantize(model, calibration_dataset=dataset, **kwargs)
        else:
            compressed = nncf.compress_weights(model, dataset=dataset, **kwargs)
        ov.save_model(compressed, out / IR_XML, compress_to_fp16=False)
    for extra in baseline_dir.iterdir():
        if extra.name not in (IR_XML, IR_BIN, CHECKSUMS_FILE) and extra.is_file():
            shutil.copy2(extra, out / extra.name)
    # optimum-intel reads this to know how the weights were quantized.
    write_json(
        out / "openvino_config.json",
        {
            "quantization_config": to_optimum_config(recipe).to_dict(),
            "dtype": "int8" if recipe.bits == 8 else "int4",
        },
    )


BACKEND = OpenVinoBackend()
