"""model_card: the README.md pushed with a variant (front matter for the Hub, figures from the run).

What the card says about data names Hub datasets by id and describes local text by its token ids'
hash: the card is public, the paths of the machine that made the variant are not.
"""

import json
import re
from collections.abc import Mapping
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, metadata_load
from huggingface_hub.repocard_data import CardData
from prefect import task
from pydantic import BaseModel

from quantforge.core.hub import hub_api
from quantforge.core.manifest import Manifest
from quantforge.core.records import Metrics
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.datasets import HUB_DATASETS, Protocol, Role
from quantforge.tasks.fetch import HUB_READ_RETRIES, SourceModel
from quantforge.tasks.host import describe, same_machine
from quantforge.tasks.report import VariantResult, quality_cells
from quantforge.tasks.slo import slo_card_lines
from quantforge.tasks.targets import read_targets

# The license ids the Hub accepts in a card: it refuses a commit whose README.md names another (the list of
# its "must be one of" answer, huggingface/huggingface_hub#4218, as hub-docs' repositories-licenses.md).
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c
    ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa
    unlicense zlib pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3
    llama3.1 llama3.2 llama3.3 llama4 grok2-community gemma unknown other""".split()
)
# What a license id or name looks like; a source card's value of any other shape is not copied into ours.
LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
LICENSE_LINK = re.compile(r"https://\S{1,300}")
# Real model cards are kilobytes to a few hundred; a larger README.md is not read for its license.
MAX_CARD_BYTES = 2**20


class DatasetRef(BaseModel):
    """A dataset as the card names it: a Hub dataset (id, config, split, files) or local text, described
    by its token ids' hash and never by its path."""

    hub_id: str | None  # None: local text
    config: str | None = None
    split: str | None = None
    data_files: str | None = None
    description: str


class CardContext(BaseModel):
    """What the card says beyond the variant's own files and record."""

    repo_id: str
    endpoint: str  # the Hub the card is pushed to (without credentials): model-index's source URL
    evaluation: DatasetRef
    source_license: dict[str, str] = {}  # `license` (+ `license_name`, `license_link`); {} when unknown


def dataset_ref(
    spec: str, content_hash: str | None, role: Role, protocol: Protocol = "quantforge"
) -> DatasetRef:
    """How the card names the dataset `spec` of `role`: its Hub id where it is a named one, and the
    papers' protocol where the run scored it under that one."""
    digest = f"token ids sha256 {content_hash[:12]}" if content_hash else "token ids not recorded"
    if protocol != "quantforge":
        digest = f"{protocol} protocol (the GPTQ/AWQ papers' windows), {digest}"
    if spec not in HUB_DATASETS:
        return DatasetRef(hub_id=None, description=f"local text, {digest}")
    entry = HUB_DATASETS[spec]
    split = entry[role]
    files = entry.get("data_files", {}).get(split)
    where = files or f"{entry['name']}, {split} split"
    return DatasetRef(
        hub_id=entry["path"],
        config=entry.get("name"),
        split=split,
        data_files=files,
        description=f"{entry['path']} ({where}), {digest}",
    )


def license_fields(metadata: Mapping | CardData | None) -> dict[str, str]:
    """The license fields of a card's metadata as the Hub accepts them: a listed id as it is, another
    well-formed id as `other` named so; {} for anything else."""
    value = metadata.get("license") if metadata is not None else None
    if not _is_license_id(value):
        return {}
    if value in HUB_LICENSES - {"other"}:
        return {"license": value}
    name = metadata.get("license_name") if value == "other" else value
    link = metadata.get("license_link")
    return {
        "license": "other",
        **({"license_name": name} if _is_license_id(name) else {}),
        **({"license_link": link} if isinstance(link, str) and LICENSE_LINK.fullmatch(link) else {}),
    }


def _is_license_id(value: object) -> bool:
    return isinstance(value, str) and LICENSE_ID.fullmatch(value) is not None


def _local_card_metadata(path: Path) -> dict | None:
    """The front matter of a local README.md; None when absent, too large or not a YAML mapping."""
    if not path.is_file() or path.stat().st_size > MAX_CARD_BYTES:
        return None
    try:
        return metadata_load(path)
    except (ValueError, yaml.YAMLError, RecursionError):  # not UTF-8, not YAML, not a mapping
        return None


def source_license(source: SourceModel) -> dict[str, str]:
    """The source's license as its card states it: a local folder's README.md, or the card data the Hub
    parsed from the README.md of the pinned commit (quantforge never downloads that file)."""
    if ":" in source.repo:  # `local:NAME`
        return license_fields(_local_card_metadata(source.local_dir / "README.md"))
    return license_fields(hub_api().model_info(source.repo, revision=source.sha).card_data)


source_license_task = task(source_license, name="source-license", **HUB_READ_RETRIES)


def _figure(value: float) -> float:
    """A measured figure to six significant digits, as YAML shows it."""
    return float(f"{value:.6g}")


def eval_results(result: VariantResult, evaluation: DatasetRef, source_url: str) -> list[EvalResult]:
    """The variant's measured figures in the Hub's eval-results format: perplexity, and mean KL divergence
    and top-1 agreement with the original where measured."""
    perplexity, divergence = result.metrics.perplexity, result.metrics.divergence
    figures = [("perplexity", "Perplexity", perplexity.ppl)]
    if divergence is not None:
        figures += [
            ("kl_divergence", "Mean KL divergence from the original (nats per token)", divergence.mean_kld),
            ("top1_agreement", "Top-1 agreement with the original", divergence.top1_agreement),
        ]
    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=evaluation.hub_id or "local-text",
            dataset_name=evaluation.description,
            dataset_config=evaluation.config,
            dataset_split=evaluation.split,
            dataset_args={"data_files": evaluation.data_files} if evaluation.data_files else None,
            metric_type=metric,
            metric_name=name,
            metric_value=_figure(value),
            metric_args={"tokens": perplexity.tokens_scored, "windows": perplexity.windows},
            source_name="quantforge",
            source_url=source_url,
        )
        for metric, name, value in figures
    ]


