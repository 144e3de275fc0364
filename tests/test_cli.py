"""The command line: --help everywhere, and bad input as one clear line with a non-zero exit."""

import os
import re
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points, version
from pathlib import Path
from subprocess import PIPE
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from quantforge import cli
from quantforge.cli import app
from quantforge_testing.servers import free_port
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import CALIBRATION_TEXT, EVALUATION_TEXT
from tests.test_recipes import alias_bomb

runner = CliRunner()
QUANTFORGE = str(Path(sys.executable).with_name("quantforge"))  # the console script users run


# Plugin commands (`bundled-model`, `demo` from quantforge_testing) count when installed.
PLUGINS = sorted({ep.name for ep in entry_points(group=cli.PLUGIN_GROUP)})


@pytest.mark.parametrize(
    "command", [[], ["run"], ["recipes"], ["pull"], ["promote"], ["archive"], *([p] for p in PLUGINS)]
)
def test_help_on_every_command(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_version_is_the_installed_distributions():
    done = subprocess.run([QUANTFORGE, "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"quantforge {version('quantforge')}\n", "")


def squashed(text: str) -> str:
    """Help text as one line of words: rich's box characters and line breaks out."""
    return " ".join(text.replace("│", " ").split())


def test_help_states_the_exit_codes():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert (
        "Exit codes: 0 done · 1 no variant passed its gate · 2 bad input (an option, a file, a name) · "
        "3 a service failed (MLflow, Prefect, the Hub, the disk) · 4 a bug (its traceback on stderr)."
    ) in squashed(result.output)


def test_recipes_of_a_set_are_a_table():
    """One row per recipe: backend, weight format, the options its YAML sets, its gate, its hash."""
    from quantforge.tasks.recipes import load_recipe_set

    result = runner.invoke(app, ["recipes", "default"])
    assert result.exit_code == 0 and "{" not in result.stdout  # no Python dicts
    lines = result.stdout.splitlines()
    assert lines[0].strip() == f"default: {load_recipe_set('default').description}"
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    cells = {row[0]: row[1:] for row in rows if row[0]}  # a wrapped cell goes on in a row without a name
    hashes = {r.name: r.content_hash()[:12] for r in load_recipe_set("default").recipes}
    assert cells["int8-asym"] == ["openvino", "int8", "-", "max_ppl_increase_pct=2", hashes["int8-asym"]]
    assert cells["int4-gptq"] == [
        *("openvino", "int4", "sym, group_size=64, ratio=0.8, backup_precision=int8_asym, gptq"),
        *("max_ppl_increase_pct=10", hashes["int4-gptq"]),
    ]
    assert cells["int8-static-sq"][:4] == [
        "openvino",
        "w8a8",
        "smooth_quant_alpha=0.5, overflow_fix=enable",
        "max_ppl_increase_pct=5",
    ]
    assert list(cells) == list(hashes)


def test_a_service_that_fails_is_exit_3_in_one_line(tmp_path):
    """MLflow (`pull`) and Prefect (`run`) unreachable: each one line naming it, exit 3, nothing written."""
    port = free_port()  # nothing listens there
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "QUANTFORGE_HOME": str(tmp_path / "home"),
    }
    output = tmp_path / "out"
    commands = {
        "pull": ["pull", "m--int8-asym@champion", "--dest", str(tmp_path / "pulled")],
        "run": ["run", "org/model", "--recipes", "quick", "--output-dir", str(output)],
    }
    processes = {  # side by side: each spends its seconds importing MLflow or Prefect
        name: subprocess.Popen([QUANTFORGE, *arguments], stdout=PIPE, stderr=PIPE, text=True, env=env)
        for name, arguments in commands.items()
    }
    lines = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        assert (process.returncode, stdout) == (3, ""), stderr[-3000:]
        (lines[name],) = stderr.splitlines()
    assert lines["pull"].startswith(f"error: MLflow at http://127.0.0.1:{port} failed: API request to ")
    assert lines["run"] == f"error: Prefect failed: Failed to reach API at http://127.0.0.1:{port}/api/"
    assert not (tmp_path / "pulled").exists()
    assert [p.name for p in output.iterdir()] == ["quantforge.log"]  # the failed run's logs only


def test_pull_without_a_tracking_uri_or_a_registry_here_says_so(tmp_path, monkeypatch):
    """Not an empty local registry answering that nothing is registered; a host's own registry still
    serves its pulls (tests/test_cli_json.py)."""
    home = tmp_path / "home"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("QUANTFORGE_HOME", str(home))
    result = runner.invoke(app, ["pull", "m--int8-asym@champion"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: `MLFLOW_TRACKING_URI` is not set and this host has no registry of its own "
        f"({home / 'mlflow' / 'mlflow.db'}): set it to the MLflow server that holds the variants\n"
    )
    assert not home.exists()


def test_a_source_no_one_serves_is_bad_input():
    wrong = runner.invoke(app, ["pull", "m--int8-asym@champion", "--from", "s3"])
    assert (wrong.exit_code, wrong.stderr) == (2, "error: `--from`: must be mlflow or hub (got 's3')\n")


def greet(name: Annotated[str, typer.Argument(help="Whom to greet.")] = "world") -> None:
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
    called = runner.invoke(app, ["greet", "plugins"])
    assert called.exit_code == 0 and called.stdout == "hello plugins\n"
    assert "[NAME] Whom to greet. [default: world]" in squashed(
        runner.invoke(app, ["greet", "--help"]).output
    )
    assert runner.invoke(app, ["recipes"]).exit_code == 0  # product commands never load a plugin


def test_a_bug_keeps_its_traceback_and_exits_4_not_the_no_variant_passed_1(tmp_path):
    """A plugin distribution on the path whose command fails as nothing foresaw, run as users run it."""
    (tmp_path / "failing_plugin.py").write_text("def explode():\n    raise KeyError('never foreseen')\n")
    dist = tmp_path / "failing_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: failing-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{cli.PLUGIN_GROUP}]\nexplode = failing_plugin:explode\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([QUANTFORGE, "explode"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == cli.BUG == 4
    assert "Traceback (most recent call last)" in done.stderr and "KeyError: 'never foreseen'" in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "error: quantforge failed unexpectedly (a bug: its traceback is above); exit 4"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--recipes", "nope"], "`recipes`: unknown recipe set 'nope'"),
        (["--num-samples", "0"], "`num_samples`: Input should be greater than or equal to 1 (got 0)"),
        (["--export-dtype", "int3"], "`export_dtype`: 'int3' is not one of 'auto', 'fp16', 'bf16', 'fp32'."),
        (["--num-samples", "x"], "`num_samples`: 'x' is not a valid integer."),
        (["--max-ppl", "0"], "`gates.max_ppl`: Input should be greater than 0 (got 0.0)"),
        (["--only", "int9"], "`only`: no recipe named int9"),
        ([], "`calibration` is required by data-aware recipes: int4-awq-se"),
        (
            ["--weight-format", "int4", "--recipes", "quick"],
            "`recipes`: --weight-format builds one recipe (int4-asym-g128), not with --recipes",
        ),
        (["--weight-format", "int8", "--only", "int8-asym"], "not with --only"),
        (
            ["--sym", "--ratio", "0.8"],
            "`weight_format`: --sym, --ratio describe one recipe: add --weight-format",
        ),
        (
            [
                *("--weight-format", "int4", "--sym", "--group-size", "64", "--ratio", "0.8", "--awq"),
                *("--scale-estimation", "--gptq", "--dataset", "wikitext2"),
            ],
            "`recipe` 'int4-sym-g64-r08-awq-se-gptq' (from --weight-format and its options): "
            "`gptq` and `awq` cannot be combined",
        ),
        (
            ["--weight-format", "int8", "--group-size", "64"],
            "`group_size` is for 4-bit weights, got 64 with bits=8",
        ),
        (
            ["--weight-format", "int4", "--ratio", "1.5"],
            "`ratio`: Input should be less than or equal to 1 (got 1.5)",
        ),
        (["--weight-format", "int4", "--group-size", "x"], "`group_size`: 'x' is not a valid integer."),
        (
            ["--weight-format", "int4", "--awq"],
            "`calibration` is required by data-aware recipes: int4-asym-g128-awq",
        ),
    ],
)
def test_invalid_requests_fail_before_any_work(arguments, message, tmp_path):
    output = tmp_path / "out"
    result = runner.invoke(
        app, ["run", "HuggingFaceTB/SmolLM2-135M-Instruct", "--output-dir", str(output), *arguments]
    )
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert message in line
    assert not output.exists()


def test_run_options_are_the_request_fields_with_their_help():
    """One option per field of the request, gate limits flattened, each with the field's description;
    `recipe` comes from optimum-cli's options instead, each with its description too."""
    from quantforge.cli import OneOffRecipe
    from quantforge.cli_options import leaf_fields
    from quantforge.tasks.request import QuantizeRequest

    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "240"})  # no cell wraps
    text = squashed(result.output)
    options = [path for path, _, _ in leaf_fields(QuantizeRequest, omit=("recipe",)) if path != ("model",)]
    assert {path[0] for path in options} == set(QuantizeRequest.model_fields) - {"model", "recipe"}
    assert ("gates", "max_ppl_increase_pct") in options
    assert QuantizeRequest.model_fields["recipe"].description
    fields = [*leaf_fields(QuantizeRequest, omit=("recipe",)), *leaf_fields(OneOffRecipe)]
    for path, field, _ in fields:
        assert field.description, f"`{'.'.join(path)}` has no description"
        if path != ("model",):
            assert re.search(f"--{path[-1].replace('_', '-')}[ ,]", text) and field.description in text
    assert "--calibration,--dataset TEXT" in text  # optimum-cli's name for it
    assert "One recipe, in optimum-cli's words (instead of --recipes)" in text


