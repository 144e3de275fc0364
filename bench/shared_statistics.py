"""What sharing calibration statistics between data-aware INT4 recipes saves (nncf's `statistics_path`,
`tasks.backends.openvino.shared_statistics`): each data-aware recipe of the default set compressed from
the bundled model's IR on the default calibration samples, by nncf without the statistics, and with
them, first collected (the first recipe of a run) then loaded (every later one).

    .venv/bin/python -m bench.shared_statistics [--recipe int4-awq-se --recipe int4-gptq]

Prints and writes (bench/results/statistics-*.json) the seconds of each compression and whether the
bytes made with the statistics are those made without.
"""

import hashlib
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
CALIBRATION_TEXT = Path("/usr/share/common-licenses/GPL-2")  # the README's demo texts
EVALUATION_TEXT = Path("/usr/share/common-licenses/GPL-3")
RESULTS = Path(__file__).parent / "results"


@app.command()
def main(
    recipes: Annotated[
        list[str], typer.Option("--recipe", help="Data-aware INT4 recipes of the default set.")
    ] = [  # noqa: B006
        "int4-awq-se",
        "int4-gptq",
    ],
) -> None:
    import dataclasses

    import nncf
    import openvino as ov

    from quantforge.tasks.backends import openvino
    from quantforge.tasks.datasets import calibration_samples
    from quantforge.tasks.export import IR_BIN, IR_XML
    from quantforge.tasks.fetch import fetch_source
    from quantforge.tasks.recipes import load_recipe_set
    from quantforge_testing.bundled_model import bundled_model_dir

    source = fetch_source(str(bundled_model_dir()))
    ir = openvino.export_ir(source, "fp16").path
    calibration = calibration_samples(
        str(CALIBRATION_TEXT), str(EVALUATION_TEXT), source.local_dir, 64, 128, 0
    )
    by_name = {r.name: r for r in load_recipe_set("default").recipes}

    def compress(name: str, statistics: Path | None, out: Path) -> dict:
        model = ov.Core().read_model(ir / IR_XML)
        _, kwargs = openvino.nncf_call(by_name[name])
        kwargs["subset_size"] = len(calibration.windows)
        if statistics is not None:
            kwargs["advanced_parameters"] = dataclasses.replace(
                kwargs["advanced_parameters"], statistics_path=str(statistics)
            )
        started = time.perf_counter()
        compressed = nncf.compress_weights(
            model, dataset=openvino._calibration_dataset(model, calibration), **kwargs
        )
        seconds = time.perf_counter() - started
        ov.save_model(compressed, out / IR_XML, compress_to_fp16=False)
        return {"seconds": seconds, "sha256": hashlib.sha256((out / IR_BIN).read_bytes()).hexdigest()}

    results: dict = {"started": datetime.now(UTC).isoformat(), "samples": calibration.windows.shape}
    with tempfile.TemporaryDirectory() as work:
        statistics = Path(work, "statistics")
        for index, name in enumerate(recipes):
            runs = {}
            for mode, path in (("without", None), ("collected" if index == 0 else "loaded", statistics)):
                out = Path(work, f"{name}-{mode}")
                out.mkdir()
                runs[mode] = compress(name, path, out)
                print(name, mode, f"{runs[mode]['seconds']:.1f} s", flush=True)
            results[name] = {mode: run["seconds"] for mode, run in runs.items()}
            results[name]["same_bytes"] = len({run["sha256"] for run in runs.values()}) == 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"statistics-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    app()
