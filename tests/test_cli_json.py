"""`--json`: one JSON document on stdout, everything else on stderr; a failure prints no document, one line
on stderr and its exit code. The registry commands run on this host's own registry (no tracking URI) with a
small synthetic variant (tests/test_registry.py); `run` runs for real on a tiny random Llama."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from quantforge.cli import app
from quantforge.core import atomic
from quantforge.core.manifest import read_manifest
from quantforge.tasks.recipes import available_sets, load_recipe_set
from quantforge.tasks.search import DESCRIPTION as SEARCH_DESCRIPTION
from quantforge.tasks.search import SEARCH
from quantforge_testing.servers import free_port
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import EVALUATION_TEXT
from tests.test_registry import make_variant, record

runner = CliRunner()
QUANTFORGE = str(Path(sys.executable).with_name("quantforge"))


def one_error(result, code: int) -> str:
    """The failure's only line, after checking its exit code and that no document was printed."""
    assert (result.exit_code, result.stdout) == (code, ""), result.output
    (line,) = result.stderr.splitlines()
    return line


def test_recipes_as_json():
    listed = runner.invoke(app, ["recipes", "--json"])
    assert listed.exit_code == 0 and listed.stderr == ""
    assert json.loads(listed.stdout) == [
        *({"name": name, "description": load_recipe_set(name).description} for name in available_sets()),
        {"name": SEARCH, "description": SEARCH_DESCRIPTION},
    ]
    shown = runner.invoke(app, ["recipes", "quick", "--json"])
    assert shown.exit_code == 0 and shown.stderr == ""
    document = json.loads(shown.stdout)
    quick = load_recipe_set("quick")
    assert (document["name"], document["description"]) == ("quick", quick.description)
    assert document["recipes"] == [
        {**r.model_dump(mode="json"), "weight_format": r.weight_format, "content_hash": r.content_hash()}
        for r in quick.recipes
    ]
    unknown = runner.invoke(app, ["recipes", "nope", "--json"])
    assert (unknown.exit_code, unknown.stdout) == (2, "")
    assert (
        unknown.stderr.startswith("error: `recipes`: unknown recipe set 'nope'")
        and unknown.stderr.count("\n") == 1
    )


