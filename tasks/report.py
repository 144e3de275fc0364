"""report: the run's results as JSON, a markdown table, a Pareto plot and Prefect artifacts."""

import hashlib
import json
import math
import shutil
from pathlib import Path

from pydantic import BaseModel

from quantforge.core.atomic import write_json
from quantforge.core.records import GenerationAgreement, Interval, Metrics, Verdict
from quantforge.tasks.backends import BACKENDS
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.gate import KLD, PERCENT_CHANGE, SHARE, with_interval
from quantforge.tasks.host import describe, same_machine
from quantforge.tasks.search import SearchLog
from quantforge.tasks.slo import SloReport, SloResult, slo_cell, slo_markdown

PLOT = "pareto.png"
OUTCOME_COLOURS = {"PASS": "tab:green", "INCONCLUSIVE": "tab:orange", "FAIL": "tab:red"}


class VariantResult(BaseModel):
    """One recipe's outcome in one run."""

    recipe: str
    backend: str  # a name in tasks.backends.BACKENDS
    recipe_hash: str
    identity: str  # registry identity: source repo, source sha, recipe, toolchain, calibration
    path: Path | None  # the variant's files on this host (None: failed earlier, made elsewhere)
    reused: bool  # True when no quantization ran in this run (registry record or local cache)
    quantize_seconds: float | None  # None when nothing was quantized, in this run or the reused record's
    quantize_peak_pss_mb: float | None
    metrics: Metrics
    ppl_increase_pct: float
    verdict: Verdict
    model_name: str | None = None  # the MLflow registered model, when it passed
    model_version: int | None = None
    hub_repo: str | None = None  # set once published
    hub_commit: str | None = None
    # by OpenVINO device of its targets file: verified (compiled on this host), not verified (device absent)
    # or failed: <why>; empty when nothing was checked (not made in this run, or no targets file)
    targets: dict[str, str] = {}
    slo: SloResult | None = None  # against the run's SLO: set for the variants that passed, when it has one


class RunReport(BaseModel):
    """The whole run: source, baseline, variants, best pick and Pareto front."""

    source_repo: str
    source_sha: str
    toolchain: dict[str, dict[str, str]]  # by backend: the versions that decide its variants' bytes
    evaluation: str
    evaluation_hash: str
    eval_tokens: int
    protocol: str = "quantforge"  # the perplexity protocol (QuantizeRequest.protocol)
    calibration: str | None
    # by runtime (openvino, pytorch): the unquantized source each runtime's variants are judged against
    baselines: dict[str, Baseline]
    # by backend, where one measures in an environment of its own (ipex): the same source scored there
    backend_baseline_ppl: dict[str, float] = {}
    mlflow_run_id: str
    variants: list[VariantResult]
    best: str | None
    pareto_front: list[str]
    wall_seconds: float
    slo: SloReport | None = None  # the SLO's derivation, verdicts and capacity here, when the run has one
    search: SearchLog | None = None  # `--recipes search`: every candidate; `variants` are its front


def measured_elsewhere(result: VariantResult, baselines: dict[str, Baseline]) -> str | None:
    """Why the variant is not compared with the run's others, or None: its figures (a record reused from
    the registry) were made on another machine than its runtime's baseline in this run."""
    baseline = baselines.get(BACKENDS[result.backend].runtime.name)
    if baseline is None or same_machine(result.metrics.host, baseline.metrics.host):
        return None
    return (
        f"measured on another host ({describe(result.metrics.host)}) than this run's baseline "
        f"({describe(baseline.metrics.host)}): its Δppl is against its own baseline, measured there; "
        "left out of the best pick and the Pareto front"
    )


def compared(results: list[VariantResult], baselines: dict[str, Baseline]) -> list[VariantResult]:
    """The variants measured on the machine of their runtime's baseline: the ones best and Pareto rank."""
    return [r for r in results if measured_elsewhere(r, baselines) is None]


