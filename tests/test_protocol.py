"""The perplexity protocol: the OpenVINO baseline agrees with an independent PyTorch computation."""

import math

import numpy as np
import pytest
import torch

from quantforge.tasks.backends.openvino import export_ir
from quantforge.tasks.datasets import evaluation_windows
from quantforge.tasks.fetch import fetch_source
from quantforge.tasks.openvino_measure import perplexity, weight_shares
from tests.conftest import EVALUATION_TEXT

pytestmark = pytest.mark.model


def test_openvino_baseline_matches_pytorch_within_half_a_percent(bundled_model):
    from transformers import AutoModelForCausalLM

    source = fetch_source(str(bundled_model))
    windows = evaluation_windows(str(EVALUATION_TEXT), source.local_dir, 512, 4)  # numerics, not statistics
    baseline = export_ir(source, "fp16")
    ov_ppl = perplexity(baseline.path, windows).ppl

    model = AutoModelForCausalLM.from_pretrained(source.local_dir, dtype=torch.float32).eval()
    losses = []
    with torch.no_grad():
        for window in windows.windows:
            ids = torch.from_numpy(window[None])
            losses.append(model(ids, labels=ids).loss.item())  # mean NLL of tokens 1..511
    torch_ppl = math.exp(float(np.mean(losses)))
    assert 10 < torch_ppl < 40  # English prose on a working tokenizer (the broken GGUF one gives ~1e5)
    assert abs(ov_ppl / torch_ppl - 1) < 0.005
    assert weight_shares(baseline.path).float == 1.0
    assert export_ir(source, "fp16").usage is None  # exported once per source sha