def model_card(result: VariantResult, manifest: Manifest, baseline: Baseline, context: CardContext) -> str:
    """The model card text: metadata, metrics against the baseline, recipe, lineage, how to load it."""
    is_hub_source = ":" not in manifest.source_repo
    bits = {4: "int4", 8: "int8", 16: "bf16"}[manifest.recipe.get("bits", 8)]
    library, tool = BACKENDS[result.backend].library_tags
    calibration = _calibration(manifest)
    datasets = [d.hub_id for d in (calibration, context.evaluation) if d is not None and d.hub_id]
    data = ModelCardData(
        base_model=manifest.source_repo if is_hub_source else None,
        base_model_relation="quantized" if is_hub_source else None,
        library_name=library,
        pipeline_tag="text-generation",
        datasets=list(dict.fromkeys(datasets)) or None,
        tags=[
            library,
            tool,
            "quantforge",
            bits,
            *(["w8a8"] if manifest.recipe.get("activations") == "int8" else []),
        ],
        model_name=context.repo_id.rsplit("/", 1)[-1],
        eval_results=eval_results(result, context.evaluation, f"{context.endpoint}/{context.repo_id}"),
        **context.source_license,
    )
    body = _body(result, manifest, baseline, context, calibration)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def _calibration(manifest: Manifest) -> DatasetRef | None:
    """The calibration data of a data-aware variant, as the card names it."""
    if not manifest.calibration:
        return None
    return dataset_ref(manifest.calibration, manifest.calibration_hash, "calibration")


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


def _generation(result: VariantResult) -> list[str]:
    """The greedy continuations' agreement with the original's, where it was measured (OpenVINO)."""
    generation = result.metrics.generation
    if generation is None:
        return []
    return [
        f"Generation agreement: greedy continuations of {generation.prompts} fixed prompts "
        f"({generation.new_tokens} new tokens each, through the chat template where the model has one): "
        f"{generation.token_agreement * 100:.1f} % of the tokens are the original's at the same position; "
        f"the first that is not comes at position {generation.mean_first_divergence:.1f} on average "
        f"({generation.new_tokens}: none differs).",
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


def _hosts(result: VariantResult, baseline: Baseline) -> list[str]:
    """Which machine measured the figures (and the original's, where another did)."""
    line = f"Measured on: {describe(result.metrics.host)}"
    if not same_machine(result.metrics.host, baseline.metrics.host):
        line += f"; the original on: {describe(baseline.metrics.host)}"
    return [line + ".", ""]


def target_snippets(result: VariantResult, repo_id: str) -> list[str]:
    """For each device of the variant's `openvino_targets.json`: how a serving host loads it there with its
    properties, and whether the host that made it compiled it there."""
    targets = read_targets(result.path) if result.path is not None else {}
    lines = []
    for device, properties in targets.items():
        checked = result.targets.get(device)
        status = f"{checked} on the host that made it" if checked else "not checked by the run that made it"
        lines += [
            f"**{device}**: {status}.",
            "",
            "```python",
            "import openvino_genai",
            "from huggingface_hub import snapshot_download",
            f'folder = snapshot_download("{repo_id}")',
            f"properties = {json.dumps(properties)}  # CACHE_DIR: a folder of the serving host",
            f'pipe = openvino_genai.LLMPipeline(folder, "{device}", properties)',
            "```",
            "",
        ]
    return lines


def _row(name: str, metrics: Metrics, delta: str) -> str:
    speed = metrics.speed
    tokens = f"{speed.tokens_per_second:.1f}" if speed else "-"
    ttft = f"{speed.ttft_ms:.0f}" if speed else "-"
    return f"| {name} | {metrics.perplexity.ppl:.3f} | {delta} | {metrics.size_mb:.1f} | {tokens} | {ttft} |"


def _body(
    result: VariantResult,
    manifest: Manifest,
    baseline: Baseline,
    context: CardContext,
    calibration: DatasetRef | None,
) -> str:
    backend = BACKENDS[result.backend]
    repo_id, evaluation = context.repo_id, context.evaluation.description
    verdict = {"PASS": "passed", "FAIL": "failed", "INCONCLUSIVE": "inconclusive"}[result.verdict.outcome]
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
            *_hosts(result, baseline),
            *_more_tokens(result, baseline),
            *_quality(result, result.metrics.perplexity.windows),
            *_generation(result),
            f"Gate {verdict}: " + "; ".join(result.verdict.reasons) + ".",
            *(["", *slo_card_lines(result.slo)] if result.slo else []),
            "",
            "## Recipe",
            "",
            "```json",
            json.dumps(manifest.recipe, indent=2, sort_keys=True),
            "```",
            "",
            f"Calibration: {calibration.description if calibration else 'none (data-free)'}. Toolchain: "
            + ", ".join(f"{name} {version}" for name, version in sorted(manifest.toolchain.items()))
            + ".",
            "",
            "## Use it",
            "",
            *backend.usage(repo_id),
            "",
            *(["## Target devices", "", *snippets] if (snippets := target_snippets(result, repo_id)) else []),
            "`manifest.json` lists the sha256 of every file; `quantforge pull` checks them all.",
            "",
        ]
    )
