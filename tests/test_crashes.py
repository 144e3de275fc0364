"""kill -9 during each stage of a run, then the same request again: nothing lost, nothing doubled.

The run is the real command in a subprocess (`quantforge run`, embedded MLflow, ephemeral Prefect);
a watcher sees the stage start on disk or in MLflow and kills the whole process group.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantforge.manifest import is_intact
from tests.conftest import EVALUATION_TEXT
from tests.models import tiny_model

pytestmark = [pytest.mark.e2e, pytest.mark.model]

QUANTFORGE = str(Path(sys.executable).with_name("quantforge"))


def _partial(home: Path, folder: str) -> bool:
    return (
        any(p.name.endswith(".partial") for p in (home / folder).rglob(".*"))
        if (home / folder).exists()
        else False
    )


def _variant_made(home: Path) -> bool:
    return (
        any(is_intact(p.parent) for p in (home / "variants").rglob("manifest.json"))
        if (home / "variants").exists()
        else False
    )


def _mlflow_rows(home: Path, query: str) -> int:
    database = home / "mlflow" / "mlflow.db"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute(query).fetchone()[0]
    except sqlite3.Error:
        return 0


STAGES = {  # stage -> "has it started?" seen from outside the process
    "export": lambda home: _partial(home, "ir"),
    "compression": lambda home: _partial(home, "variants"),
    "evaluation": _variant_made,
    "registration": lambda home: (
        _mlflow_rows(home, "select count(*) from tags where key = 'quantforge.identity'") > 0
    ),
}


@pytest.fixture(scope="module")
def medium_model(bundled_model, tmp_path_factory):
    """Big enough that each stage lasts long enough to be caught (~25 M parameters)."""
    folder = tmp_path_factory.mktemp("crash") / "medium-llama"
    return tiny_model(
        "llama",
        folder,
        bundled_model,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
    )


def run(model: Path, home: Path, output: Path, log: Path) -> subprocess.Popen:
    command = [
        QUANTFORGE,
        "run",
        str(model),
        "--recipes",
        "quick",
        "--only",
        "int8-asym",
        "--eval",
        str(EVALUATION_TEXT),
        "--max-eval-windows",
        "4",
        "--new-tokens",
        "4",
        "--output",
        str(output),
    ]
    env = {**os.environ, "QUANTFORGE_HOME": str(home), "MLFLOW_TRACKING_URI": ""}
    with log.open("ab") as sink:  # a file, not a pipe: nobody reads while it runs
        return subprocess.Popen(command, env=env, stdout=sink, stderr=sink, start_new_session=True)


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_then_rerun_leaves_exactly_one_good_version(stage, medium_model, tmp_path):
    home, output, log = tmp_path / "home", tmp_path / "output", tmp_path / "run.log"
    process = run(medium_model, home, output, log)
    deadline = time.monotonic() + 300
    while not STAGES[stage](home):
        assert process.poll() is None, f"the run ended before {stage}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"{stage} never started"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    rerun = run(medium_model, home, output, log)
    assert rerun.wait(timeout=600) == 0, log.read_text()[-3000:]

    versions = _mlflow_rows(home, "select count(*) from model_versions where name like 'medium-llama--%'")
    assert versions == 1  # registered exactly once, whatever the crash left
    finished = _mlflow_rows(
        home,
        "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'quantforge.recipe' and r.status = 'FINISHED'",
    )
    assert finished == 1  # one complete record; the killed run's record (if any) is not FINISHED
    assert [*home.rglob("*.partial"), *output.rglob("*.partial")] == []  # the dead run's are swept
    for folder in [*home.glob("ir/*/*"), *home.glob("variants/*/*")]:
        assert folder.name.startswith(".") or is_intact(folder), folder  # caches not poisoned