@pytest.fixture
def registered(tmp_path, monkeypatch) -> tuple[str, int]:
    """One passing version in the registry of this host (no MLFLOW_TRACKING_URI: the embedded one in a
    QUANTFORGE_HOME of this test): its name and number."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("QUANTFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    recorded = record(tmp_path / "v", make_variant(tmp_path / "v", "a" * 40, recipe="int8-asym"), 21.0)
    return recorded.model_name, recorded.model_version


def test_registry_commands_as_json(registered, tmp_path, monkeypatch):
    name, version = registered
    promoted = runner.invoke(app, ["promote", name, str(version), "--alias", "champion", "--json"])
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.stdout) == {"name": name, "version": version, "alias": "champion"}

    dest = tmp_path / "pulled"
    pulled = runner.invoke(app, ["pull", f"{name}@champion", "--dest", str(dest), "--json"])
    assert pulled.exit_code == 0, pulled.output
    assert json.loads(pulled.stdout) == {
        "name": name,
        "version": version,
        "path": str(dest),
        "from": "mlflow",
    }
    assert read_manifest(dest).recipe_name == "int8-asym"  # installed there, verified

    with monkeypatch.context() as disk:  # the disk reports no free space: refused before writing, exit 3
        disk.setattr(atomic.shutil, "disk_usage", lambda path: SimpleNamespace(total=2**40, free=0))
        full = runner.invoke(app, ["pull", f"{name}@champion", "--dest", str(tmp_path / "full"), "--json"])
    needs = f"not enough disk space to write {tmp_path / 'full'}: needs ~1 MiB, 0 MiB free"
    assert one_error(full, 3) == f"error: {needs} (nothing was written)"
    assert not (tmp_path / "full").exists()

    refused = runner.invoke(app, ["promote", name, str(version), "--alias", "latest", "--json"])
    line = one_error(refused, 2)  # MLflow refuses a value the command was given: bad input
    assert line.endswith("refused: 'latest' alias name (case insensitive) is reserved.")

    archived = runner.invoke(app, ["archive", name, str(version), "--json"])
    assert archived.exit_code == 0, archived.output
    assert json.loads(archived.stdout) == {"name": name, "version": version, "archived": True}
    gone = runner.invoke(app, ["pull", f"{name}/{version}", "--dest", str(tmp_path / "again"), "--json"])
    assert one_error(gone, 2) == f"error: `model`: '{name}/{version}' (version {version}) is archived"


@pytest.mark.model
def test_run_shows_progress_and_logs_to_a_file(bundled_model, prefect_env, tmp_path):
    """A tiny Llama, one recipe in optimum-cli's words whose variant fails its size gate (exit 1), through
    pipes (not a terminal). `--json`: report.json's content on stdout; on stderr one plain line per status
    change and nothing of Prefect's or nncf's, which go to OUTPUT_DIR/quantforge.log. Again with `-v`: the
    variant is the registry's, and Prefect's lines stream to stderr as well. Then against a registry URI
    with a password that nothing listens on: the log file names the server, not the password."""
    model = tiny_model("llama", tmp_path / "tiny-llama", bundled_model)
    output = tmp_path / "out"
    env = {
        **os.environ,
        **prefect_env,  # the module's Prefect server: no run pays for starting an ephemeral one
        "QUANTFORGE_HOME": str(tmp_path / "home"),
        "PREFECT_LOGGING_LEVEL": "INFO",
    }

    def run(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                *(QUANTFORGE, "run", str(model), "--weight-format", "int8", "--sym"),
                *("--evaluation", str(EVALUATION_TEXT), "--window", "128", "--max-eval-windows", "1"),
                *("--new-tokens", "4", "--max-size-mb", "0.001", "--output-dir", str(output), *options),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    done = run("--json")
    assert done.returncode == 1, done.stderr[-3000:]  # no variant passed
    document = json.loads(done.stdout)
    (report,) = output.rglob("report.json")
    assert document == json.loads(report.read_text())
    assert document["best"] is None and [v["recipe"] for v in document["variants"]] == ["int8-sym"]
    lines = done.stderr.splitlines()
    assert lines[:2] == ["int8-sym: plan waiting", "baseline (openvino): measure running"]
    assert re.fullmatch(r"baseline \(openvino\): measure done in \d+ s", lines[2])
    assert lines[3] == "int8-sym: quantize running" and re.fullmatch(
        r"int8-sym: quantize done in \d+ s", lines[4]
    )
    assert lines[5] == "int8-sym: measure running" and re.fullmatch(
        r"int8-sym: measure done in \d+ s", lines[6]
    )
    assert lines[7:] == ["int8-sym: gate done (fail)", f"report and variants in {output}"]
    log = (output / "quantforge.log").read_text()
    assert "Statistics of the bitwidth distribution" in log  # nncf's table, which nncf writes to stdout
    assert "Finished in state Completed()" in log and "int8-sym: quantize running" in log

    again = run("-v")
    assert again.returncode == 1, again.stderr[-3000:]
    assert "int8-sym: registry reused (the registry's record)" in again.stderr.splitlines()
    assert "Finished in state Completed()" in again.stderr  # Prefect's lines, as before progress
    assert "int8-sym" in again.stdout and "best passing variant: none" in again.stdout  # the table
    assert "Finished in state Completed()" in (output / "quantforge.log").read_text()  # this run's
    assert "\x1b" not in done.stderr + again.stdout + again.stderr

    secret, port = "canarysecret-5b07e2", free_port()
    env |= {
        "MLFLOW_TRACKING_URI": f"http://user:{secret}@127.0.0.1:{port}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    }
    unreachable = run()
    assert unreachable.returncode == 3, unreachable.stderr[-3000:]  # a service failed
    assert unreachable.stderr.splitlines()[-1].startswith(
        f"error: MLflow at http://127.0.0.1:{port} failed: "
    )
    log = (output / "quantforge.log").read_text()
    assert str(port) in log and secret not in log + unreachable.stderr
