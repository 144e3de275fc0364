"""Helpers of the kill -9 tests: the real command in its own process group, watchers, end-state checks.

Each test module starts one `prefect server` for its commands (`PrefectServer.client_env` in `env`): a
killed run leaves its flow run behind on the server, as in production, and no command pays for starting
an ephemeral server.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from quantforge.core.manifest import is_intact
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import EVALUATION_TEXT

QUANTFORGE = str(Path(sys.executable).with_name("quantforge"))


def partial_in(home: Path, folder: str) -> bool:
    return (
        any(p.name.endswith(".partial") for p in (home / folder).rglob(".*"))
        if (home / folder).exists()
        else False
    )


def variant_made(home: Path) -> bool:
    return (
        any(is_intact(p.parent) for p in (home / "variants").rglob("manifest.json"))
        if (home / "variants").exists()
        else False
    )


def mlflow_rows(home: Path, query: str) -> int:
    database = home / "mlflow" / "mlflow.db"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute(query).fetchone()[0]
    except sqlite3.Error:
        return 0


def medium_model(folder: Path, bundled_model: Path) -> Path:
    """Big enough that each stage lasts long enough to be caught (~25 M parameters)."""
    return tiny_model(
        "llama",
        folder / "medium-llama",
        bundled_model,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
    )


def run(
    model: Path | str,
    home: Path,
    output: Path,
    log: Path,
    *extra: str,
    env: dict | None = None,
    evaluation: Path = EVALUATION_TEXT,
) -> subprocess.Popen:
    """`quantforge run` of one int8 recipe in its own process group (the Prefect server comes in `env`)."""
    command = [
        QUANTFORGE,
        "run",
        str(model),
        "--recipes",
        "quick",
        "--only",
        "int8-asym",
        "--evaluation",
        str(evaluation),
        "--max-eval-windows",
        "4",
        "--new-tokens",
        "4",
        "--output-dir",
        str(output),
        *extra,
    ]
    return spawn(command, log, {"QUANTFORGE_HOME": str(home), "MLFLOW_TRACKING_URI": "", **(env or {})})


def spawn(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    """Start `command` in its own process group (killed whole), output appended to `log`."""
    with log.open("ab") as sink:  # a file, not a pipe: nobody reads while it runs
        return subprocess.Popen(
            command, env={**os.environ, **env}, stdout=sink, stderr=sink, start_new_session=True
        )


def kill_when(process: subprocess.Popen, started, what: str, log: Path) -> None:
    """kill -9 the process group as soon as `started()` is true."""
    deadline = time.monotonic() + 300
    while not _observed(started):
        assert process.poll() is None, f"the run ended before {what}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"{what} never started"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _observed(started) -> bool:
    try:
        return started()
    except FileNotFoundError:  # a writer renamed a folder while the watcher walked it: look again
        return False


def assert_one_good_version(home: Path, output: Path) -> None:
    versions = mlflow_rows(  # MLflow's sqlite store keeps deleted versions as 'Deleted_Internal' rows
        home,
        "select count(*) from model_versions "
        "where name like 'medium-llama--%' and coalesce(current_stage, '') != 'Deleted_Internal'",
    )
    assert versions == 1  # registered exactly once, whatever the crash left
    candidate = mlflow_rows(
        home,
        "select count(*) from registered_model_aliases "
        "where name like 'medium-llama--%' and alias = 'candidate'",
    )
    assert candidate == 1  # a registration cut short was completed
    finished = mlflow_rows(
        home,
        "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'quantforge.recipe' and r.status = 'FINISHED'",
    )
    assert finished == 1  # one complete record; the killed run's record (if any) is not FINISHED
    assert [*home.rglob("*.partial"), *output.rglob("*.partial")] == []  # the dead run's are swept
    for folder in [*home.glob("ir/*/*"), *home.glob("variants/*/*")]:
        assert folder.name.startswith(".") or is_intact(folder), folder  # caches not poisoned
