"""The IPEX worker: runs in `.venv-ipex` (torch 2.8, IPEX 2.8, transformers 4.51), driven by quantforge.

    .venv-ipex/bin/python workers/ipex_worker.py SPEC.json RESULT.json

SPEC: `action` (`baseline` or `variant`), `model_dir`, `evaluation` (.npy token windows), `calibration`
(.npy or null), `output_dir` (an empty folder the caller renames into place), `ipex` (the recipe's
spec from `tasks/backends/ipex.py`'s `to_ipex_spec`), `prompt_ids`, `new_tokens`. RESULT: perplexity,
speed and weight shares (the keys of quantforge/core/records.py's models), quantize seconds and peak
RSS. Only this environment's packages are imported here (and tasks/torch_runtime.py, which needs
nothing else).

Every variant is saved as TorchScript (`ipex_model.pt`) and measured through that saved graph, as a
serving host runs it: `load_ipex_variant(folder)` puts it behind `model.generate()`.
"""

import importlib.util
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _load_torch_runtime():
    """The IPEX environment does not install quantforge: the one module it shares is loaded from its
    file, beside this one in the repository (tasks/) as in the installed package, without putting that
    folder (whose other modules would shadow installed names) on the import path."""
    path = Path(__file__).resolve().parents[1] / "tasks" / "torch_runtime.py"
    spec = importlib.util.spec_from_file_location("torch_runtime", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


torch_runtime = _load_torch_runtime()

GRAPH_FILE = "ipex_model.pt"
SPEC_FILE = "quantforge_ipex.json"
MAX_POSITIONS = 2048  # rows of the beam-index buffer IPEX's cache expects (its examples' default)


def load_fp32(model_dir: Path):
    """The source model in fp32, with `rope_theta` read from either config form (see docs/decisions.md)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    raw = json.loads((model_dir / "config.json").read_text())
    nested = (raw.get("rope_parameters") or {}).get("rope_theta")
    if "rope_theta" not in raw and nested is not None:  # transformers 4.51 would use 10000 silently
        config.rope_theta = nested
    return AutoModelForCausalLM.from_pretrained(model_dir, config=config, torch_dtype=torch.float32).eval()


def empty_cache_inputs(config, batch: int = 1) -> tuple:
    """IPEX's indirect-access KV cache, empty: what its traced graph takes for a first token."""
    heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = config.hidden_size // config.num_attention_heads
    return tuple(
        (
            torch.zeros(1, 0, 0, 1, dtype=torch.long),
            torch.zeros(batch, heads, 1, head_dim),
            torch.zeros(batch, heads, 1, head_dim),
            torch.zeros(MAX_POSITIONS, batch, dtype=torch.long),
        )
        for _ in range(config.num_hidden_layers)
    )


def graph_inputs(config, ids: torch.Tensor) -> dict:
    """Keyword inputs of IPEX's traced graph for one sequence from a fresh cache."""
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "past_key_values": empty_cache_inputs(config, ids.shape[0]),
        "position_ids": torch.arange(ids.shape[1])[None].expand(ids.shape[0], -1),
    }


class GraphForward:
    """Calls a saved IPEX graph like a transformers model (for `torch_runtime.perplexity`)."""

    def __init__(self, graph, config) -> None:
        self.graph, self.config = graph, config

    def __call__(self, input_ids, attention_mask):
        return self.graph(**graph_inputs(self.config, input_ids))


def _qconfig(spec: dict):
    import intel_extension_for_pytorch as ipex

    if spec["mode"] == "smoothquant":
        return ipex.quantization.get_smooth_quant_qconfig_mapping(alpha=spec["alpha"])
    if spec["mode"] == "woq":
        q = ipex.quantization
        return q.get_weight_only_quant_qconfig_mapping(
            weight_dtype=q.WoqWeightDtype[spec["weight_dtype"]],
            lowp_mode=q.WoqLowpMode[spec["lowp_mode"]],
            group_size=spec["group_size"],
            weight_qscheme=q.WoqWeightQScheme[spec["weight_qscheme"]],
        )
    return None


def _dtype(spec: dict) -> torch.dtype:
    return torch.bfloat16 if spec["mode"] == "bf16" else torch.float32


