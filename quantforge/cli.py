"""The `quantforge` command."""

import contextlib
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import click
import typer
from click.core import ParameterSource
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup
from typer.models import ArgumentInfo
from typer.utils import get_params_from_function

from quantforge.core.errors import QuantforgeError, ServiceError
from quantforge.core.redact import install_log_redaction, redact
from quantforge.progress import LOG_FILE, run_view

PLUGIN_GROUP = "quantforge.commands"  # entry points: plain functions with typer Annotated parameters
# What `quantforge` exits with, for scripts and schedulers (docs/decisions.md, "Exit codes"); 0 is done.
NO_VARIANT_PASSED, BAD_INPUT, SERVICE_FAILED, BUG = 1, 2, 3, 4
EXIT_CODES = (
    "Exit codes: 0 done · 1 no variant passed its gate · 2 bad input (an option, a file, a name) · "
    "3 a service failed (MLflow, Prefect, the Hub, the disk) · 4 a bug (its traceback on stderr)."
)


class _Command(TyperCommand):
    """A typer command whose arguments keep their help: typer 0.25's TyperArgument sets `help` and then
    calls click 8.5's Argument.__init__, which sets it again from its own `help` parameter, None."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        declared = get_params_from_function(self.callback.__wrapped__) if self.callback else {}
        for param in self.params:
            info = declared[param.name].default if param.name in declared else None
            if isinstance(param, click.Argument) and isinstance(info, ArgumentInfo) and param.help is None:
                param.help = info.help


class _Deferred(click.Command):
    """A command listed by its name and summary and built on first use: `run`'s options come from
    QuantizeRequest, whose import (Prefect, huggingface_hub) takes seconds that `quantforge --help` should
    not spend."""

    def __init__(self, name: str, build: Callable[[], click.Command], summary: str | None) -> None:
        super().__init__(name, help=summary)
        self._build = build

    def make_context(
        self, info_name: str | None, args: list[str], parent=None, **extra: Any
    ) -> click.Context:
        return self._build().make_context(info_name, args, parent=parent, **extra)


class _Commands(TyperGroup):
    """`run`, the product's other commands, then each `quantforge.commands` entry point, loaded only when
    listed or called: `quantforge run` never imports a plugin, and a plugin that fails to load costs one line
    on stderr."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = {"run": _Deferred("run", _run_command, inspect.getdoc(run)), **self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._load_plugins(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load_plugins(self, only: str | None = None) -> None:
        for ep in entry_points(group=PLUGIN_GROUP):
            if ep.name in self.commands or only not in (None, ep.name):
                continue  # a product command keeps its name; a plugin loads once
            try:
                plugin = typer.Typer(add_completion=False)
                plugin.command(ep.name, cls=_Command)(ep.load())
                self.add_command(typer.main.get_command(plugin), ep.name)
            except Exception as error:  # a broken plugin must not take the product's commands down
                detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
                Console(stderr=True).print(
                    f"warning: command {ep.name!r} ({ep.value}) not loaded: {type(error).__name__}: {detail}",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )


