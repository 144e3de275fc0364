"""The by-hand way of the reference articles, for one recipe: optimum-intel export with the recipe's
quantization config (what `optimum-cli export openvino --weight-format ...` runs), then a perplexity
script with OVModelForCausalLM on the same token windows. Prints one JSON line.

    python bench/by_hand.py MODEL_DIR OUT_DIR WINDOWS.npy [--recipe NAME --calibration FILE --evaluation FILE]
"""

import json
import math
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def same_calibration_text(model_dir: Path, calibration: Path, evaluation: Path) -> list[str]:
    """The calibration samples quantforge takes by default (64 windows of 128 tokens, seed 0), as text:
    optimum-intel tokenizes each string whole, so both ways calibrate on the same tokens."""
    from transformers import AutoTokenizer

    from quantforge.tasks.datasets import calibration_samples
    from quantforge.tasks.request import QuantizeRequest

    defaults = QuantizeRequest.model_fields
    samples = calibration_samples(
        str(calibration),
        str(evaluation),
        model_dir,
        defaults["num_samples"].default,
        defaults["seq_len"].default,
        defaults["seed"].default,
    )
    return AutoTokenizer.from_pretrained(model_dir).batch_decode(samples.windows)


@app.command()
def main(
    model_dir: Path,
    out_dir: Path,
    windows: Path,
    recipe: Annotated[
        str | None, typer.Option(help="Recipe of the default set; none: fp16 baseline.")
    ] = None,
    calibration: Annotated[Path | None, typer.Option(help="Text file for data-aware recipes.")] = None,
    evaluation: Annotated[
        Path | None, typer.Option(help="The evaluation text (calibration never sees what it shares).")
    ] = None,
) -> None:
    from optimum.intel import OVModelForCausalLM

    from quantforge.tasks.backends.openvino import to_optimum_config
    from quantforge.tasks.recipes import load_recipe_set

    started = time.perf_counter()
    config = None
    if recipe:
        chosen = next(r for r in load_recipe_set("default").recipes if r.name == recipe)
        config = to_optimum_config(chosen)
        if chosen.data_aware:
            config.dataset = same_calibration_text(model_dir, calibration, evaluation)
            config.num_samples = len(config.dataset)
    model = OVModelForCausalLM.from_pretrained(
        model_dir, export=True, quantization_config=config, load_in_8bit=False, compile=False
    )
    model.save_pretrained(out_dir)
    exported = time.perf_counter()

    model = OVModelForCausalLM.from_pretrained(out_dir)
    total, count = 0.0, 0
    for window in np.load(windows):
        ids = torch.from_numpy(window[None])
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    print(
        json.dumps(
            {
                "recipe": recipe or "baseline",
                "ppl": math.exp(total / count),
                "export_seconds": exported - started,
                "eval_seconds": time.perf_counter() - exported,
            }
        )
    )


if __name__ == "__main__":
    app()
