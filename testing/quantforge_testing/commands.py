"""`quantforge demo` and `quantforge bundled-model`: commands of the test support, which the `quantforge`
command registers through the `quantforge.commands` entry points (testing/pyproject.toml).

Each is a plain function whose typer parameters are its options; `quantforge.cli` is imported inside,
so loading the entry point while the CLI module initialises never imports it twice.
"""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

DEMO_SOURCE = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the bundled model, served under its Hub id
DEMO_NAMESPACE = "quantforge-demo"


def demo(
    calibration: Annotated[Path, typer.Option(help="Calibration text file.")],
    evaluation: Annotated[Path, typer.Option(help="Evaluation text file (other text).")],
    recipes: Annotated[str, typer.Option(help="Recipe set name or YAML path.")] = "default",
    output_dir: Annotated[Path, typer.Option(help="Folder for the variants and the report.")] = Path(
        "quantforge-output"
    ),
) -> None:
    """The whole chain on this machine: the bundled model served by a local Hub endpoint, quantized,
    registered in the embedded MLflow, pushed to the local Hub, and pulled back as a serving host would."""
    # Read by huggingface_hub when it is imported (below): the local Hub speaks plain LFS, not Xet.
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    import secrets

    from quantforge.cli import console, print_report, request_from, run_flow
    from quantforge.core.paths import data_dir
    from quantforge.registry.aliases import CHAMPION_ALIAS
    from quantforge.registry.pull import pull as pull_variant
    from quantforge_testing.bundled_model import bundled_model_dir
    from quantforge_testing.hub import HubServer

    token = f"hf_demo{secrets.token_hex(8)}"  # this run's only write token for the local Hub
    with HubServer(data_dir() / "demo-hub", tokens={token: "quantforge-demo"}) as hub:
        sha = hub.seed_repo(DEMO_SOURCE, bundled_model_dir(), message="SmolLM2-135M-Instruct (bundled GGUF)")
        os.environ.update({"HF_ENDPOINT": hub.url, "HF_TOKEN": token})
        console.print(f"local Hub at {hub.url} serves {DEMO_SOURCE}@{sha[:12]}")
        request = request_from(
            {
                "model": DEMO_SOURCE,
                "recipes": recipes,
                "calibration": str(calibration),
                "evaluation": str(evaluation),
                "output_dir": output_dir,
                "hub_namespace": DEMO_NAMESPACE,
                "promote_best": True,
            }
        )
        report = run_flow(request)
        print_report(report)
        best = next((v for v in report.variants if v.recipe == report.best), None)
        if best is None:
            sys.exit(1)
        console.print(f"published: {best.hub_repo} @ {best.hub_commit[:12]} (local Hub)")
        path = pull_variant(f"{best.model_name}@{CHAMPION_ALIAS}", source="hub")
        console.print(
            f"pulled {best.model_name}@{CHAMPION_ALIAS} from the Hub, every file verified: {path}",
            soft_wrap=True,
        )
    console.print(f"report and variants in {output_dir.resolve()}", soft_wrap=True)


def bundled_model() -> None:
    """Build (once) and print the path of the bundled SmolLM2-135M-Instruct model directory."""
    from quantforge.cli import console
    from quantforge_testing.bundled_model import bundled_model_dir

    console.print(str(bundled_model_dir()), soft_wrap=True)
