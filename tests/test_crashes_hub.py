"""kill -9 during a Hub download, a Hub push and a serving host's pull, then the same command again;
and two different requests for one model at once. Helpers: tests/crashing.py.
"""

import json
from functools import partial
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from mlflow import MlflowClient

from quantforge.core.manifest import is_intact
from quantforge_testing.hub import HubServer
from quantforge_testing.servers import MlflowServer
from quantforge_testing.tiny_models import tiny_model
from tests.crashing import (
    QUANTFORGE,
    assert_one_good_version,
    kill_when,
    mlflow_rows,
    run,
    spawn,
)

pytestmark = [pytest.mark.e2e, pytest.mark.model]


@pytest.fixture(scope="module")
def hub(medium, tmp_path_factory):
    """The medium model as a repo on the local Hub, where the variants are pushed too."""
    with HubServer(tmp_path_factory.mktemp("crash-hub"), tokens={HUB_TOKEN: "quantforge-bot"}) as server:
        server.seed_repo(HUB_SOURCE, medium)
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


def hub_env(hub: HubServer, home: Path, prefect_env: dict) -> dict:
    return {
        **prefect_env,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": HUB_TOKEN,
        "HF_HOME": str(home / "hf"),
        "HF_HUB_DISABLE_XET": "1",
    }


def test_kill_9_during_download_then_push_then_rerun_publishes_once(hub, prefect_env, tmp_path):
    """One run killed while it downloads the source, the next while it pushes the variant (so it got
    past the half-done download), the last publishes it once."""
    home, output, log = tmp_path / "home", tmp_path / "output", tmp_path / "run.log"
    namespace = "crash-hub"
    env = hub_env(hub, home, prefect_env)
    for stage, (slow_down, started) in HUB_STAGES.items():
        hub.inject_fault(**slow_down)
        first = run(HUB_SOURCE, home, output, log, "--hub-namespace", namespace, env=env)
        kill_when(first, partial(started, home, hub), stage, log)
        hub.clear_faults()

    rerun = run(HUB_SOURCE, home, output, log, "--hub-namespace", namespace, env=env)
    assert rerun.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert_one_good_version(home, output)
    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    repo = f"{namespace}/medium-llama-int8-asym-ov"
    commits = [c.commit_id for c in api.list_repo_commits(repo) if c.title.startswith("quantforge ")]
    tags = [t.target_commit for t in api.list_repo_refs(repo).tags]
    assert len(commits) == 1 and tags == commits  # pushed once, and the push is tagged
    published = mlflow_rows(
        home,
        "select count(*) from model_version_tags where key = 'quantforge.hub_commit' "
        f"and value = '{commits[0]}'",
    )
    assert published == 1

    # The published variant, pulled by a serving host killed mid-download.
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


def test_two_different_requests_on_one_model_at_once_export_and_quantize_it_once(
    bundled_model, prefect_env, tmp_path
):
    """Two requests (different evaluation windows) for one model on one host: the per-host file locks
    make one export and one quantization; the registry keeps one version."""
    model = tiny_model("llama", tmp_path / "shared-llama", bundled_model, seed=7)
    home, log = tmp_path / "home", tmp_path / "run.log"
    with MlflowServer(tmp_path / "mlflow") as server:
        env = {**prefect_env, "MLFLOW_TRACKING_URI": server.url}
        first = run(model, home, tmp_path / "out-a", log, env=env)
        second = run(model, home, tmp_path / "out-b", log, "--max-eval-windows", "3", env=env)
        assert first.wait(timeout=600) == 0 and second.wait(timeout=600) == 0, log.read_text()[-3000:]
        versions = MlflowClient(server.url).search_model_versions("name = 'shared-llama--int8-asym'")
    outputs = (tmp_path / "out-a", tmp_path / "out-b")
    reports = [json.loads(next(out.rglob("report.json")).read_text()) for out in outputs]
    exported = sorted(r["baselines"]["openvino"]["usage"] is not None for r in reports)
    assert exported == [False, True]  # exported once
    assert sorted(r["variants"][0]["reused"] for r in reports) == [False, True]  # quantized once
    assert reports[0]["evaluation_hash"] != reports[1]["evaluation_hash"]  # 4 and 3 windows
    assert [v.version for v in versions] == ["1"]
    assert {r["variants"][0]["model_version"] for r in reports} == {1}
