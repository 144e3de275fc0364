"""Are the gate's 95 % intervals honest? The bundled model's baseline IR and variants are scored on every
window of an evaluation text (the flow's own measuring and caches); then random subsets of k windows
each get their Δppl, mean KLD and top-1 intervals from `tasks.gate.estimate` (the gate's own paired
bootstrap), and the bench counts how many contain the full text's figure: about 19 of 20 is right.

    .venv/bin/python -m bench.coverage [--evaluation /usr/share/common-licenses/GPL-3] [--window 512]
        [--subset-windows K] [--subsets 20] [--seed 0] [--recipe int4-asym-g128 --recipe int8-asym]

Prints a table and writes bench/results/coverage-<UTC time>.json.
"""

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from quantforge.core.records import Divergence, Interval, Metrics, Perplexity

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
EVALUATION = Path("/usr/share/common-licenses/GPL-3")  # the default evaluation text of the docs and tests
FIGURES = ("ppl_increase_pct", "mean_kld", "top1_agreement")
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def window_subset(metrics: Metrics, picked: np.ndarray) -> Metrics:
    """`metrics` as if only the windows `picked` had been scored (perplexity and divergence)."""
    scored = metrics.perplexity
    per_window = scored.tokens_scored // scored.windows
    tokens = len(picked) * per_window
    window_nll = [scored.window_nll[i] for i in picked]
    mean_nll = sum(window_nll) / tokens
    perplexity = Perplexity(
        ppl=math.exp(mean_nll),
        mean_nll=mean_nll,
        tokens_scored=tokens,
        windows=len(picked),
        window_nll=window_nll,
    )
    divergence = metrics.divergence
    if divergence is not None:
        window_kld = [divergence.window_kld[i] for i in picked]
        window_top1 = [divergence.window_top1[i] for i in picked]
        divergence = Divergence(
            **{
                **divergence.model_dump(),
                "mean_kld": sum(window_kld) / tokens,
                "top1_agreement": sum(window_top1) / tokens,
                "window_kld": window_kld,
                "window_top1": window_top1,
            }
        )
    return metrics.model_copy(update={"perplexity": perplexity, "divergence": divergence})


def subsets(windows: int, size: int, count: int, seed: int, contiguous: bool = False) -> list[np.ndarray]:
    """`count` random subsets of `size` distinct window indices out of `windows` (seeded), each sorted;
    `contiguous`: runs of `size` consecutive windows from random starts, as a run scores its text's first."""
    rng = np.random.default_rng(seed)
    if contiguous:
        return [start + np.arange(size) for start in rng.integers(0, windows - size + 1, size=count)]
    return [np.sort(rng.choice(windows, size=size, replace=False)) for _ in range(count)]


def covers(interval: Interval, value: float) -> bool:
    """Whether `value` lies within `interval`'s bounds (ends included)."""
    return interval.low is not None and interval.high is not None and interval.low <= value <= interval.high


def coverage(variant: Metrics, baseline: Metrics, picks: list[np.ndarray]) -> dict:
    """Per figure: its full-text value, each subset's interval, and how many of them contain that value."""
    from quantforge.tasks.gate import estimate

    full = estimate(variant, baseline)
    found = [estimate(window_subset(variant, p), window_subset(baseline, p)) for p in picks]
    result = {}
    for figure in (f for f in FIGURES if getattr(full, f) is not None):  # no divergence: Δppl alone
        value = getattr(full, figure).value
        intervals = [getattr(f, figure) for f in found]
        result[figure] = {
            "full_text": value,
            "covered": sum(covers(i, value) for i in intervals),
            "subsets": len(intervals),
            "intervals": [[i.value, i.low, i.high] for i in intervals],
            "mean_width": float(np.mean([i.high - i.low for i in intervals])),
            "below": sum(i.high < value for i in intervals),  # the interval misses low
        }
    return result


@app.command()
def main(
    evaluation: Annotated[
        Path, typer.Option(help="Evaluation text: a .txt/.jsonl file or folder.")
    ] = EVALUATION,
    window: Annotated[int, typer.Option(help="Tokens per window.")] = 512,
    max_windows: Annotated[int, typer.Option(help="At most this many windows of the text.")] = 100_000,
    subset_windows: Annotated[
        int | None, typer.Option(help="Windows per subset (k); default a quarter of the text's, at most 32.")
    ] = None,
    count: Annotated[int, typer.Option("--subsets", help="Random subsets.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the subsets.")] = 0,
    contiguous: Annotated[
        bool, typer.Option(help="Subsets of consecutive windows (random starts) instead of random windows.")
    ] = False,
    recipes: Annotated[
        list[str], typer.Option("--recipe", help="Recipe of the default set (data-free), repeatable.")
    ] = ["int4-asym-g128", "int8-asym"],  # noqa: B006
) -> None:
    from quantforge.tasks.backends import openvino
    from quantforge.tasks.datasets import evaluation_windows
    from quantforge.tasks.fetch import fetch_source
    from quantforge.tasks.openvino_measure import measure_baseline, measure_model
    from quantforge.tasks.recipes import load_recipe_set
    from quantforge.tasks.variants import variant_job
    from quantforge_testing.bundled_model import bundled_model_dir

    started, clock = datetime.now(UTC), time.perf_counter()
    source = fetch_source(str(bundled_model_dir()))
    ir = openvino.export_ir(source, "fp16")
    tokens = evaluation_windows(str(evaluation), source.local_dir, window, max_windows)
    windows = len(tokens.windows)
    size = subset_windows or min(32, windows // 4)
    if not 2 <= size < windows:
        raise typer.BadParameter(
            f"{size} windows of {windows} cannot be resampled", param_hint="--subset-windows"
        )
    baseline, kept = measure_baseline(ir.path, tokens, None, "f32")
    picks = subsets(windows, size, count, seed, contiguous)
    known = {r.name: r for r in load_recipe_set("default").recipes}
    results = {}
    for name in recipes:
        job = variant_job(source, known[name], None, tokens, None)
        if not job.target.exists():
            openvino.quantize(ir.path, job)
        results[name] = coverage(measure_model(job.target, tokens, None, kept, "f32"), baseline, picks)
    seconds = time.perf_counter() - clock
    kind = "contiguous" if contiguous else "random"
    title = f"{evaluation}: {windows} windows of {window} tokens; {count} {kind} subsets of {size}"
    table = Table(title=title)
    for column in ("variant", "figure", "full text", "covered", "mean width", "missed low / high"):
        table.add_column(column)
    for name, figures in results.items():
        for figure, row in figures.items():
            missed_high = row["subsets"] - row["covered"] - row["below"]
            table.add_row(
                name,
                figure,
                f"{row['full_text']:.4g}",
                f"{row['covered']} of {row['subsets']}",
                f"{row['mean_width']:.3g}",
                f"{row['below']} / {missed_high}",
            )
    Console(width=120).print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"coverage-{started:%Y%m%dT%H%M%SZ}.json"
    record = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": seconds,
        "evaluation": str(evaluation),
        "window": window,
        "windows": windows,
        "subset_windows": size,
        "seed": seed,
        "sampling": kind,
        "subsets": [p.tolist() for p in picks],
        "variants": results,
    }
    path.write_text(json.dumps(record) + "\n")
    print(f"{path.relative_to(REPO)}; {seconds:.0f} s")


if __name__ == "__main__":
    app()