app = typer.Typer(
    cls=_Commands,
    help="A quantization factory for LLMs served on Intel CPUs.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# A pipe or CI log gets a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
AsJson = Annotated[
    bool,
    typer.Option("--json", help="Print the result as one JSON document on stdout, and nothing else there."),
]


def _print_version(wanted: bool) -> None:
    """`--version`: the installed distribution's version, then exit."""
    if wanted:
        print(f"quantforge {version('quantforge')}")
        raise typer.Exit()


@app.callback()
def _set_up(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the installed version and exit."
        ),
    ] = False,
) -> None:
    """Process-wide set-up for every command; done here, not at import, so importing this module changes
    nothing."""
    # transformers imports torchao whenever it loads a model; on CPU-only torch torchao warns that its CUDA
    # kernels cannot load, and torch that torchao's enums are registered twice: noise on every run.
    for noisy in ("torchao", "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    install_log_redaction()  # no secret in any log line, whichever library writes it
    # The ephemeral Prefect server quantforge starts: no telemetry (an offline host logs an ERROR per run),
    # and time to start on a busy 2-core host (Prefect's default, 20 s, has been seen to run out).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def main() -> None:
    """The console script: `app`, where a failure nobody foresaw (a bug) keeps its traceback and exits 4,
    not Python's 1, which says "no variant passed"."""
    try:
        app()
    except Exception:
        traceback.print_exc()
        Console(stderr=True).print(
            f"[bold red]error:[/] quantforge failed unexpectedly (a bug: its traceback is above); exit {BUG}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(BUG)


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    """Print one line to stderr and exit with `code`."""
    Console(stderr=True).print(f"[bold red]error:[/] {redact(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def failure(error: Exception) -> tuple[str, int] | None:
    """The line and exit code of a failure the user can act on, or None for a bug (it keeps its traceback):
    the one place errors map to exit codes (docs/decisions.md, "Exit codes")."""
    if isinstance(error, QuantforgeError):
        return str(error), SERVICE_FAILED if isinstance(error, ServiceError) else BAD_INPUT
    mlflow_errors = sys.modules.get("mlflow.exceptions")  # only MLflow raises its errors: imported if it was
    if mlflow_errors is not None and isinstance(error, mlflow_errors.MlflowException):
        # MLflow refusing a value the command passed on (an alias name it does not accept) is bad input.
        if error.error_code == "INVALID_PARAMETER_VALUE":
            return registry_error(error, "refused"), BAD_INPUT
        return registry_error(error), SERVICE_FAILED
    if _raised_in(error).startswith(("prefect.client.", "prefect.server.")):  # its API or ephemeral server
        return f"Prefect failed: {_first_line(error)}", SERVICE_FAILED
    return None


@contextlib.contextmanager
def one_line_failures() -> Iterator[None]:
    """Failures the user can act on as one line on stderr and their exit code (`failure`)."""
    try:
        yield
    except Exception as error:
        if (known := failure(error)) is None:
            raise
        fail(*known)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _raised_in(error: BaseException) -> str:
    """The module whose code raised `error` (its traceback's innermost frame)."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame.tb_frame.f_globals.get("__name__", "") if frame is not None else ""


def registry_error(error: Exception, verb: str = "failed") -> str:
    """One line for an MLflow failure, naming the server without credentials."""
    from quantforge.registry.tracking import tracking_uri

    return f"MLflow at {tracking_uri()} {verb}: {_first_line(error)}"


@contextlib.contextmanager
def stdout_on_stderr(active: bool = True) -> Iterator[None]:
    """While `active`, send what the block writes to stdout to stderr: print(), loggers that hold the stream
    (nncf's) and native code writing to descriptor 1, so that stdout carries only the JSON document."""
    if not active:
        yield
        return
    sys.stdout.flush()
    try:
        out, err = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # streams without descriptors (typer's CliRunner)
        out = err = None
    saved = None if out is None else os.dup(out)
    if saved is not None:
        os.dup2(err, out)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()  # what loggers wrote to the stream they hold: still to stderr
        if saved is not None:
            os.dup2(saved, out)
            os.close(saved)


def print_json(document: Any) -> None:
    """The one JSON document `--json` prints on stdout."""
    print(json.dumps(document, indent=2))


def one_line(error: ValidationError) -> str:
    """The first validation error as one line: the field in backticks, the message, the value given."""
    first = error.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "request"
    message = first["msg"].removeprefix("Value error, ")
    return f"`{field}`: {message} (got {first['input']!r})" if first["loc"] else message


def request_from(values: dict[str, Any]):
    """The QuantizeRequest `values` describe, or one line naming the field and exit 2."""
    from quantforge.tasks.request import QuantizeRequest

    with one_line_failures():
        try:
            return QuantizeRequest(**values)
        except ValidationError as error:
            fail(one_line(error))


class OneOffRecipe(BaseModel):
    """A recipe in optimum-cli's words (`optimum-cli export openvino --help`): `run`'s options for one
    variant without a YAML file."""

    model_config = ConfigDict(title="One recipe, in optimum-cli's words (instead of --recipes)")

    weight_format: Literal["int4", "int8"] | None = Field(
        default=None, description="Weight format of the one recipe these options build."
    )
    sym: bool = Field(default=False, description="Symmetric quantization (default: asymmetric).")
    group_size: int | None = Field(
        default=None, description="Group size of 4-bit weights (default 128; -1: per channel)."
    )
    ratio: float | None = Field(
        default=None, description="Share of 4-bit weights, the rest in the backup precision (default 1)."
    )
    backup_precision: Literal["none", "int8_sym", "int8_asym"] | None = Field(
        default=None, description="Precision of the weights not in 4 bits (default: int8_asym)."
    )
    awq: bool = Field(default=False, description="AWQ (data-aware: needs --dataset).")
    scale_estimation: bool = Field(
        default=False, description="Scale estimation (data-aware: needs --dataset)."
    )
    gptq: bool = Field(default=False, description="GPTQ (data-aware: needs --dataset).")
    lora_correction: bool = Field(default=False, description="LoRA correction (data-aware: needs --dataset).")


def one_off_recipe(options: OneOffRecipe):
    """The Recipe `options` describe, named from them (`int4-sym-g64-r08-awq-se`); None when none is given."""
    from quantforge.tasks.recipes import Recipe

    defaults = OneOffRecipe()
    given = [
        f"--{name.replace('_', '-')}"
        for name in OneOffRecipe.model_fields
        if getattr(options, name) != getattr(defaults, name)
    ]
    if not given:
        return None
    if options.weight_format is None:
        fail(f"`weight_format`: {', '.join(given)} describe one recipe: add --weight-format int4 or int8")
    four_bit = options.weight_format == "int4"
    fields = options.model_dump(exclude={"weight_format"}, exclude_none=True) | {"bits": 4 if four_bit else 8}
    if four_bit and options.group_size is None:
        fields["group_size"] = 128  # optimum-cli's default for int4
    name = _one_off_name(options.weight_format, fields)
    try:
        return Recipe(name=name, **fields)
    except ValidationError as error:
        fail(f"`recipe` {name!r} (from --weight-format and its options): {one_line(error)}")


def _one_off_name(weight_format: str, fields: dict[str, Any]) -> str:
    parts = [weight_format, "sym" if fields["sym"] else "asym"]
    if (group := fields.get("group_size")) is not None:
        parts.append("per-channel" if group == -1 else f"g{group}")
    if fields.get("ratio", 1) != 1:
        parts.append("r" + f"{fields['ratio']:g}".replace(".", ""))
    if "backup_precision" in fields:
        parts.append("backup-" + fields["backup_precision"].replace("_", "-"))
    tags = {"awq": "awq", "scale_estimation": "se", "gptq": "gptq", "lora_correction": "lora"}
    return "-".join(parts + [tag for flag, tag in tags.items() if fields[flag]])


def with_one_off(values: dict[str, Any], options: OneOffRecipe) -> dict[str, Any]:
    """The request's `values` with the one recipe `options` build instead of a set, if they build one."""
    recipe = one_off_recipe(options)
    if recipe is None:
        return values
    context = click.get_current_context()
    given = [
        f"--{n}"
        for n in ("recipes", "only")
        if context.get_parameter_source(n) is not ParameterSource.DEFAULT
    ]
    if given:
        fail(f"`recipes`: --weight-format builds one recipe ({recipe.name}), not with {' or '.join(given)}")
    return {k: v for k, v in values.items() if k not in ("recipes", "only")} | {"recipe": recipe}


def run(
    values: dict[str, Any],
    *,
    one_off: OneOffRecipe,
    as_json: AsJson = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "-v",
            "--verbose",
            help=f"Stream the run's logs (Prefect, nncf, warnings) to stderr too; without it they go only to "
            f"OUTPUT_DIR/{LOG_FILE} and stderr shows the progress: a live table on a terminal, one line per "
            "status change elsewhere.",
        ),
    ] = False,
) -> None:
    """Quantize MODEL with each recipe of a set, or optimum-cli's options; measure and gate each variant."""
    request = request_from(with_one_off(values, one_off))
    with stdout_on_stderr(as_json):
        report = run_flow(request, verbose)
    if as_json:
        print_json(report.model_dump(mode="json"))  # report.json's content
    else:
        print_report(report)
    Console(stderr=as_json).print(f"report and variants in {request.output_dir.resolve()}", soft_wrap=True)
    if report.best is None:
        sys.exit(NO_VARIANT_PASSED)


def _run_command() -> click.Command:
    """`run` with one option per QuantizeRequest field (MODEL positional), gate limits flattened."""
    from quantforge.cli_options import field_paths, options_from
    from quantforge.tasks.request import QuantizeRequest

    omit = ("recipe",)  # set from the one-off options (OneOffRecipe)
    paths = field_paths(QuantizeRequest, omit)

    class OneLineErrors(_Command):
        """A value click cannot convert (`--num-samples x`) is one line naming the field, as pydantic's."""

        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            try:
                return super().parse_args(ctx, args)
            except click.BadParameter as error:
                if isinstance(error, click.MissingParameter) or error.param is None:
                    raise
                fail(f"`{'.'.join(paths.get(error.param.name, (error.param.name,)))}`: {error.message}")

    command = typer.Typer(add_completion=False)
    options = options_from(
        QuantizeRequest, ("model",), omit, aliases={"calibration": ("--dataset",), "targets": ("--target",)}
    )
    command.command("run", cls=OneLineErrors)(options(run))
    return typer.main.get_command(command)


def run_flow(request, verbose: bool = False):
    """Run the quantize flow (the search flow for `--recipes search`) showing its progress, its logs in
    the output folder (`progress.run_view`); every failure a user can act on becomes one line and its exit
    code."""
    from quantforge.flows.quantize import quantize_flow
    from quantforge.flows.search import search_flow
    from quantforge.tasks.search import SEARCH

    with one_line_failures(), run_view(request.output_dir, verbose):
        return (search_flow if request.recipes == SEARCH else quantize_flow)(request)


def print_report(report) -> None:
    """The report as a table, one row per variant, and a line naming the best and the Pareto front."""
    from quantforge.tasks.report import table_rows

    rows = table_rows(report)
    table = Table(title=f"{report.source_repo}@{report.source_sha[:12]}")
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("variant", "verdict") else "right")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    console.print(
        f"best passing variant: [bold]{report.best or 'none'}[/]; Pareto front: "
        f"{', '.join(report.pareto_front) or '-'}; wall time {report.wall_seconds:.0f} s"
    )


@app.command("recipes", cls=_Command)
def list_recipes(
    name: Annotated[str | None, typer.Argument(help="Show this set's recipes (name or YAML path).")] = None,
    as_json: AsJson = False,
) -> None:
    """List the shipped recipe sets, or the recipes of one set (`search`: its first candidates, in order)."""
    from quantforge.tasks.recipes import available_sets, load_recipe_set
    from quantforge.tasks.request import QuantizeRequest
    from quantforge.tasks.search import DESCRIPTION, SEARCH, search_set

    if name is None:
        sets = {set_name: load_recipe_set(set_name).description for set_name in available_sets()}
        sets[SEARCH] = DESCRIPTION
        if as_json:
            print_json([{"name": n, "description": d} for n, d in sets.items()])
        else:
            for set_name, description in sets.items():
                console.print(f"{set_name}: {description}")
        return
    with one_line_failures():
        if name == SEARCH:
            recipe_set = search_set(QuantizeRequest.model_fields["search_budget"].default)
        else:
            recipe_set = load_recipe_set(name)
    if as_json:
        recipes = [
            {**r.model_dump(mode="json"), "weight_format": r.weight_format, "content_hash": r.content_hash()}
            for r in recipe_set.recipes
        ]
        print_json({"name": name, "description": recipe_set.description, "recipes": recipes})
        return
    console.print(recipe_table(name, recipe_set))


def recipe_table(name: str, recipe_set) -> Table:
    """One row per recipe: its backend and weight format, the options it sets (as in YAML), its gate (the
    recipe's own limits over its weight format's defaults) and its hash."""
    from quantforge.tasks.gate import GateLimits, effective_limits

    table = Table(title=escape(f"{name}: {recipe_set.description}" if recipe_set.description else name))
    for column in ("recipe", "backend", "weights", "options", "gate", "hash"):
        table.add_column(column, overflow="fold")
    for recipe in recipe_set.recipes:
        options = recipe.model_dump(
            exclude={"name", "backend", "bits", "activations", "gate"}, exclude_defaults=True
        )
        gate = effective_limits(recipe, GateLimits()).model_dump(exclude_none=True)
        cells = (recipe.backend, recipe.weight_format, _settings(options), _settings(gate))
        table.add_row(recipe.name, *map(escape, cells), f"[dim]{recipe.content_hash()[:12]}[/]")
    return table


def _settings(values: dict[str, Any]) -> str:
    """`{"sym": True, "ratio": 0.8}` as `sym, ratio=0.8`: the keys a recipe's YAML sets."""
    return ", ".join(_setting(key, value) for key, value in values.items()) or "-"


def _setting(key: str, value: Any) -> str:
    if value is True:
        return key
    return f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"


@app.command(cls=_Command)
def pull(
    model: Annotated[
        str,
        typer.Argument(help="NAME@ALIAS (e.g. smollm2-135m-instruct--int8-asym@champion) or NAME/VERSION."),
    ],
    dest: Annotated[Path | None, typer.Option(help="Install here (default: the data directory).")] = None,
    source: Annotated[
        str,
        typer.Option("--from", help="Download from `mlflow` (artifact store) or `hub` (recorded commit)."),
    ] = "mlflow",
    as_json: AsJson = False,
) -> None:
    """Install a registered variant, every file checked against its manifest; print its path."""
    from quantforge.registry.pull import install, resolve

    if source not in ("mlflow", "hub"):
        fail(f"`--from`: must be mlflow or hub (got {source!r})")
    with stdout_on_stderr(as_json), one_line_failures():
        version = resolve(model)
        path = install(version, dest, source)
    if as_json:
        print_json({"name": version.name, "version": int(version.version), "path": str(path), "from": source})
    else:
        print(path)


@app.command(cls=_Command)
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Model version to point the alias at.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    as_json: AsJson = False,
) -> None:
    """Point ALIAS at VERSION of NAME (refused for archived or failed versions)."""
    from quantforge.registry.aliases import promote as promote_version

    with stdout_on_stderr(as_json), one_line_failures():
        promote_version(name, version, alias)
    if as_json:
        print_json({"name": name, "version": version, "alias": alias})
    else:
        console.print(f"{name}@{alias} → version {version}")