@pytest.mark.parametrize(
    ("command", "described"),
    [
        (["run"], ["* model TEXT Hub id (org/name) or a local model directory. [required]"]),
        (
            ["pull"],
            ["* model TEXT NAME@ALIAS (e.g. smollm2-135m-instruct--int8-asym@champion) or NAME/VERSION."],
        ),
        (
            ["promote"],
            ["* name TEXT Registered model name.", "* version INTEGER Model version to point the alias at."],
        ),
        (["archive"], ["* name TEXT Registered model name.", "* version INTEGER Model version to archive."]),
        (["recipes"], ["name [NAME] Show this set's recipes (name or YAML path)."]),
    ],
)
def test_help_describes_every_argument(command, described):
    """Not `model TEXT [required]` alone (typer 0.25 on click 8.5 lost arguments' help)."""
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    for line in described:
        assert line in squashed(result.output)


def test_run_builds_the_request_the_options_say(requested):
    from quantforge.tasks import recipes
    from quantforge.tasks.gate import GateLimits
    from quantforge.tasks.request import QuantizeRequest

    assert runner.invoke(app, ["run", "org/model", "--recipes", "quick"]).exit_code == 0
    default = QuantizeRequest(model="org/model", recipes="quick")  # the other defaults are the fields'
    assert requested.pop() == default
    options = {
        "revision": "v1",
        "recipes": str(Path(recipes.__file__).parent / "recipe_sets" / "quick.yaml"),
        "only": ["int8-asym", "int4-asym-g128"],
        "calibration": "c4",
        "evaluation": str(EVALUATION_TEXT),
        "num_samples": 8,
        "seq_len": 16,
        "window": 32,
        "max_eval_windows": 2,
        "seed": 3,
        "new_tokens": 5,
        "export_dtype": "fp32",
        "baseline_weights": "int8",
        "inference_precision": "bf16",
        "targets": ["cpu", "gpu"],
        "slo": str(Path(__file__).parents[1] / "infra" / "slo.example.yaml"),
        "output_dir": "elsewhere",
        "trust_remote_code": True,
        "allow_pickle": True,
        "hub_namespace": "someone",
        "hub_private": True,
        "hub_repo_template": "{namespace}/{recipe}",
        "promote_best": True,
    }
    gates = {"max_ppl_increase_pct": 3.5, "max_ppl": 40.0, "min_speedup": 1.5, "max_size_mb": 300.0}
    arguments = []
    for name, value in {**options, **gates}.items():
        option = f"--{name.replace('_', '-')}"
        if value is True:
            arguments.append(option)
        else:
            for one in value if isinstance(value, list) else [value]:
                arguments += [option, str(one)]
    assert runner.invoke(app, ["run", "org/model", *arguments]).exit_code == 0
    request = requested.pop()
    expected = QuantizeRequest(model="org/model", **options, gates=GateLimits(**gates))
    for name in QuantizeRequest.model_fields:
        assert getattr(request, name) == getattr(expected, name), name
        # one recipe replaces the set: test_optimum_options_build_one_recipe; `protocol` gptq sets the
        # windows and the text itself: test_protocol_gptq; the search's budget needs `--recipes search`:
        # the test below
        if name not in ("model", "recipe", "protocol", *SEARCH_FIELDS):
            assert getattr(request, name) != getattr(default, name), f"`{name}` not set"


