"""model_card: the README.md pushed with a variant (front matter for the Hub, figures from the run)."""

import json

from huggingface_hub import ModelCard, ModelCardData

from quantforge.core.manifest import Manifest
from quantforge.core.records import Metrics
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.report import VariantResult, quality_cells


def model_card(
    result: VariantResult, manifest: Manifest, baseline: Baseline, evaluation: str, repo_id: str
) -> str:
    """The model card text: metadata, metrics against the baseline, recipe, lineage, how to load it."""
    is_hub_source = ":" not in manifest.source_repo
    bits = {4: "int4", 8: "int8", 16: "bf16"}[manifest.recipe.get("bits", 8)]
    library, tool = BACKENDS[result.backend].library_tags
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


def _quality(result: VariantResult, windows: int) -> list[str]:
    """The divergence figures with their intervals, where the variant has them (none in records made
    before issue 18, or on IPEX)."""
    if result.metrics.divergence is None:
        return []
    cells = quality_cells(result)
    return [
        f"Divergence from the original: mean KL divergence {cells['KLD']} nats per token (p99 "
        f"{cells['KLD p99']}), top-1 agreement {cells['top-1']} (the share of tokens whose most likely "
        f"next token is the original's). [low, high]: 95 % interval, paired bootstrap over {windows} "
        "evaluation windows.",
        "",
    ]


def _more_tokens(result: VariantResult, baseline: Baseline) -> list[str]:
    """A note when the variant's verdict needed more of the text than the run's windows."""
    tokens, first = result.metrics.perplexity.tokens_scored, baseline.metrics.perplexity.tokens_scored
    if tokens == first:
        return []
    return [
        f"The variant's figures are on {tokens} tokens: undecided on the run's {first}, it and the "
        "original were scored on more of the same text; Δ perplexity and divergence compare them there.",
        "",
    ]


def _row(name: str, metrics: Metrics, delta: str) -> str:
    speed = metrics.speed
    tokens = f"{speed.tokens_per_second:.1f}" if speed else "-"
    ttft = f"{speed.ttft_ms:.0f}" if speed else "-"
    return f"| {name} | {metrics.perplexity.ppl:.3f} | {delta} | {metrics.size_mb:.1f} | {tokens} | {ttft} |"


def _body(
    result: VariantResult, manifest: Manifest, baseline: Baseline, evaluation: str, repo_id: str
) -> str:
    backend = BACKENDS[result.backend]
    verdict = {"PASS": "passed", "FAIL": "failed", "INCONCLUSIVE": "inconclusive"}[result.verdict.outcome]
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
            f"{backend.tool} by quantforge, recipe `{manifest.recipe_name}`.",
            "",
            f"## Quality and speed ({evaluation}, {baseline.metrics.perplexity.tokens_scored} tokens scored)",
            "",
            "| model | perplexity | Δ perplexity | size MiB | decode tok/s | TTFT ms |",
            "|---|---|---|---|---|---|",
            _row(baseline.label, baseline.metrics, "-"),
            _row(manifest.recipe_name, result.metrics, quality_cells(result)["Δppl"]),
            "",
            *_more_tokens(result, baseline),
            *_quality(result, result.metrics.perplexity.windows),
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
            *backend.usage(repo_id),
            "",
            "`manifest.json` lists the sha256 of every file; `quantforge pull` checks them all.",
            "",
        ]
    )
