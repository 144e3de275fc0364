"""quantize: a fresh read of the baseline IR, compressed by nncf as the recipe says, saved self-contained."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.atomic import atomic_dir, discard, write_json
from quantforge.core.errors import QuantforgeError
from quantforge.core.manifest import (
    CHECKSUMS_FILE,
    MANIFEST_FILE,
    Manifest,
    file_entries,
    is_intact,
)
from quantforge.core.paths import data_dir
from quantforge.tasks.datasets import TokenSet
from quantforge.tasks.export import IR_BIN, IR_XML, BaselineIR
from quantforge.tasks.fetch import SourceModel
from quantforge.tasks.recipes import Recipe, nncf_call, to_optimum_config
from quantforge.tasks.resources import StepUsage, measure
from quantforge.tasks.toolchain import toolchain, toolchain_hash


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


def variant_dir(source: SourceModel, recipe: Recipe, calibration: TokenSet | None) -> Path:
    """Where the variant of this identity lives: (source, sha, recipe hash, calibration, toolchain)."""
    identity = variant_identity(recipe, calibration)
    return data_dir() / "variants" / source.cache_key / f"{recipe.name}-{identity[:16]}"


def variant_identity(recipe: Recipe, calibration: TokenSet | None) -> str:
    """Hash of everything besides the source that decides the variant's bytes."""
    digest = hashlib.sha256(f"{recipe.content_hash()}|{toolchain_hash(recipe.backend)}".encode())
    if recipe.data_aware and calibration is not None:
        digest.update(calibration.windows.tobytes())
    return digest.hexdigest()


def is_complete(target: Path) -> bool:
    """A variant directory is reusable when every file matches its manifest (sizes and sha256)."""
    return is_intact(target)


def quantize_variant(
    source: SourceModel, baseline: BaselineIR, recipe: Recipe, calibration: TokenSet | None, target: Path
) -> tuple[Manifest, StepUsage]:
    """Write the variant directory and its manifest at `target` atomically; also return what it cost."""
    if recipe.data_aware and calibration is None:
        raise QuantforgeError(f"recipe {recipe.name!r} is data-aware and needs `calibration` data")
    needs_bytes = (baseline.path / IR_BIN).stat().st_size  # a compressed copy is never larger
    discard(target)  # an earlier copy that failed verification
    with atomic_dir(target, needs_bytes) as tmp:
        with measure() as usage:
            _compress(baseline.path, recipe, calibration, tmp)
        manifest = write_manifest(source, recipe, calibration, tmp)
    return manifest, usage


def write_manifest(
    source: SourceModel,
    recipe: Recipe,
    calibration: TokenSet | None,
    folder: Path,
) -> Manifest:
    """The variant's manifest in `folder`: lineage, identity, toolchain of its backend, every file."""
    uses_calibration = recipe.data_aware and calibration is not None
    manifest = Manifest(
        source_repo=source.repo,
        source_sha=source.sha,
        recipe_name=recipe.name,
        recipe=recipe.model_dump(mode="json"),
        recipe_hash=recipe.content_hash(),
        variant_identity=variant_identity(recipe, calibration),
        toolchain=toolchain(recipe.backend),
        calibration=calibration.spec if uses_calibration else None,
        calibration_hash=calibration.content_hash if uses_calibration else None,
        files=file_entries(folder),
    )
    write_json(folder / MANIFEST_FILE, manifest.model_dump(mode="json"))
    return manifest


def _compress(baseline_dir: Path, recipe: Recipe, calibration: TokenSet | None, out: Path) -> None:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(baseline_dir / IR_XML)  # fresh read: nncf compresses in place
    function, kwargs = nncf_call(recipe)
    dataset = _calibration_dataset(model, calibration) if recipe.data_aware else None
    if dataset is not None:
        kwargs["subset_size"] = len(calibration.windows)
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


quantize_variant_task = task(quantize_variant, name="quantize", cache_policy=NO_CACHE)