@app.command(cls=_Command)
def archive(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Model version to archive.")],
    as_json: AsJson = False,
) -> None:
    """Archive VERSION of NAME: its aliases are removed and it can no longer be pulled or promoted."""
    from quantforge.registry.aliases import archive as archive_version

    with stdout_on_stderr(as_json), one_line_failures():
        archive_version(name, version)
    if as_json:
        print_json({"name": name, "version": version, "archived": True})
    else:
        console.print(f"{name} version {version} archived")


@app.command(cls=_Command)
def plan(
    model: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION measured with an SLO.")],
    host_memory: Annotated[str, typer.Option(help="The node's memory, e.g. 64G (G: 10^9 bytes, GiB: 2^30).")],
    host_cores: Annotated[int, typer.Option(help="The node's cores.")],
    reserve_memory: Annotated[str, typer.Option(help="Memory kept for the system.")] = "4GB",
    reserve_threads: Annotated[int, typer.Option(help="Threads kept for the system (seed 004: ~4).")] = 4,
    as_json: AsJson = False,
) -> None:
    """Serving instances of a registered variant per node, from the memory and threads its SLO
    measurement recorded, after the system's reserve."""
    from quantforge.tasks.capacity import Host, plan_capacity
    from quantforge.tasks.host import describe

    try:
        host = Host(
            host_memory=host_memory,
            host_cores=host_cores,
            reserve_memory=reserve_memory,
            reserve_threads=reserve_threads,
        )
    except ValidationError as error:
        fail(one_line(error))
    with stdout_on_stderr(as_json), one_line_failures():
        from quantforge.registry.slo import recorded_slo

        version, slo = recorded_slo(model)
    measured = slo.measurement
    capacity = plan_capacity(host, measured.instance_pss_mb, measured.threads)
    nodes = -(-slo.instances // capacity.instances) if slo.instances and capacity.instances else None
    if as_json:
        print_json(
            {
                "name": version.name,
                "version": int(version.version),
                "host": host.model_dump(),
                "slo": slo.model_dump(mode="json"),
                "capacity": capacity.model_dump(),
                "nodes": nodes,
            }
        )
        return
    print(f"{version.name} version {version.version}: {slo.reason}")
    print(
        f"one instance: {measured.instance_pss_mb:.0f} MiB PSS answering, {measured.threads} threads "
        f"(measured on {describe(measured.host)})"
    )
    print(
        f"node: {host.host_memory.human_readable(decimal=True)} and {host.host_cores} cores, reserve "
        f"{host.reserve_memory.human_readable(decimal=True)} and {host.reserve_threads} threads"
    )
    print(
        f"instances per node: {capacity.instances} (by memory {capacity.by_memory}, by threads "
        f"{capacity.by_threads}: {capacity.bound} bound)"
    )
    if nodes is not None:
        print(f"nodes for the SLO's {slo.instances} instance(s): {nodes}")


if __name__ == "__main__":
    app()
