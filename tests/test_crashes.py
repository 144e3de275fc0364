"""kill -9 during each stage of a run, then the same request again: nothing lost, nothing doubled.

The run is the real command in a subprocess (`quantforge run`, embedded MLflow, ephemeral Prefect);
a watcher sees the stage start on disk or in MLflow and kills the whole process group.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi
from mlflow import MlflowClient

from quantforge.hub_server import HubServer
from quantforge.manifest import is_intact
from tests.conftest import EVALUATION_TEXT
from tests.models import tiny_model
from tests.servers import MlflowServer

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


def run(
    model: Path | str,
    home: Path,
    output: Path,
    log: Path,
    *extra: str,
    env: dict | None = None,
    evaluation: Path = EVALUATION_TEXT,
) -> subprocess.Popen:
    command = [
        QUANTFORGE,
        "run",
        str(model),
        "--recipes",
        "quick",
        "--only",
        "int8-asym",
        "--eval",
        str(evaluation),
        "--max-eval-windows",
        "4",
        "--new-tokens",
        "4",
        "--output",
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
    while not started():
        assert process.poll() is None, f"the run ended before {what}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"{what} never started"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def assert_one_good_version(home: Path, output: Path) -> None:
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


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_then_rerun_leaves_exactly_one_good_version(stage, medium_model, tmp_path):
    home, output, log = tmp_path / "home", tmp_path / "output", tmp_path / "run.log"
    kill_when(run(medium_model, home, output, log), lambda: STAGES[stage](home), stage, log)

    rerun = run(medium_model, home, output, log)
    assert rerun.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert_one_good_version(home, output)


def test_kill_9_during_tokenization_then_rerun_tokenizes_again(medium_model, tmp_path):
    """A 14 MB evaluation text takes seconds to tokenize: the kill lands inside it, before the token
    cache exists; the rerun tokenizes again and caches one complete copy."""
    home, output, log = tmp_path / "home", tmp_path / "output", tmp_path / "run.log"
    big_text = tmp_path / "big-evaluation.txt"
    big_text.write_text("\n\n".join([EVALUATION_TEXT.read_text()] * 400))
    first = run(medium_model, home, output, log, evaluation=big_text)
    fetched_at = []

    def tokenizing() -> bool:  # the source is in; give the evaluation-set task a moment to begin
        if not fetched_at and "Task run 'fetch-" in log.read_text(errors="replace"):
            fetched_at.append(time.monotonic())
        return bool(fetched_at) and time.monotonic() - fetched_at[0] > 2

    kill_when(first, tokenizing, "tokenization", log)
    assert "Task run 'evaluation-set-" not in log.read_text(errors="replace")  # killed inside it
    assert list(home.glob("datasets/*.npy")) == []  # no token cache, whole or partial

    rerun = run(medium_model, home, output, log, evaluation=big_text)
    assert rerun.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert_one_good_version(home, output)
    cached = list(home.glob("datasets/*.npy"))
    assert len(cached) == 1 and len(np.load(cached[0])) > 1_000_000  # the whole text, once


@pytest.fixture(scope="module")
def hub(medium_model, tmp_path_factory):
    """The medium model as a repo on the local Hub, where the variants are pushed too."""
    with HubServer(tmp_path_factory.mktemp("crash-hub"), tokens={HUB_TOKEN: "quantforge-bot"}) as server:
        server.seed_repo(HUB_SOURCE, medium_model)
        yield server


HUB_TOKEN = "hf_crashTestToken"
HUB_SOURCE = "quantforge-test/medium-llama"
HUB_STAGES = {  # stage -> (what to slow down so the kill lands inside it, "has it started?")
    "download": (
        {"method": "GET", "path_pattern": r"/resolve/.*\.safetensors$", "throttle_bps": 20 * 2**20},
        lambda home, hub: any(home.glob("hf/hub/*/blobs/*.incomplete")),
    ),
    "push": (
        {"method": "PUT", "path_pattern": r"/info/lfs/objects/", "throttle_bps": 5 * 2**20},
        lambda home, hub: hub.requests("POST", r"/info/lfs/objects/batch") > 0,
    ),
}


def hub_env(hub: HubServer, home: Path) -> dict:
    return {
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": HUB_TOKEN,
        "HF_HOME": str(home / "hf"),
        "HF_HUB_DISABLE_XET": "1",
    }


@pytest.mark.parametrize("stage", list(HUB_STAGES))
def test_kill_9_during_download_or_push_then_rerun_publishes_once(stage, hub, tmp_path):
    home, output, log = tmp_path / "home", tmp_path / "output", tmp_path / "run.log"
    namespace = f"crash-{stage}"
    slow_down, started = HUB_STAGES[stage]
    hub.inject_fault(**slow_down)
    env = hub_env(hub, home)
    first = run(HUB_SOURCE, home, output, log, "--hub-namespace", namespace, env=env)
    kill_when(first, lambda: started(home, hub), stage, log)
    hub.clear_faults()

    rerun = run(HUB_SOURCE, home, output, log, "--hub-namespace", namespace, env=env)
    assert rerun.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert_one_good_version(home, output)
    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    repo = f"{namespace}/medium-llama-int8-asym-ov"
    commits = [c.commit_id for c in api.list_repo_commits(repo) if c.title.startswith("quantforge ")]
    tags = [t.target_commit for t in api.list_repo_refs(repo).tags]
    assert len(commits) == 1 and tags == commits  # pushed once, and the push is tagged
    published = _mlflow_rows(
        home,
        "select count(*) from model_version_tags where key = 'quantforge.hub_commit' "
        f"and value = '{commits[0]}'",
    )
    assert published == 1

    if stage == "push":  # the published variant, pulled by a serving host killed mid-download
        pulled = tmp_path / "pulled"
        command = [
            QUANTFORGE,
            "pull",
            "medium-llama--int8-asym@candidate",
            "--from",
            "hub",
            "--dest",
            str(pulled),
        ]
        hub.inject_fault(method="GET", path_pattern=r"/resolve/.*\.bin$", throttle_bps=5 * 2**20)
        pull_env = {**env, "QUANTFORGE_HOME": str(home), "MLFLOW_TRACKING_URI": ""}
        kill_when(spawn(command, log, pull_env), lambda: any(tmp_path.glob(".pulled.*.partial")), "pull", log)
        hub.clear_faults()
        assert not pulled.exists()  # nothing half-installed where a server would load it
        assert spawn(command, log, pull_env).wait(timeout=300) == 0, log.read_text()[-3000:]
        assert is_intact(pulled) and list(tmp_path.glob("*.partial")) == []


def test_two_different_requests_on_one_model_at_once_export_and_quantize_it_once(bundled_model, tmp_path):
    """Two requests (different evaluation windows) for one model on one host: the per-host file locks
    make one export and one quantization; the registry keeps one version."""
    model = tiny_model("llama", tmp_path / "shared-llama", bundled_model, seed=7)
    home, log = tmp_path / "home", tmp_path / "run.log"
    with MlflowServer(tmp_path / "mlflow") as server:
        env = {"MLFLOW_TRACKING_URI": server.url}
        first = run(model, home, tmp_path / "out-a", log, env=env)
        second = run(model, home, tmp_path / "out-b", log, "--max-eval-windows", "3", env=env)
        assert first.wait(timeout=600) == 0 and second.wait(timeout=600) == 0, log.read_text()[-3000:]
        versions = MlflowClient(server.url).search_model_versions("name = 'shared-llama--int8-asym'")
    outputs = (tmp_path / "out-a", tmp_path / "out-b")
    reports = [json.loads(next(out.rglob("report.json")).read_text()) for out in outputs]
    assert sorted(r["export_reused"] for r in reports) == [False, True]  # exported once
    assert sorted(r["variants"][0]["reused"] for r in reports) == [False, True]  # quantized once
    assert reports[0]["evaluation_hash"] != reports[1]["evaluation_hash"]  # 4 and 3 windows
    assert [v.version for v in versions] == ["1"]
    assert {r["variants"][0]["model_version"] for r in reports} == {1}
