"""Triggers and scale-out over real processes on loopback: `prefect server`, process workers,
`mlflow server` and the local Hub. The deployments are registered by `infra/deploy.py`, as in production.
"""

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from safetensors.torch import load_file, save_file

from quantforge.hub_server import HubServer
from tasks.resources import memory_limit_name, memory_slots
from tests.conftest import EVALUATION_TEXT
from tests.models import tiny_model
from tests.servers import MlflowServer, PrefectServer, PrefectWorker

pytestmark = [pytest.mark.e2e, pytest.mark.model]

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_quantforgeTriggerToken"
POOL = "quantforge"
SETTINGS = {
    "recipes": "quick",
    "only": ["int8-asym"],
    "evaluation": str(EVALUATION_TEXT),
    "max_eval_windows": 2,
    "new_tokens": 4,
}


@pytest.fixture(scope="module")
def stack(bundled_model, tmp_path_factory):
    """Prefect server + work pool + deployments, MLflow server, local Hub; workers are per test."""
    root = tmp_path_factory.mktemp("stack")
    with (
        HubServer(root / "hub", tokens={TOKEN: "quantforge-bot"}) as hub,
        MlflowServer(root / "mlflow") as mlflow_server,
        PrefectServer(root / "prefect") as prefect_server,
    ):
        prefect_server.cli("work-pool", "create", POOL, "--type", "process")
        worker_env = {
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": TOKEN,
            "HF_HUB_DISABLE_XET": "1",
            "MLFLOW_TRACKING_URI": mlflow_server.url,
            "QUANTFORGE_HOME": str(root / "worker-home"),
            "HF_HOME": str(root / "worker-hf-home"),
        }
        watchlist = root / "watchlist.yaml"
        watchlist.write_text(
            yaml.safe_dump(
                {
                    "defaults": {**SETTINGS, "output_dir": str(root / "output")},
                    "watch": [{"model": "quantforge-test/watched"}],
                }
            )
        )
        deploy = subprocess.run(
            [sys.executable, str(REPO_ROOT / "infra" / "deploy.py"), "--watchlist", str(watchlist)],
            env={**os.environ, **prefect_server.client_env},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deploy.returncode == 0, deploy.stderr[-2000:]
        yield hub, mlflow_server, prefect_server, worker_env, root


def api(prefect_server: PrefectServer, method: str, path: str, **body) -> list | dict:
    payload = None if method == "GET" else body
    response = requests.request(method, f"{prefect_server.api_url}{path}", json=payload, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else {}


def flow_runs(prefect_server: PrefectServer, deployment: str) -> list[dict]:
    (found,) = [d for d in api(prefect_server, "POST", "/deployments/filter") if d["name"] == deployment]
    return api(
        prefect_server, "POST", "/flow_runs/filter", flow_runs={"deployment_id": {"any_": [found["id"]]}}
    )


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def finished(runs: list[dict]) -> bool:
    return bool(runs) and all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED") for r in runs)


def run_watcher(prefect_server: PrefectServer) -> dict:
    """Start the `watch-releases` deployment now and wait for it; return its flow run."""
    (deployment,) = [
        d for d in api(prefect_server, "POST", "/deployments/filter") if d["name"] == "watch-releases"
    ]
    created = api(prefect_server, "POST", f"/deployments/{deployment['id']}/create_flow_run")
    run = wait_for(
        lambda: (
            (r := api(prefect_server, "GET", f"/flow_runs/{created['id']}"))["state"]["type"]
            in ("COMPLETED", "FAILED", "CRASHED")
            and r
        ),
        180,
        "the watcher run",
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    return run


def release_events(prefect_server: PrefectServer) -> list[dict]:
    page = api(
        prefect_server,
        "POST",
        "/events/filter",
        filter={
            "event": {"name": ["quantforge.model.released"]},
            "occurred": {"since": "2020-01-01T00:00:00Z"},
        },
    )
    return page["events"]


def announced(prefect_server: PrefectServer, count: int) -> list[str]:
    """The announced shas, newest first, once `count` have arrived (the server stores events in batches);
    a few seconds more are given for any unexpected extra one to show up."""
    wait_for(lambda: len(release_events(prefect_server)) >= count, 60, f"{count} release events")
    time.sleep(5)
    return [e["payload"]["sha"] for e in release_events(prefect_server)]


def new_commit(hub: HubServer, folder: Path, seed: int) -> str:
    """Change the weights and push them as a new commit of the watched repo."""
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"].mul_(1.0 + seed / 100)
    save_file(tensors, weights, metadata={"format": "pt"})
    return hub.seed_repo("quantforge-test/watched", folder, message=f"update {seed}")


def test_new_commits_trigger_exactly_one_run_each(stack, bundled_model, tmp_path):
    from mlflow import MlflowClient

    hub, mlflow_server, prefect_server, worker_env, root = stack
    folder = tiny_model("llama", tmp_path / "watched", bundled_model)
    first_sha = hub.seed_repo("quantforge-test/watched", folder, message="first release")
    mlflow = MlflowClient(mlflow_server.url, mlflow_server.url)

    with PrefectWorker(root, prefect_server, POOL, "worker-a", worker_env):
        run_watcher(prefect_server)
        assert announced(prefect_server, 1) == [first_sha]
        runs = wait_for(
            lambda: finished(r := flow_runs(prefect_server, "quantize")) and r, 300, "quantize run 1"
        )
        assert [r["state"]["type"] for r in runs] == ["COMPLETED"]
        (version,) = mlflow.search_model_versions("name = 'watched--int8-asym'")
        assert version.tags["quantforge.source_sha"] == first_sha
        (event,) = release_events(prefect_server)
        latency = dt.datetime.fromisoformat(runs[0]["start_time"]) - dt.datetime.fromisoformat(
            event["occurred"]
        )
        print(f"trigger-to-run latency: {latency.total_seconds():.1f} s")  # reported in the closing note

        run_watcher(prefect_server)  # nothing new on the Hub: nothing announced (checked below)

        second_sha = new_commit(hub, folder, seed=1)
        run_watcher(prefect_server)
        assert announced(prefect_server, 2) == [second_sha, first_sha]  # not three: the quiet poll was
        runs = wait_for(
            lambda: len(r := flow_runs(prefect_server, "quantize")) == 2 and finished(r) and r, 300, "run 2"
        )
        assert sorted(r["state"]["type"] for r in runs) == ["COMPLETED", "COMPLETED"]
        shas = {
            v.tags["quantforge.source_sha"]
            for v in mlflow.search_model_versions("name = 'watched--int8-asym'")
        }
        assert shas == {first_sha, second_sha}


def test_release_notice_by_http_post_starts_a_run(stack, bundled_model, tmp_path):
    """What a CI job or a Hub webhook relay does against a self-hosted server (README)."""
    hub, _, prefect_server, worker_env, root = stack
    folder = tiny_model("llama", tmp_path / "posted", bundled_model, seed=3)
    sha = hub.seed_repo("quantforge-test/posted", folder)
    request = {**SETTINGS, "model": "quantforge-test/posted", "revision": sha, "output_dir": str(tmp_path)}
    event = {
        "id": str(uuid.uuid4()),
        "occurred": dt.datetime.now(dt.UTC).isoformat(),
        "event": "quantforge.model.released",
        "resource": {"prefect.resource.id": "huggingface.model.quantforge-test/posted"},
        "payload": {"repo": "quantforge-test/posted", "sha": sha, "request": request},
    }
    with PrefectWorker(root, prefect_server, POOL, "worker-post", worker_env):
        before = len(flow_runs(prefect_server, "quantize"))
        requests.post(f"{prefect_server.api_url}/events", json=[event], timeout=30).raise_for_status()
        runs = wait_for(
            lambda: len(r := flow_runs(prefect_server, "quantize")) == before + 1 and finished(r) and r,
            300,
            "the posted run",
        )
    posted = [r for r in runs if r["parameters"]["request"]["model"] == "quantforge-test/posted"]
    assert [r["state"]["type"] for r in posted] == ["COMPLETED"]


def test_two_workers_take_two_models_at_once_within_the_memory_limit(stack, bundled_model, tmp_path):
    hub, _, prefect_server, worker_env, root = stack
    sources = []
    for seed in (5, 6):
        folder = tiny_model("llama", tmp_path / f"pair-{seed}", bundled_model, seed=seed)
        sources.append(
            (f"quantforge-test/pair-{seed}", hub.seed_repo(f"quantforge-test/pair-{seed}", folder))
        )
    # Room for one quantization at a time on this host.
    slots = memory_slots(6_400_000)
    prefect_server.cli("global-concurrency-limit", "create", memory_limit_name(), "--limit", str(slots))
    before = {r["id"] for r in flow_runs(prefect_server, "quantize")}
    with (
        # One flow run at a time each (`--limit 1`, passed through by infra/start-worker.sh).
        PrefectWorker(root, prefect_server, POOL, "worker-1", worker_env, ("--limit", "1")),
        PrefectWorker(root, prefect_server, POOL, "worker-2", worker_env, ("--limit", "1")),
    ):
        for repo, sha in sources:
            request = {**SETTINGS, "model": repo, "revision": sha, "output_dir": str(tmp_path)}
            event = {
                "id": str(uuid.uuid4()),
                "occurred": dt.datetime.now(dt.UTC).isoformat(),
                "event": "quantforge.model.released",
                "resource": {"prefect.resource.id": f"huggingface.model.{repo}"},
                "payload": {"repo": repo, "sha": sha, "request": request},
            }
            requests.post(f"{prefect_server.api_url}/events", json=[event], timeout=30).raise_for_status()
        runs = wait_for(
            lambda: (
                len(r := [x for x in flow_runs(prefect_server, "quantize") if x["id"] not in before]) == 2
                and finished(r)
                and r
            ),
            400,
            "both runs",
        )
    assert [r["state"]["type"] for r in runs] == ["COMPLETED", "COMPLETED"]
    # Both flow runs were in flight together (two workers, two models at once) ...
    spans = sorted((r["start_time"], r["end_time"]) for r in runs)
    assert spans[1][0] < spans[0][1]
    # ... but their heavy steps never overlapped: the server's task-run records say so.
    heavy = []
    for run in runs:
        task_runs = api(prefect_server, "POST", "/task_runs/filter", flow_runs={"id": {"any_": [run["id"]]}})
        steps = [t for t in task_runs if t["name"].rsplit("-", 1)[0] in ("export", "quantize", "evaluate")]
        heavy.append((min(t["start_time"] for t in steps), max(t["end_time"] for t in steps)))
    heavy.sort()
    assert heavy[0][1] <= heavy[1][0], heavy
    # One run per worker: each worker started exactly one of the two flow runs (the other worker may
    # have tried the same run first and been told it was taken: that is not a start).
    for worker in ("worker-1", "worker-2"):
        log = (root / worker / "prefect.log").read_text()
        started = [
            run
            for run in runs
            if f"submitting flow run '{run['id']}'" in log
            and f"Aborted submission of flow run '{run['id']}'" not in log
        ]
        assert len(started) == 1, worker