def pareto_front(results: list[VariantResult]) -> list[str]:
    """Variants that no other variant beats on both size and perplexity."""
    front = []
    for candidate in results:
        c_size, c_ppl = candidate.metrics.size_mb, candidate.metrics.perplexity.ppl
        dominated = any(
            o.metrics.size_mb <= c_size
            and o.metrics.perplexity.ppl <= c_ppl
            and (o.metrics.size_mb < c_size or o.metrics.perplexity.ppl < c_ppl)
            for o in results
        )
        if not dominated and math.isfinite(c_ppl):
            front.append(candidate.recipe)
    return front


def best_passing(results: list[VariantResult]) -> str | None:
    """The smallest passing variant; among equal sizes (to 0.1 MiB) the lower perplexity, then the faster.

    Quality before speed: decode speed of same-sized variants differs by noise, perplexity does not."""
    passing = [r for r in results if r.verdict.passed and (r.slo is None or r.slo.meets)]
    if not passing:
        return None
    speed = lambda r: r.metrics.speed.tokens_per_second if r.metrics.speed else 0.0  # noqa: E731
    return min(
        passing, key=lambda r: (round(r.metrics.size_mb, 1), r.metrics.perplexity.ppl, -speed(r))
    ).recipe


def generation_cell(generation: GenerationAgreement | None) -> str:
    """Greedy continuations' agreement with the baseline's, e.g. `93.8 %, 1st diff 21.4/32`; `-` where not
    measured (the PyTorch runtimes, older records)."""
    if generation is None:
        return "-"
    share = with_interval(Interval(value=generation.token_agreement), *SHARE)
    return f"{share}, 1st diff {generation.mean_first_divergence:.1f}/{generation.new_tokens}"


def quality_cells(result: VariantResult) -> dict[str, str]:
    """Δppl, mean KLD and top-1 agreement with their intervals, the p99 KLD and the greedy continuations'
    agreement, as the table shows them (a record made before issue 18 has Δppl alone, without interval)."""
    estimates = result.verdict.estimates
    delta = estimates.ppl_increase_pct if estimates else Interval(value=result.ppl_increase_pct)
    kld = estimates.mean_kld if estimates else None
    top1 = estimates.top1_agreement if estimates else None
    divergence = result.metrics.divergence
    return {
        "Δppl": with_interval(delta, *PERCENT_CHANGE),
        "KLD": with_interval(kld, *KLD) if kld else "-",
        "KLD p99": format(divergence.p99_kld, KLD[0]) if divergence else "-",
        "top-1": with_interval(top1, *SHARE) if top1 else "-",
        "greedy": generation_cell(result.metrics.generation),
    }


def table_rows(report: RunReport) -> list[dict[str, str]]:
    """One row per model (baseline first) with the figures users compare."""
    no_quality = {"Δppl": "-", "KLD": "-", "KLD p99": "-", "top-1": "-", "greedy": "-"}

    def row(
        name: str,
        backend: str,
        metrics: Metrics,
        quality: dict[str, str],
        verdict: str,
        quantize: str,
        registry: str,
    ) -> dict[str, str]:
        speed = metrics.speed
        return {
            "variant": name,
            "backend": backend,
            "ppl": f"{metrics.perplexity.ppl:.3f}",
            **quality,
            "size MiB": f"{metrics.size_mb:.1f}",
            "int4/int8/float": "/".join(f"{share:.0%}" for share in metrics.weights.model_dump().values()),
            "tok/s": f"{speed.tokens_per_second:.1f}" if speed else "-",
            "TTFT ms": f"{speed.ttft_ms:.0f}" if speed else "-",
            "quantize": quantize,
            "verdict": verdict,
            "registry": registry,
        }

    rows = [
        row(
            f"baseline ({runtime})",
            runtime,
            b.metrics,
            no_quality,
            "-",
            _cost(b.usage.seconds, b.usage.peak_pss_mb) if b.usage else "-",
            "-",
        )
        for runtime, b in report.baselines.items()
    ]
    for r in report.variants:
        quantize = "reused" if r.reused else _cost(r.quantize_seconds, r.quantize_peak_pss_mb)
        verdict = r.verdict.outcome + (" (best)" if r.recipe == report.best else "")
        verdict += " (other host)" if measured_elsewhere(r, report.baselines) else ""
        registry = f"v{r.model_version}" if r.model_version is not None else "-"
        rows.append(row(r.recipe, r.backend, r.metrics, quality_cells(r), verdict, quantize, registry))
    if report.slo is not None:  # a column of its own only in a run with an SLO
        slo_results = [None] * len(report.baselines) + [r.slo for r in report.variants]
        for cells, result in zip(rows, slo_results, strict=True):
            cells["SLO"] = slo_cell(result)
    return rows