def quantize(model_dir: Path, spec: dict, calibration: np.ndarray | None, work: Path):
    """The optimized model, made as the IPEX articles do; its traced graph is `model.trace_graph`."""
    import intel_extension_for_pytorch as ipex

    if spec["mode"] == "bf16" and not cpu_has_bf16():
        raise SystemExit(
            "bf16 needs a CPU with AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT, which this one lacks: "
            "ipex.llm.optimize prepacks bf16 weights and IPEX offers no other bf16 path"
        )
    model = load_fp32(model_dir)
    if spec["mode"] != "smoothquant":
        return ipex.llm.optimize(model, dtype=_dtype(spec), quantization_config=_qconfig(spec))
    from intel_extension_for_pytorch.quantization import prepare

    qconfig = _qconfig(spec)
    first = torch.from_numpy(calibration[0])[None]
    example = tuple(graph_inputs(model.config, first).values())
    calibrating = ipex.llm.optimize(model, quantization_config=qconfig, deployment_mode=False)
    prepared = prepare(calibrating, qconfig, example_inputs=example)
    with torch.no_grad():
        for window in calibration:
            prepared(*graph_inputs(model.config, torch.from_numpy(window)[None]).values())
    summary = work / "qconf_summary.json"
    prepared.save_qconf_summary(qconf_summary=str(summary))
    return ipex.llm.optimize(
        load_fp32(model_dir), quantization_config=qconfig, qconfig_summary_file=str(summary)
    )


def save_variant(model, model_dir: Path, spec: dict, out: Path) -> None:
    """TorchScript graph, config (written by transformers 4.51: top-level rope_theta), tokenizer, spec."""
    from transformers import PreTrainedTokenizerFast

    model.trace_graph.save(str(out / GRAPH_FILE))
    model.config.save_pretrained(out)
    special = json.loads((model_dir / "tokenizer_config.json").read_text())
    tokens = {k: special[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if special.get(k)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), **tokens)
    tokenizer.save_pretrained(out)
    (out / SPEC_FILE).write_text(json.dumps({"ipex": spec}, indent=2, sort_keys=True))


def load_ipex_variant(folder: Path):
    """A saved variant ready for `model.generate()`, without quantizing again (IPEX's own loading recipe).

    The graph holds the quantized weights; the randomly initialized skeleton only drives generation.
    """
    import intel_extension_for_pytorch as ipex
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = json.loads((folder / SPEC_FILE).read_text())["ipex"]
    config = AutoConfig.from_pretrained(folder)
    skeleton = AutoModelForCausalLM.from_config(config, torch_dtype=_dtype(spec)).eval()
    skeleton = ipex.llm.optimize(skeleton, dtype=_dtype(spec), deployment_mode=False)
    graph = torch.jit.freeze(torch.jit.load(str(folder / GRAPH_FILE)).eval())
    ipex._set_optimized_model_for_generation(skeleton, optimized_model=graph)
    return skeleton


def weight_shares(spec: dict, config) -> dict:
    """Linear weights in the quantized format, embeddings (and the tied head) in floating point."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    total = linear + embedding
    if spec["mode"] == "bf16":
        return {"int4": 0.0, "int8": 0.0, "float": 1.0}
    kind = "int4" if spec.get("weight_dtype") == "INT4" else "int8"
    return {"int4": 0.0, "int8": 0.0, "float": embedding / total} | {kind: linear / total}


def cpu_has_bf16() -> bool:
    """Whether IPEX's bf16 path can run on this CPU."""
    import intel_extension_for_pytorch as ipex

    return bool(ipex._C.onednn_has_bf16_support())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(spec: dict) -> dict:
    model_dir = Path(spec["model_dir"])
    if spec["action"] == "baseline":
        return {"perplexity": torch_runtime.perplexity(load_fp32(model_dir), np.load(spec["evaluation"]))}
    out = Path(spec["output_dir"])
    calibration = np.load(spec["calibration"]) if spec.get("calibration") else None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        model = quantize(model_dir, spec["ipex"], calibration, Path(work))
        save_variant(model, model_dir, spec["ipex"], out)
    quantize_seconds = time.perf_counter() - started
    del model
    served = load_ipex_variant(out)
    graph = served.trace_graph.optimized_model
    return {
        "perplexity": torch_runtime.perplexity(
            GraphForward(graph, served.config), np.load(spec["evaluation"])
        ),
        "speed": torch_runtime.decode_speed(served, np.asarray(spec["prompt_ids"]), spec["new_tokens"]),
        "weights": weight_shares(spec["ipex"], served.config),
        "quantize_seconds": quantize_seconds,
        "quantize_peak_rss_mb": peak_rss_mb(),
    }


if __name__ == "__main__":
    spec_path, result_path = map(Path, sys.argv[1:3])
    result = run(json.loads(spec_path.read_text()))
    result_path.write_text(json.dumps(result))
