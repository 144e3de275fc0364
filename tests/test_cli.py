"""The command line: --help everywhere, and bad input as one clear line with a non-zero exit."""

import os
import re
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from quantforge import cli
from quantforge.cli import app
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import CALIBRATION_TEXT, EVALUATION_TEXT
from tests.test_recipes import alias_bomb

runner = CliRunner()


# Plugin commands (`bundled-model`, `demo` from quantforge_testing) count when installed.
PLUGINS = sorted({ep.name for ep in entry_points(group=cli.PLUGIN_GROUP)})


@pytest.mark.parametrize(
    "command", [[], ["run"], ["recipes"], ["pull"], ["promote"], ["archive"], *([p] for p in PLUGINS)]
)
def test_help_on_every_command(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def greet(name: Annotated[str, typer.Option(help="Whom to greet.")] = "world") -> None:
    """Say hello (a plugin command for the test below)."""
    cli.console.print(f"hello {name}")


def test_plugin_commands_are_added_and_a_broken_one_is_one_line(monkeypatch):
    plugins = [
        EntryPoint("greet", "tests.test_cli:greet", cli.PLUGIN_GROUP),
        EntryPoint("broken", "quantforge_no_such_module:command", cli.PLUGIN_GROUP),
    ]
    monkeypatch.setattr(cli, "entry_points", lambda group: plugins if group == cli.PLUGIN_GROUP else [])
    listed = runner.invoke(app, ["--help"])
    assert listed.exit_code == 0 and "greet" in listed.stdout and "Say hello" in listed.stdout
    assert listed.stderr.splitlines() == [
        "warning: command 'broken' (quantforge_no_such_module:command) not loaded: "
        "ModuleNotFoundError: No module named 'quantforge_no_such_module'"
    ]
    called = runner.invoke(app, ["greet", "--name", "plugins"])
    assert called.exit_code == 0 and called.stdout == "hello plugins\n"
    assert runner.invoke(app, ["recipes"]).exit_code == 0  # product commands never load a plugin


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--recipes", "nope"], "`recipes`: unknown recipe set 'nope'"),
        (["--num-samples", "0"], "`num_samples`: Input should be greater than or equal to 1 (got 0)"),
        (["--export-dtype", "int3"], "`export_dtype`"),
        (["--only", "int9"], "`only`: no recipe named int9"),
        ([], "`calibration` is required by data-aware recipes: int4-awq-se"),
    ],
)
def test_invalid_requests_fail_before_any_work(arguments, message, tmp_path):
    output = tmp_path / "out"
    result = runner.invoke(
        app, ["run", "HuggingFaceTB/SmolLM2-135M-Instruct", "--output", str(output), *arguments]
    )
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not output.exists()


def test_invalid_recipe_file_names_recipe_and_field(tmp_path):
    recipes = tmp_path / "mine.yaml"
    recipes.write_text(
        "recipes:\n  - name: gptq-lora\n    bits: 4\n    gptq: true\n    lora_correction: true\n"
    )
    result = runner.invoke(app, ["run", "HuggingFaceTB/SmolLM2-135M-Instruct", "--recipes", str(recipes)])
    assert result.exit_code == 2
    assert "recipe 'gptq-lora'" in result.output and "cannot be combined" in result.output


@pytest.mark.model
def test_process_exit_code_and_nothing_left_behind(bundled_model, tmp_path):
    """A real process: unknown model path and a not-writable output, each one line on stderr, exit 2."""
    command = [sys.executable, "-m", "quantforge.cli", "run"]
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "ERROR"}
    not_writable = subprocess.run(
        [
            *command,
            str(bundled_model),
            "--recipes",
            "quick",
            "--eval",
            str(EVALUATION_TEXT),
            "--output",
            "/etc/hostname/out",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert not_writable.returncode == 2
    assert "`output_dir`: '/etc/hostname/out' is not writable" in not_writable.stderr
    too_short = tmp_path / "short.txt"
    too_short.write_text("Only a few words.")
    output = tmp_path / "out"
    short = subprocess.run(
        [
            *command,
            str(bundled_model),
            "--recipes",
            "quick",
            "--calibration",
            str(CALIBRATION_TEXT),
            "--eval",
            str(too_short),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert short.returncode == 2
    error_lines = [line for line in short.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert re.fullmatch(
        rf"error: `evaluation`: '{too_short}' has \d tokens, fewer than one window of 512", error_lines[0]
    )
    assert list(output.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"recipes:\n  - name: int8\n    bits: 8\n  bits: 4\n", "is not valid YAML: expected <block end>"),
        (alias_bomb(7), "is not valid YAML: aliases (*l0) are not accepted (line 2)"),
    ],
)
def test_malformed_or_alias_bomb_recipe_file_is_one_line_exit_2(content, message, tmp_path):
    """Today's failure modes: a traceback with exit 1, and a 50 MB error line echoing the expanded bomb."""
    recipes = tmp_path / "mine.yaml"
    recipes.write_bytes(content)
    output = tmp_path / "out"
    result = runner.invoke(
        app,
        ["run", "HuggingFaceTB/SmolLM2-135M-Instruct", "--recipes", str(recipes), "--output", str(output)],
    )
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: `recipes`: mine.yaml ") and message in line and len(line) <= 320
    assert not output.exists()


@pytest.mark.model
def test_window_longer_than_the_model_context_is_one_line_before_any_work(bundled_model, tmp_path):
    """A tiny Llama with 512 positions asked for 1024-token windows: refused from its config.json."""
    model = tiny_model("llama", tmp_path / "tiny-llama", bundled_model)
    home, output = tmp_path / "home", tmp_path / "out"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "quantforge.cli", "run", str(model)),
            *("--recipes", "quick", "--eval", str(EVALUATION_TEXT), "--window", "1024"),
            *("--output", str(output)),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_LOGGING_LEVEL": "ERROR", "QUANTFORGE_HOME": str(home)},
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [
        "error: `window`: 1024 tokens is longer than the model's context "
        "(`max_position_embeddings` 512 in config.json)"
    ]
    assert list(home.rglob("*.xml")) == [] and list(output.iterdir()) == []  # nothing exported


def test_importing_the_cli_changes_nothing_and_a_command_sets_up_the_process():
    """Logging and Prefect settings are made in the app's callback, not at import."""
    script = (
        "import logging, os\n"
        "from typer.testing import CliRunner\n"
        "import quantforge.cli\n"
        "print(logging.getLogger('torchao').level, os.environ.get('PREFECT_SERVER_ANALYTICS_ENABLED'),"
        " getattr(logging.getLogRecordFactory(), 'redacts', False))\n"
        "CliRunner().invoke(quantforge.cli.app, ['recipes'])\n"
        "print(logging.getLogger('torchao').level, os.environ.get('PREFECT_SERVER_ANALYTICS_ENABLED'),"
        " getattr(logging.getLogRecordFactory(), 'redacts', False))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    assert done.stdout.splitlines() == ["0 None False", f"{40} false True"]
