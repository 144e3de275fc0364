"""The error the baseline's compact form (`tasks.torch_runtime.compact`: top-k log-probs, tokens drawn
from the rest, the rest's log-mass) adds to the KL divergence: one variant of the bundled model and its
baseline IR scored side by side, window by window, the exact full-vocabulary KLD against the one from
the compact form, for several (top k, rest samples).

    .venv/bin/python -m bench.kld_topk_error [--recipe int4-asym-g128] [--windows 32] [--window 512]

Prints one JSON line: the exact mean and p99 KLD, and per form the same from it, the relative error
of the mean, and the spread (sd) and 99th percentile of the per-token error.
"""

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
EVALUATION_TEXT = Path("/usr/share/common-licenses/GPL-3")  # the tests' evaluation text


@app.command()
def main(
    recipe: Annotated[str, typer.Option(help="A recipe of the default set (data-free).")] = "int4-asym-g128",
    windows: Annotated[int, typer.Option(help="Evaluation windows.")] = 32,
    window: Annotated[int, typer.Option(help="Tokens per window.")] = 512,
    forms: Annotated[list[str], typer.Option("--form", help="TOP:SAMPLES, repeatable.")] = [  # noqa: B006
        "32:32",
        "64:64",
        "16:48",
    ],
) -> None:
    import torch

    from quantforge.tasks import torch_runtime
    from quantforge.tasks.backends import openvino
    from quantforge.tasks.datasets import evaluation_windows
    from quantforge.tasks.fetch import fetch_source
    from quantforge.tasks.openvino_measure import window_logits
    from quantforge.tasks.recipes import load_recipe_set
    from quantforge.tasks.variants import variant_job
    from quantforge_testing.bundled_model import bundled_model_dir

    source = fetch_source(str(bundled_model_dir()))
    ir = openvino.export_ir(source, "fp16")
    tokens = evaluation_windows(str(EVALUATION_TEXT), source.local_dir, window, windows)
    chosen = next(r for r in load_recipe_set("default").recipes if r.name == recipe)
    job = variant_job(source, chosen, None, tokens, None)
    if not job.target.exists():
        openvino.quantize(ir.path, job)
    baseline, variant = window_logits(ir.path, window)[0], window_logits(job.target, window)[0]
    exact, approximate = [], {form: [] for form in forms}
    with torch.inference_mode():
        for index, ids in enumerate(tokens.windows):
            log_p = torch.log_softmax(baseline(ids)[:-1].float(), dim=-1)
            log_q = torch.log_softmax(variant(ids)[:-1].float(), dim=-1)
            exact.append((log_p.exp() * (log_p - log_q)).sum(-1).numpy())
            for form in forms:
                top, samples = map(int, form.split(":"))
                kept = torch_runtime.compact(log_p, seed=index, top=top, samples=samples)
                kld, _ = torch_runtime.token_divergence(log_q, *kept)
                approximate[form].append(kld.numpy())
    full = np.concatenate(exact).astype(np.float64)
    result = {
        "recipe": recipe,
        "tokens": int(full.size),
        "exact": {"mean_kld": full.mean(), "p99_kld": np.percentile(full, 99)},
    }
    for form, values in approximate.items():
        kept = np.concatenate(values).astype(np.float64)
        result[form] = {
            "mean_kld": kept.mean(),
            "p99_kld": np.percentile(kept, 99),
            "mean_relative_error": (kept.mean() - full.mean()) / full.mean(),
            "token_error_sd": (kept - full).std(),
            "token_error_p99": np.percentile(np.abs(kept - full), 99),
        }
    print(json.dumps(result, default=float))


if __name__ == "__main__":
    app()