SEARCH_FIELDS = ("search_budget", "search_minutes", "search_windows")


def test_run_builds_the_search_request_the_options_say(requested):
    """`--recipes search` with its budget; the budget without the search is refused (exit 2)."""
    budget = ["--search-budget", "5", "--search-minutes", "10", "--search-windows", "2"]
    common = ["run", "org/model", "--calibration", "c4"]
    assert runner.invoke(app, [*common, "--recipes", "search", *budget]).exit_code == 0
    request = requested.pop()
    assert (request.recipes, *(getattr(request, name) for name in SEARCH_FIELDS)) == ("search", 5, 10, 2)
    refused = runner.invoke(app, [*common, "--recipes", "quick", "--search-budget", "5"])
    assert refused.exit_code == 2 and "search_budget" in refused.output and not requested


def test_optimum_options_build_one_recipe(requested):
    """optimum-cli's words give one recipe, named from them, instead of a set; `--dataset` is
    `--calibration`; optimum's defaults (int4: asymmetric, groups of 128) give the shipped int4-asym-g128."""
    from quantforge.tasks.recipes import Recipe, load_recipe_set

    arguments = [
        *("--weight-format", "int4", "--sym", "--group-size", "64", "--ratio", "0.8"),
        *("--backup-precision", "int8_asym", "--awq", "--scale-estimation", "--dataset", "wikitext2"),
    ]
    assert runner.invoke(app, ["run", "org/model", *arguments]).exit_code == 0
    request = requested.pop()
    shipped = {r.name: r for r in load_recipe_set("default").recipes}["int4-awq-se"]
    (recipe,) = request.selected_recipes()
    assert recipe == request.recipe
    assert recipe.name == "int4-sym-g64-r08-backup-int8-asym-awq-se"
    assert recipe.content_hash() == shipped.content_hash()  # the same variant as the shipped recipe
    assert request.calibration == "wikitext2"

    def built(*options: str) -> Recipe:
        assert runner.invoke(app, ["run", "org/model", "--weight-format", *options]).exit_code == 0
        return requested.pop().recipe

    quick = {r.name: r for r in load_recipe_set("quick").recipes}
    assert built("int4") == Recipe(name="int4-asym-g128", bits=4, group_size=128)
    assert built("int4").content_hash() == quick["int4-asym-g128"].content_hash()
    assert built("int8") == Recipe(name="int8-asym", bits=8)
    assert built("int8").content_hash() == quick["int8-asym"].content_hash()
    assert built("int8", "--sym") == Recipe(name="int8-sym", bits=8, sym=True)
    assert built("int4", "--group-size", "-1", "--ratio", "0.75", "--backup-precision", "none") == Recipe(
        name="int4-asym-per-channel-r075-backup-none",
        bits=4,
        group_size=-1,
        ratio=0.75,
        backup_precision="none",
    )


