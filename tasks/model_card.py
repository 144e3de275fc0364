"""model_card: the README.md pushed with a variant (front matter for the Hub, figures from the run)."""

import json

from huggingface_hub import ModelCard, ModelCardData

from quantforge.core.manifest import Manifest
from quantforge.tasks.evaluate import Metrics
from quantforge.tasks.report import VariantResult


def model_card(
    result: VariantResult, manifest: Manifest, baseline: Metrics, evaluation: str, repo_id: str
) -> str:
    """The model card text: metadata, metrics against the baseline, recipe, lineage, how to load it."""
    is_hub_source = ":" not in manifest.source_repo
    bits = {4: "int4", 8: "int8", 16: "bf16"}[manifest.recipe.get("bits", 8)]
    library, tool = LIBRARY_TAGS[result.backend]
    data = ModelCardData(
        base_model=manifest.source_repo if is_hub_source else None,
        base_model_relation="quantized" if is_hub_source else None,
        library_name=library,
        pipeline_tag="text-generation",
        tags=[
            library,
            tool,
            "quantforge",
            bits,
            *(["w8a8"] if manifest.recipe.get("activations") == "int8" else []),
        ],
    )
    return str(
        ModelCard(f"---\n{data.to_yaml()}\n---\n{_body(result, manifest, baseline, evaluation, repo_id)}")
    )


# (library_name, the quantizing tool) per backend, for the card's metadata.
LIBRARY_TAGS = {
    "openvino": ("openvino", "nncf"),
    "ipex": ("pytorch", "intel-extension-for-pytorch"),
    "torchao": ("transformers", "torchao"),
}
BASELINE_LABEL = {
    "openvino": "original (OpenVINO IR)",
    "ipex": "original (PyTorch fp32)",
    "torchao": "original (PyTorch fp32)",
}
TOOL_NAME = {"openvino": "OpenVINO + NNCF", "ipex": "Intel Extension for PyTorch", "torchao": "torchao"}


def _usage(backend: str, repo_id: str) -> list[str]:
    """How a serving host loads the variant, per backend."""
    if backend == "ipex":
        return [
            "```python",
            "# in an environment with torch 2.8, intel-extension-for-pytorch 2.8 and transformers 4.51",
            "from pathlib import Path",
            "from huggingface_hub import snapshot_download",
            "from workers.ipex_worker import load_ipex_variant  # quantforge's loader (no re-quantization)",
            "from transformers import AutoTokenizer",
            f'folder = snapshot_download("{repo_id}")',
            "model, tokenizer = load_ipex_variant(Path(folder)), AutoTokenizer.from_pretrained(folder)",
            'inputs = tokenizer("What is AMX?", return_tensors="pt")',
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))",
            "```",
        ]
    if backend == "torchao":
        return [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer  # needs torchao installed",
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            "```",
        ]
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


def _row(name: str, metrics: Metrics, delta: str) -> str:
    speed = metrics.speed
    tokens = f"{speed.tokens_per_second:.1f}" if speed else "-"
    ttft = f"{speed.ttft_ms:.0f}" if speed else "-"
    return f"| {name} | {metrics.perplexity.ppl:.3f} | {delta} | {metrics.size_mb:.1f} | {tokens} | {ttft} |"


def _body(result: VariantResult, manifest: Manifest, baseline: Metrics, evaluation: str, repo_id: str) -> str:
    verdict = "passed" if result.verdict.passed else "failed"
    calibration = (
        f"{manifest.calibration} (token ids sha256 `{manifest.calibration_hash[:12]}`)"
        if manifest.calibration
        else "none (data-free)"
    )
    return "\n".join(
        [
            f"# {repo_id.rsplit('/', 1)[-1]}",
            "",
            f"`{manifest.source_repo}` at revision `{manifest.source_sha}`, quantized for Intel CPUs with "
            f"{TOOL_NAME[result.backend]} by quantforge, recipe `{manifest.recipe_name}`.",
            "",
            f"## Quality and speed ({evaluation}, {baseline.perplexity.tokens_scored} tokens scored)",
            "",
            "| model | perplexity | Δ perplexity | size MiB | decode tok/s | TTFT ms |",
            "|---|---|---|---|---|---|",
            _row(BASELINE_LABEL[result.backend], baseline, "-"),
            _row(manifest.recipe_name, result.metrics, f"{result.ppl_increase_pct:+.2f} %"),
            "",
            f"Gate {verdict}: " + "; ".join(result.verdict.reasons) + ".",
            "",
            "## Recipe",
            "",
            "```json",
            json.dumps(manifest.recipe, indent=2, sort_keys=True),
            "```",
            "",
            f"Calibration: {calibration}. Toolchain: "
            + ", ".join(f"{name} {version}" for name, version in sorted(manifest.toolchain.items()))
            + ".",
            "",
            "## Use it",
            "",
            *_usage(result.backend, repo_id),
            "",
            "`manifest.json` lists the sha256 of every file; `quantforge pull` checks them all.",
            "",
        ]
    )