def _cost(seconds: float, peak_pss_mb: float) -> str:
    return f"{seconds:.0f} s, {peak_pss_mb / 1024:.2f} GiB"


def markdown(report: RunReport) -> str:
    """The report as markdown: header, table, reasons."""
    rows = table_rows(report)
    lines = [
        f"# quantforge: {report.source_repo}@{report.source_sha[:12]}",
        "",
        f"Evaluation: {report.evaluation} ({report.eval_tokens} tokens, {report.protocol} protocol), "
        f"calibration: {report.calibration or '-'}; "
        f"best passing variant: **{report.best or 'none'}**; Pareto front (size vs ppl): "
        f"{', '.join(report.pareto_front) or '-'}; wall time {report.wall_seconds:.0f} s.",
        "",
        "[low, high]: 95 % interval, paired bootstrap over the evaluation windows. KLD: mean KL divergence "
        "(baseline || variant) of the next-token distributions, nats per token; top-1: share of tokens "
        "whose most likely next token is the baseline's. greedy: share of the tokens of greedy continuations "
        "of fixed prompts that are the baseline's at the same position, and the mean position of the first "
        "that is not (`-`: not measured, as on the PyTorch runtimes).",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
        *("| " + " | ".join(r.values()) + " |" for r in rows),
        "",
        "## Gate reasons",
        *(
            f"- **{v.recipe}** ({v.metrics.perplexity.tokens_scored:,} tokens): "
            + "; ".join(v.verdict.reasons)
            for v in report.variants
        ),
        "",
        "## Hosts",
        *(f"- {host}: {', '.join(names)}" for host, names in hosts(report).items()),
        *(
            f"- **{v.recipe}** {why}"
            for v in report.variants
            if (why := measured_elsewhere(v, report.baselines))
        ),
        "",
        "## Target devices",
        *(
            f"- **{v.recipe}**: " + "; ".join(f"{device} {status}" for device, status in v.targets.items())
            for v in report.variants
            if v.targets
        ),
        "",
        *([*slo_markdown(report.slo), ""] if report.slo else []),
        *([*search_markdown(report.search), ""] if report.search else []),
        "## Registered in MLflow",
        *(
            f"- **{r.recipe}**: `{r.model_name}` version {r.model_version}"
            + (f", Hub `{r.hub_repo}` commit `{r.hub_commit[:12]}`" if r.hub_repo else "")
            for r in report.variants
            if r.model_version is not None
        ),
    ]
    return "\n".join(lines) + "\n"


def search_markdown(log: SearchLog) -> list[str]:
    """The search's section: its budget and spending, then every candidate, the front's first."""
    minutes = f"{log.budget_minutes:g} min" if log.budget_minutes is not None else "no time limit"
    order = sorted(log.entries, key=lambda e: (not e.on_front, e.size_mb))
    return [
        "## Search",
        "",
        f"{len(log.entries)} of at most {log.budget_variants} candidates ({minutes}; stopped by "
        f"{log.stopped_by}) in {log.seconds:.0f} s; mean KLD on {log.proxy_windows} windows pruned those "
        f"another at most their size beat by over {log.proxy_slack:.0%}. Front (size vs Δppl): "
        f"{', '.join(log.front) or '-'}.",
        "",
        "| candidate | size MiB | proxy KLD | stage | Δppl | verdict | front | registered |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {e.recipe.name} | {e.size_mb:.1f} | {format(e.proxy_kld, KLD[0])} | {e.stage} | "
            f"{with_interval(e.ppl_increase_pct, *PERCENT_CHANGE) if e.ppl_increase_pct else '-'} | "
            f"{e.verdict or '-'} | {'yes' if e.on_front else '-'} | {'yes' if e.registered else '-'} |"
            for e in order
        ),
    ]