def test_options_follow_the_model_a_new_field_included():
    """A field added to the request (here in a subclass) is an option, with its default and help."""
    from pydantic import BaseModel, Field

    from quantforge.cli_options import options_from
    from quantforge.tasks.gate import GateLimits
    from quantforge.tasks.request import QuantizeRequest

    class Wider(QuantizeRequest):
        recipes: str = "quick"  # no data-aware recipe: valid without --calibration
        tries: int = Field(default=3, description="How often to try.")
        gates: GateLimits = GateLimits(max_ppl=9.0)  # a nested default instance gives its values

    seen = []
    command = typer.Typer()
    command.command()(options_from(Wider, arguments=("model",), omit=("recipe",))(seen.append))
    assert runner.invoke(command, ["org/model", "--tries", "4"]).exit_code == 0
    assert Wider(**seen.pop()) == Wider(model="org/model", tries=4, gates=GateLimits(max_ppl=9.0))
    help_text = " ".join(runner.invoke(command, ["--help"]).output.replace("│", " ").split())
    assert "--tries INTEGER How often to try. [default: 3]" in help_text

    class Clash(BaseModel):
        max_ppl: float = 1.0
        gates: GateLimits = GateLimits()

    with pytest.raises(TypeError, match=r"Clash: fields \['max_ppl'\] would be one option each"):
        options_from(Clash)


