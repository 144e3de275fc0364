"""export: the source model to one OpenVINO IR per (source sha, dtype, toolchain), reused by every recipe."""

import contextlib
import gc
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from quantforge.core.atomic import atomic_dir, discard
from quantforge.core.child_process import in_child_process
from quantforge.core.locks import identity_lock
from quantforge.core.manifest import is_intact, write_checksums
from quantforge.core.paths import data_dir
from quantforge.core.records import StepUsage
from quantforge.tasks.fetch import SourceModel, parameter_count, read_json_object
from quantforge.tasks.resources import measure

IR_XML = "openvino_model.xml"
IR_BIN = "openvino_model.bin"
ExportDtype = Literal["fp16", "bf16", "fp32"]
# A source from this many parameters is exported in a child process, which hands back all the export
# allocated when it ends; a smaller one in the flow's own process, which keeps ~2 bytes a parameter of it
# (+291 MiB RSS after exporting the 135 M bundled model) but skips the child's ~10 s of imports (torch,
# transformers, optimum's exporters) that the flow pays anyway to compress (docs/decisions.md).
EXPORT_APART_FROM_PARAMETERS = 300_000_000


class BaselineIR(BaseModel):
    """The unquantized IR with tokenizer IRs and configs: the baseline and every variant's starting point."""

    path: Path
    dtype: str
    usage: StepUsage | None = None  # what the export cost; None when the IR came from the cache


def source_dtype(model_dir: Path) -> ExportDtype:
    """The IR precision that keeps the source's own 16-bit weights: bf16 for a bf16 checkpoint (no cast,
    so no second copy while loading: 3.1 against 4.5 GiB peak for a 1.2 B model), fp16 otherwise."""
    config = read_json_object(model_dir / "config.json", model_dir.name)
    stored = config.get("dtype", config.get("torch_dtype"))
    return "bf16" if stored == "bfloat16" else "fp16"


def export_baseline(source: SourceModel, dtype: ExportDtype, toolchain_hash: str) -> BaselineIR:
    """Export once per (source, dtype, toolchain); a complete IR already in the cache is returned as is.
    A large source is exported in a child process: the torch model and its traced graph are gone when
    it ends."""
    target = data_dir() / "ir" / source.cache_key / f"{dtype}-{toolchain_hash[:12]}"
    # Two runs on this host (two requests for one model) export once: the second waits, then reuses.
    with identity_lock(f"ir--{source.cache_key}--{target.name}"):
        if is_intact(target):
            return BaselineIR(path=target, dtype=dtype)
        discard(target)  # truncated or altered since it was written: rebuilt, never trusted
        bytes_per_weight = 4 if dtype == "fp32" else 2
        parameters = parameter_count(source.local_dir)
        needs_bytes = int(parameters * bytes_per_weight * 1.1) + 32 * 2**20
        with measure() as usage, atomic_dir(target, needs_bytes) as tmp:
            if parameters >= EXPORT_APART_FROM_PARAMETERS:
                in_child_process(f"export of {source.repo}", _export, source.local_dir, tmp, dtype)
            else:
                with _heap_frozen():
                    _export(source.local_dir, tmp, dtype)
            write_checksums(tmp)
    return BaselineIR(path=target, dtype=dtype, usage=usage)


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """optimum's exporter runs gc.collect() four times per export. In the flow's process each full
    collection walks every object its imports made (Prefect, MLflow, torch, transformers, nncf: ~670 k
    objects, 0.42 s a collection on a 2-core AVX2 host) and more as a long process grows; frozen
    (`gc.freeze`), those are skipped and the collections walk only what the export made, which is what
    they are there to free (docs/decisions.md)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _export(model_dir: Path, out: Path, dtype: str) -> None:
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    # An OVConfig without quantization also stops optimum's automatic INT8 for models over 1 B params;
    # with dtype bf16, optimum loads a bf16 source as is and the IR keeps its bf16 weights.
    main_export(
        model_name_or_path=str(model_dir),
        output=out,
        task="text-generation-with-past",
        ov_config=OVConfig(dtype=dtype),
        convert_tokenizer=True,
        local_files_only=True,
    )
    for extra in ("generation_config.json", "chat_template.jinja"):
        if (model_dir / extra).exists() and not (out / extra).exists():
            shutil.copy2(model_dir / extra, out / extra)