def hosts(report: RunReport) -> dict[str, list[str]]:
    """The rows of the report by the host that measured them (`describe`'s line), baselines first; a
    record taken from the registry says so."""
    rows = [(f"baseline ({runtime})", b.metrics) for runtime, b in report.baselines.items()]
    rows += [(r.recipe + (" (reused)" if r.reused else ""), r.metrics) for r in report.variants]
    by_host: dict[str, list[str]] = {}
    for name, metrics in rows:
        by_host.setdefault(describe(metrics.host), []).append(name)
    return by_host


def pareto_plot(report: RunReport, path: Path, previous: Path | None = None) -> None:
    """Size and decode speed against perplexity, the front joined by a line.

    The plot at `previous` is copied instead when it was drawn from the same points: drawing costs
    ~1.5 s of matplotlib, which a rerun that finds every variant registered would otherwise repeat.
    """
    points = [(f"baseline ({runtime})", b.metrics, "PASS") for runtime, b in report.baselines.items()] + [
        (r.recipe, r.metrics, r.verdict.outcome) for r in report.variants
    ]
    front = sorted(
        (r.metrics.size_mb, r.metrics.perplexity.ppl)
        for r in report.variants
        if r.recipe in report.pareto_front
    )
    drawn = [(n, m.size_mb, m.perplexity.ppl, m.speed and m.speed.tokens_per_second, o) for n, m, o in points]
    description = "quantforge pareto " + hashlib.sha256(json.dumps([drawn, front]).encode()).hexdigest()
    if previous is not None and _description(previous) == description:
        shutil.copy2(previous, path)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_size, by_speed) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, metrics, outcome in points:
        colour = OUTCOME_COLOURS[outcome]
        ppl = metrics.perplexity.ppl
        by_size.scatter(metrics.size_mb, ppl, color=colour)
        by_size.annotate(name, (metrics.size_mb, ppl), fontsize=8)
        if metrics.speed:
            by_speed.scatter(metrics.speed.tokens_per_second, ppl, color=colour)
            by_speed.annotate(name, (metrics.speed.tokens_per_second, ppl), fontsize=8)
    if front:
        by_size.plot(*zip(*front, strict=True), linestyle="--", color="grey")
    by_size.set(
        xlabel="size on disk (MiB)",
        ylabel="perplexity",
        title="size vs perplexity (green: pass, orange: inconclusive)",
    )
    by_speed.set(xlabel="decode tokens/s", ylabel="perplexity", title="speed vs perplexity")
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Description": description})
    plt.close(figure)


def _description(plot: Path) -> str | None:
    """The PNG's Description text (what `pareto_plot` drew it from); None for anything else, or nothing."""
    from PIL import Image

    try:
        with Image.open(plot) as image:
            return getattr(image, "text", {}).get("Description")
    except OSError:
        return None


def write_report(report: RunReport, folder: Path, previous: Path | None = None) -> None:
    """report.json, report.md and pareto.png into `folder`, plus Prefect artifacts when in a flow run;
    `previous` is the folder of the last report, whose plot is kept if nothing in it changed."""
    write_json(folder / "report.json", report.model_dump(mode="json"))
    if report.search is not None:
        write_json(folder / "search.json", report.search.model_dump(mode="json"))
    (folder / "report.md").write_text(markdown(report))
    pareto_plot(report, folder / PLOT, previous / PLOT if previous else None)
    _prefect_artifacts(report)


def artifact_key(*names: str) -> str:
    """`quantforge-<name>-...`: a Prefect artifact key (lowercase letters, digits and dashes only), each
    name cut to 40 characters."""
    slugs = ("".join(c if c.isascii() and c.isalnum() else "-" for c in n.lower())[:40] for n in names)
    return "-".join(["quantforge", *(s.strip("-") for s in slugs)])


def _prefect_artifacts(report: RunReport) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    key = artifact_key(report.source_repo)
    create_table_artifact(table=table_rows(report), key=f"{key}-table", description="quantforge variants")
    create_markdown_artifact(markdown=markdown(report), key=key, description="quantforge report")