def test_a_command_adds_options_that_are_no_field():
    """`run --json` is the command's own keyword-only parameter, beside the request's fields."""
    from quantforge.cli_options import options_from
    from quantforge.tasks.request import QuantizeRequest

    seen = []

    def command(values, *, loud: Annotated[bool, typer.Option("--loud", help="Say it louder.")] = False):
        seen.append((values["model"], values["seed"], loud))

    typed = typer.Typer()
    typed.command()(options_from(QuantizeRequest, arguments=("model",), omit=("recipe",))(command))
    assert runner.invoke(typed, ["org/model", "--loud", "--seed", "3"]).exit_code == 0
    assert seen == [("org/model", 3, True)]
    assert "--loud Say it louder." in squashed(runner.invoke(typed, ["--help"]).output)

    def clash(values, *, seed: int = 0) -> None:
        """`--seed` twice."""

    with pytest.raises(TypeError, match=r"clash: options \['seed'\] would be given twice"):
        options_from(QuantizeRequest, omit=("recipe",))(clash)


def test_old_option_names_are_refused():
    result = runner.invoke(app, ["run", "org/model", "--eval", "c4"])
    assert (
        result.exit_code == 2
        and "No such option '--eval'. (Did you mean one of: '--evaluation'" in result.output
    )


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
            "--evaluation",
            str(EVALUATION_TEXT),
            "--output-dir",
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
            "--evaluation",
            str(too_short),
            "--output-dir",
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
    assert [p.name for p in output.iterdir()] == ["quantforge.log"]  # the failed run's logs, nothing else


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
        [
            "run",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "--recipes",
            str(recipes),
            "--output-dir",
            str(output),
        ],
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
            *("--recipes", "quick", "--evaluation", str(EVALUATION_TEXT), "--window", "1024"),
            *("--output-dir", str(output)),
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
    assert list(home.rglob("*.xml")) == []  # nothing exported
    assert [p.name for p in output.iterdir()] == ["quantforge.log"]  # the failed run's logs only


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
