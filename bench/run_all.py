"""quantforge against the by-hand way, and its models against PyTorch: every figure of
docs/benchmarks.md in one command. Writes bench/results/<UTC time>.json and regenerates the doc.

    .venv/bin/python -m bench.run_all [--repeats 2] [--sweep-repeats 1] [--scaling 1b,3b,8b]
                                      [--only evaluation,pull,...]

Comparisons alternate A and B inside this one session and report medians. Each measured command runs
in a fresh subprocess; peak memory is the whole process tree's PSS, sampled by
`tasks.resources.PeakSampler` (every 50 ms, or less often when a sample itself is slow).
"""

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import psutil
import typer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CALIBRATION = Path("/usr/share/common-licenses/GPL-2")
EVALUATION = Path("/usr/share/common-licenses/GPL-3")
RESULTS = REPO / "bench" / "results"
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def measured(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `command`; its wall time, the peak memory of its process tree, and its stdout."""
    from quantforge.tasks.resources import PeakSampler

    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    started = time.perf_counter()
    with PeakSampler(psutil.Process(process.pid)) as sampler:
        stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode not in (0, 1):  # quantforge exits 1 when no variant passes
        raise RuntimeError(f"{command[:3]} failed ({process.returncode}): {stderr[-3000:]}")
    return {"seconds": seconds, "peak_pss_mb": sampler.peak / 2**20, "stdout": stdout}


def fresh_env(home: Path) -> dict[str, str]:
    """Fresh caches: a new data directory (so a new embedded MLflow) and a new Hub cache."""
    return {"QUANTFORGE_HOME": str(home), "HF_HOME": str(home / "hf"), "MLFLOW_TRACKING_URI": ""}


def quantforge_sweep(model: str, home: Path, *args: str) -> dict:
    command = [
        str(BIN / "quantforge"),
        "run",
        model,
        "--calibration",
        str(CALIBRATION),
        "--evaluation",
        str(EVALUATION),
    ]
    return measured([*command, "--output-dir", str(home / "output"), *args], fresh_env(home))


def by_hand_sweep(model_dir: Path, windows: Path, work: Path, recipes: list[str]) -> dict:
    """Baseline + every recipe, one optimum export and one perplexity script each, as the articles do."""
    steps, seconds, peak = [], 0.0, 0.0
    for recipe in [None, *recipes]:
        args = [
            sys.executable,
            str(REPO / "bench" / "by_hand.py"),
            str(model_dir),
            str(work / (recipe or "fp16")),
            str(windows),
        ]
        if recipe:
            args += ["--recipe", recipe, "--calibration", str(CALIBRATION), "--evaluation", str(EVALUATION)]
        run = measured(args, {"PYTHONPATH": str(REPO)})
        steps.append(json.loads(run["stdout"].strip().splitlines()[-1]))
        seconds += run["seconds"]
        peak = max(peak, run["peak_pss_mb"])
    return {"seconds": seconds, "peak_pss_mb": peak, "steps": steps}


def sweep_comparison(model_dir: Path, windows: Path, repeats: int) -> dict:
    """1. The default set through quantforge (fresh caches) vs by hand, alternating."""
    from quantforge.tasks.recipes import load_recipe_set

    recipes = [r.name for r in load_recipe_set("default").recipes]
    ours, theirs, reports = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as home:
            run = quantforge_sweep(str(model_dir), Path(home), "--recipes", "default")
            ours.append(run["seconds"])
            (report,) = Path(home, "output").glob("*/report.json")
            reports.append(json.loads(report.read_text()))
        with tempfile.TemporaryDirectory() as work:
            by_hand = by_hand_sweep(model_dir, windows, Path(work), recipes)
            theirs.append(by_hand["seconds"])
    return {
        "quantforge_seconds": ours,
        "by_hand_seconds": theirs,
        "median_speedup": statistics.median(theirs) / statistics.median(ours),
        "by_hand_steps": by_hand["steps"],
        "report": reports[-1],
    }


def int4_memory(model_dir: Path, fp32_bytes: int) -> dict:
    """2. Peak memory of one INT4 recipe (fresh caches), as a multiple of the fp32 weights' bytes."""
    with tempfile.TemporaryDirectory() as home:
        ours = quantforge_sweep(
            str(model_dir), Path(home), "--recipes", "quick", "--only", "int4-asym-g128", "--new-tokens", "8"
        )
    with tempfile.TemporaryDirectory() as out:
        cli = measured(
            [
                str(BIN / "optimum-cli"),
                "export",
                "openvino",
                "-m",
                str(model_dir),
                "--weight-format",
                "int4",
                out,
            ]
        )
    return {
        "fp32_mb": fp32_bytes / 2**20,
        "quantforge_peak_mb": ours["peak_pss_mb"],
        "optimum_cli_peak_mb": cli["peak_pss_mb"],
        "quantforge_multiple": ours["peak_pss_mb"] * 2**20 / fp32_bytes,
        "optimum_cli_multiple": cli["peak_pss_mb"] * 2**20 / fp32_bytes,
    }


def rerun(model_dir: Path, prefect_api: str, reruns: int = 3) -> dict:
    """3. The same request against a running Prefect server: the first run, then `reruns` reruns (the
    median is the figure: one rerun's time varies by ~1.5 s on this host)."""
    with tempfile.TemporaryDirectory() as home:
        env = {**fresh_env(Path(home)), "PREFECT_API_URL": prefect_api}
        command = [
            str(BIN / "quantforge"),
            "run",
            str(model_dir),
            "--recipes",
            "quick",
            "--evaluation",
            str(EVALUATION),
            "--output-dir",
            str(Path(home) / "output"),
        ]
        first = measured(command, env)
        again = [measured(command, env)["seconds"] for _ in range(reruns)]
    return {
        "first_seconds": first["seconds"],
        "reruns_seconds": again,
        "rerun_seconds": statistics.median(again),
        "speedup": first["seconds"] / statistics.median(again),
    }


def evaluation_throughput(model_dir: Path, repeats: int) -> dict:
    """4. quantforge's evaluator on the OpenVINO baseline vs transformers fp32, same windows."""
    import torch
    from transformers import AutoModelForCausalLM

    from quantforge.tasks.backends.openvino import export_ir
    from quantforge.tasks.datasets import evaluation_windows
    from quantforge.tasks.fetch import fetch_source
    from quantforge.tasks.openvino_measure import perplexity

    source = fetch_source(str(model_dir))
    windows = evaluation_windows(str(EVALUATION), source.local_dir, 512, 16)
    baseline = export_ir(source, "fp16")
    model = AutoModelForCausalLM.from_pretrained(source.local_dir, dtype=torch.float32).eval()
    tokens = windows.windows.size
    ours, theirs = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        ov_ppl = perplexity(baseline.path, windows).ppl
        ours.append(tokens / (time.perf_counter() - started))
        started = time.perf_counter()
        with torch.no_grad():
            losses = [
                model(torch.from_numpy(w[None]), labels=torch.from_numpy(w[None])).loss.item()
                for w in windows.windows
            ]
        theirs.append(tokens / (time.perf_counter() - started))
    torch_ppl = math.exp(statistics.mean(losses))
    return {
        "tokens": tokens,
        "quantforge_tokens_per_s": statistics.median(ours),
        "pytorch_fp32_tokens_per_s": statistics.median(theirs),
        "speedup": statistics.median(ours) / statistics.median(theirs),
        "ov_ppl": ov_ppl,
        "pytorch_ppl": torch_ppl,
        "disagreement_pct": abs(ov_ppl / torch_ppl - 1) * 100,
    }


def pytorch_decode(model_dir: Path, new_tokens: int = 64, repeats: int = 2) -> dict:
    """5. PyTorch decode speed of the source model (fp32 and bf16), the prompt quantforge uses."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantforge.tasks.torch_runtime import SPEED_PROMPT

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(SPEED_PROMPT, return_tensors="pt")
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        kwargs = {"do_sample": False, "min_new_tokens": new_tokens, "max_new_tokens": new_tokens}
        with torch.no_grad():
            model.generate(**ids, **kwargs)  # warm-up
            speeds, ttfts = [], []
            for _ in range(repeats):
                started = time.perf_counter()
                model.generate(**ids, do_sample=False, max_new_tokens=1)
                ttft = time.perf_counter() - started
                started = time.perf_counter()
                model.generate(**ids, **kwargs)
                total = time.perf_counter() - started
                speeds.append((new_tokens - 1) / (total - ttft))
                ttfts.append(ttft * 1000)
        out[str(dtype).removeprefix("torch.")] = {
            "tokens_per_s": statistics.median(speeds),
            "ttft_ms": statistics.median(ttfts),
        }
    return out


def pull_vs_copy(model_dir: Path, repeats: int) -> dict:
    """6. `pull` (download + verify every sha256 + atomic install) vs a plain copy of the same files.

    Both in this process, alternating, after one warm-up pull (a serving agent's steady state), and
    both as commands (`quantforge pull` vs `cp -r`: interpreter and library start-up included).
    """
    from quantforge.core.manifest import sha256_file
    from quantforge.registry.pull import pull

    spec = "smollm2-135m-instruct--int8-asym@candidate"
    with tempfile.TemporaryDirectory() as home:
        env = fresh_env(Path(home))
        measured(
            [
                str(BIN / "quantforge"),
                "run",
                str(model_dir),
                "--recipes",
                "quick",
                "--only",
                "int8-asym",
                "--evaluation",
                str(EVALUATION),
                "--max-eval-windows",
                "2",
                "--new-tokens",
                "4",
                "--output-dir",
                str(Path(home) / "o"),
            ],
            env,
        )
        stored = next(Path(home, "mlflow", "artifacts").glob("quantforge/*/artifacts/variant"))
        files = [p for p in stored.rglob("*") if p.is_file()]
        size_mb = sum(p.stat().st_size for p in files) / 2**20
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            pull(spec, Path(home) / "warm-up")
            pulls, copies, commands, cp_commands, hashing = [], [], [], [], []
            for index in range(repeats):
                started = time.perf_counter()
                pull(spec, Path(home) / f"pulled-{index}")
                pulls.append(time.perf_counter() - started)
                started = time.perf_counter()
                shutil.copytree(stored, Path(home) / f"copied-{index}")
                copies.append(time.perf_counter() - started)
                started = time.perf_counter()
                for file in files:
                    sha256_file(file)
                hashing.append(time.perf_counter() - started)
                command = [str(BIN / "quantforge"), "pull", spec, "--dest", str(Path(home) / f"cli-{index}")]
                commands.append(measured(command, env)["seconds"])
                copy_command = ["cp", "-r", str(stored), str(Path(home) / f"cp-{index}")]
                cp_commands.append(measured(copy_command)["seconds"])
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key)
                else:
                    os.environ[key] = value
    return {
        "size_mb": size_mb,
        "pull_seconds": pulls,
        "copy_seconds": copies,
        "sha256_seconds": hashing,
        "pull_command_seconds": commands,
        "cp_command_seconds": cp_commands,
        "pull_mb_per_s": size_mb / statistics.median(pulls),
        "copy_mb_per_s": size_mb / statistics.median(copies),
        "sha256_mb_per_s": size_mb / statistics.median(hashing),
        "ratio": statistics.median(copies) / statistics.median(pulls),
        "command_ratio": statistics.median(cp_commands) / statistics.median(commands),
    }


def scaling(scales: list[str], work: Path, tokenizer_from: Path) -> list[dict]:
    """7. Llama-3-shaped bf16 checkpoints: quantforge (export, the INT8 baseline, int8-asym and
    int4-asym-g128, each scored on one window, registered) against optimum-cli's INT4 export, side by
    side: peak memory of each process tree against the goal's bound, wall time per stage, disk used."""
    from quantforge.tasks.fetch import parameter_count
    from quantforge_testing.llama3_checkpoints import llama3_checkpoint

    rows = []
    for scale in scales:
        folder = llama3_checkpoint(scale, work / f"llama3-{scale}", tokenizer_from)
        checkpoint_bytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        home = work / f"home-{scale}"
        run = quantforge_sweep(
            str(folder),
            home,
            "--recipes",
            "quick",
            "--max-eval-windows",
            "1",
            "--new-tokens",
            "4",
        )
        (report_file,) = (home / "output").glob("*/report.json")
        report = json.loads(report_file.read_text())
        quantforge_disk = _bytes_under(home)
        shutil.rmtree(home)
        optimum_out = work / f"optimum-{scale}"
        optimum = measured(
            [
                str(BIN / "optimum-cli"),
                "export",
                "openvino",
                "--model",
                str(folder),
                "--task",
                "text-generation-with-past",
                "--weight-format",
                "int4",
                "--group-size",
                "128",
                "--ratio",
                "1.0",
                str(optimum_out),
            ]
        )
        optimum_disk = _bytes_under(optimum_out)
        shutil.rmtree(optimum_out)
        baseline = report["baselines"]["openvino"]
        rows.append(
            {
                "scale": scale,
                "parameters": parameter_count(folder),
                "checkpoint_bytes": checkpoint_bytes,
                "bound_bytes": 1.25 * checkpoint_bytes + 2**30,
                "seconds": run["seconds"],
                "peak_pss_mb": run["peak_pss_mb"],
                "stages": {
                    "export": (baseline.get("usage") or {}).get("seconds"),
                    "baseline evaluation": baseline["metrics"]["seconds"],
                    **{f"{v['recipe']} compression": v["quantize_seconds"] for v in report["variants"]},
                    **{f"{v['recipe']} evaluation": v["metrics"]["seconds"] for v in report["variants"]},
                },
                "baseline_label": baseline["label"],
                "disk_bytes": quantforge_disk,
                "optimum_seconds": optimum["seconds"],
                "optimum_peak_pss_mb": optimum["peak_pss_mb"],
                "optimum_disk_bytes": optimum_disk,
            }
        )
        shutil.rmtree(folder)
    return rows


def _bytes_under(folder: Path) -> int:
    """Bytes of the files under `folder`, a file hard-linked twice counted once (as `du` does)."""
    files = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            files[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(files.values())


MEASURES = ("evaluation", "decode_pytorch", "pull", "int4_memory", "rerun", "sweep", "scaling")


@app.command()
def main(
    repeats: Annotated[int, typer.Option(help="A/B pairs for the quick comparisons.")] = 3,
    sweep_repeats: Annotated[
        int, typer.Option(help="A/B pairs for the full default sweep (~12 min each).")
    ] = 1,
    scales: Annotated[
        str,
        typer.Option("--scaling", help="Comma-separated Llama-3 shapes: 1b, 3b, 8b (8b: ~1 h, 50 GB)."),
    ] = "1b",
    only: Annotated[
        str,
        typer.Option(
            help=f"Comma-separated subset of {', '.join(MEASURES)}: writes the JSON only, "
            "docs/benchmarks.md is regenerated by a run of all of them."
        ),
    ] = ",".join(MEASURES),
) -> None:
    from quantforge.tasks.datasets import evaluation_windows
    from quantforge.tasks.fetch import parameter_count
    from quantforge_testing.bundled_model import bundled_model_dir
    from quantforge_testing.servers import PrefectServer

    chosen = [m for m in only.split(",") if m]
    if unknown := sorted(set(chosen) - set(MEASURES)):
        raise typer.BadParameter(f"unknown measure {unknown[0]!r} (choose from {', '.join(MEASURES)})")
    started = datetime.now(UTC)
    model_dir = bundled_model_dir()
    work = Path(tempfile.mkdtemp(prefix="quantforge-bench-"))
    results = {
        "started": started.isoformat(),
        "machine": {"cpus": os.cpu_count(), "ram_gib": psutil.virtual_memory().total / 2**30},
    }
    if "evaluation" in chosen:
        results["evaluation"] = evaluation_throughput(model_dir, repeats)
    if "decode_pytorch" in chosen:
        results["decode_pytorch"] = pytorch_decode(model_dir)
    if "pull" in chosen:
        results["pull"] = pull_vs_copy(model_dir, repeats)
    if "int4_memory" in chosen:
        results["int4_memory"] = int4_memory(model_dir, parameter_count(model_dir) * 4)
    if "rerun" in chosen:
        with PrefectServer(work / "prefect") as server:
            results["rerun"] = rerun(model_dir, server.api_url)
    if "sweep" in chosen:
        import numpy as np

        windows = work / "windows.npy"
        np.save(windows, evaluation_windows(str(EVALUATION), model_dir, 512, 32).windows)
        results["sweep"] = sweep_comparison(model_dir, windows, sweep_repeats)
    if "scaling" in chosen:
        results["scaling"] = scaling([s for s in scales.split(",") if s], work, model_dir)
    results["seconds"] = (datetime.now(UTC) - started).total_seconds()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    if set(chosen) == set(MEASURES):
        from bench.report import write_benchmarks_doc

        write_benchmarks_doc(results, path)
        print(f"wrote {path} and docs/benchmarks.md")
    else:
        summary = {k: v for k, v in results.items() if k in chosen}
        print(json.dumps(summary, indent=2, default=str)[:6000])
        print(f"wrote {path}")


if __name__ == "__main__":
    app()
