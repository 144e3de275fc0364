"""The by-hand way of the reference articles, for one recipe: optimum-intel export with the recipe's
quantization config (what `optimum-cli export openvino --weight-format ...` runs), then a perplexity
script with OVModelForCausalLM on the same token windows. Prints one JSON line.

    python bench/by_hand.py MODEL_DIR OUT_DIR WINDOWS.npy [--recipe NAME] [--calibration FILE]
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


@app.command()
def main(
    model_dir: Path,
    out_dir: Path,
    windows: Path,
    recipe: Annotated[
        str | None, typer.Option(help="Recipe of the default set; none: fp16 baseline.")
    ] = None,
    calibration: Annotated[Path | None, typer.Option(help="Text file for data-aware recipes.")] = None,
    num_samples: int = 64,
) -> None:
    from optimum.intel import OVModelForCausalLM

    from tasks.recipes import load_recipe_set, to_optimum_config

    started = time.perf_counter()
    config = None
    if recipe:
        chosen = next(r for r in load_recipe_set("default").recipes if r.name == recipe)
        config = to_optimum_config(chosen)
        if chosen.data_aware:
            paragraphs = [p.strip() for p in calibration.read_text().split("\n\n") if len(p.strip()) > 80]
            config.dataset = paragraphs[:num_samples]
            config.num_samples = min(num_samples, len(config.dataset))
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
