"""A Llama-3.2-1B-shaped model in bf16 (1.24 B parameters, 2.47 GB of safetensors) through export and one
INT4 recipe, within the memory bound of issue 17: the process tree's peak ≤ 1.25x the checkpoint + 1 GiB.

`make test-large` runs it (~4 min, ~8 GB of disk); `make test` leaves it out (docs/decisions.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from quantforge.tasks.resources import PeakSampler
from quantforge_testing.llama3_checkpoints import llama3_checkpoint
from tests.conftest import CALIBRATION_TEXT, EVALUATION_TEXT

pytestmark = [pytest.mark.large, pytest.mark.model]
GIB = 2**30


def test_a_1b_bf16_model_is_quantized_within_the_memory_bound_and_its_variant_serves(
    bundled_model, prefect_env, tmp_path
):
    model = llama3_checkpoint("1b", tmp_path / "llama3-1b", bundled_model)
    checkpoint = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    bound = 1.25 * checkpoint + GIB
    command = [
        str(Path(sys.executable).parent / "quantforge"),
        "run",
        str(model),
        "--recipes",
        "quick",
        "--only",
        "int4-asym-g128",
        "--calibration",
        str(CALIBRATION_TEXT),
        "--evaluation",
        str(EVALUATION_TEXT),
        "--max-eval-windows",
        "1",
        "--new-tokens",
        "4",
        "--output-dir",
        str(tmp_path / "output"),
    ]
    # A Prefect server of its own (prefect_env): the tree sampled is quantforge's alone.
    run = subprocess.Popen(command, env={**os.environ, **prefect_env}, stderr=subprocess.PIPE, text=True)
    with PeakSampler(psutil.Process(run.pid)) as sampler:
        _, stderr = run.communicate()
    assert run.returncode in (0, 1), stderr[-3000:]  # 1: the variant did not pass its gate

    (report_file,) = (tmp_path / "output").glob("*/report.json")
    report = json.loads(report_file.read_text())
    baseline = report["baselines"]["openvino"]
    assert baseline["label"] == "original (OpenVINO IR, INT8 weight-only)"  # 1 B parameters and up
    (variant,) = report["variants"]
    recorded = [baseline["usage"]["peak_pss_mb"] * 2**20, variant["quantize_peak_pss_mb"] * 2**20]
    print(
        f"checkpoint {checkpoint / GIB:.2f} GiB; peak {sampler.peak / GIB:.2f}, bound {bound / GIB:.2f} GiB"
    )
    assert max(recorded) <= sampler.peak <= bound

    import openvino_genai

    pipe = openvino_genai.LLMPipeline(variant["path"], "CPU")
    assert isinstance(pipe.generate("The capital of France is", max_new_tokens=4), str)
