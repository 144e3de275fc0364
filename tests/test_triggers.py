"""Triggers and scale-out over real processes on loopback: `prefect server`, process workers,
`mlflow server` and the local Hub. The deployments are registered by `infra/deploy.py`, as in production,
and both servers run as infra/ ships them: the Prefect API behind its auth string, MLflow behind basic
auth, the workers with the credentials in their environment.
"""

import base64
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

from quantforge.tasks.resources import memory_limit_name, memory_slots
from quantforge.tasks.watchlist import load_watchlist
from quantforge_testing.hub import HubServer
from quantforge_testing.servers import MlflowServer, PrefectServer, PrefectWorker
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import EVALUATION_TEXT

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_quantforgeTriggerToken"
PREFECT_AUTH = "admin:canary-prefect-auth-4f2a9e"
MLFLOW_PASSWORD = "canary-mlflow-Pa55-trigger"
POOL = "quantforge"
SETTINGS = {
    "recipes": "quick",
    "only": ["int8-asym"],
    "evaluation": str(EVALUATION_TEXT),
    "max_eval_windows": 2,
    "new_tokens": 4,
}
# What the deployment's watchlist covers: two models (`posted` may also be run with the `default` set)
# and the `pair-*` repos of the test author. Flows read the file when they run, so a test writes the
# entries it needs (`watch`).
WATCH = [
    {"model": "quantforge-test/watched"},
    {"model": "quantforge-test/posted", "allowed_recipes": ["default"]},
    {"author": "quantforge-test", "name_pattern": "pair-*", "pipeline_tag": None},
]
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Prefect server + work pool + deployments, MLflow server, local Hub; workers are per test. This
    module's own MLflow clients get the credentials the workers get."""
    root = tmp_path_factory.mktemp("stack")
    with (
        HubServer(root / "hub", tokens={TOKEN: "quantforge-bot"}) as hub,
        MlflowServer.with_basic_auth(root / "mlflow", MLFLOW_PASSWORD) as mlflow_server,
        PrefectServer(root / "prefect", auth_string=PREFECT_AUTH) as prefect_server,
        pytest.MonkeyPatch.context() as env,
    ):
        mlflow_credentials = {
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
        }
        for name, value in mlflow_credentials.items():
            env.setenv(name, value)
        prefect_server.cli("work-pool", "create", POOL, "--type", "process")
        worker_env = {
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": TOKEN,
            "HF_HUB_DISABLE_XET": "1",
            "MLFLOW_TRACKING_URI": mlflow_server.url,
            **mlflow_credentials,
            "QUANTFORGE_HOME": str(root / "worker-home"),
            "HF_HOME": str(root / "worker-hf-home"),
        }
        deploy = subprocess.run(
            [sys.executable, str(REPO_ROOT / "infra" / "deploy.py"), "--watchlist", str(watchlist(root))],
            env={**os.environ, **prefect_server.client_env},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deploy.returncode == 0, deploy.stderr[-2000:]
        yield hub, mlflow_server, prefect_server, worker_env, root


def watchlist(root: Path, entries: list[dict] = WATCH) -> Path:
    """Write the deployment's watchlist with `entries`; the test settings are every entry's defaults."""
    path = root / "watchlist.yaml"
    path.write_text(
        yaml.safe_dump({"defaults": {**SETTINGS, "output_dir": str(root / "output")}, "watch": entries})
    )
    return path


def authorization(auth_string: str) -> dict[str, str]:
    """The header a Prefect client sends for PREFECT_API_AUTH_STRING (HTTP basic auth of the string)."""
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def api(prefect_server: PrefectServer, method: str, path: str, **body) -> list | dict:
    payload = None if method == "GET" else body
    response = requests.request(
        method,
        f"{prefect_server.api_url}{path}",
        json=payload,
        headers=authorization(PREFECT_AUTH),
        timeout=30,
    )
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


def release_events(prefect_server: PrefectServer, repo: str) -> list[dict]:
    page = api(
        prefect_server,
        "POST",
        "/events/filter",
        filter={
            "event": {"name": ["quantforge.model.released"]},
            "resource": {"id": [f"huggingface.model.{repo}"]},
            "occurred": {"since": "2020-01-01T00:00:00Z"},
        },
    )
    return page["events"]


def announced(prefect_server: PrefectServer, repo: str, count: int) -> list[str]:
    """The announced shas of `repo`, newest first, once `count` have arrived (the server stores events in
    batches); a few seconds more are given for any unexpected extra one to show up."""
    wait_for(lambda: len(release_events(prefect_server, repo)) >= count, 60, f"{count} release events")
    time.sleep(5)
    return [e["payload"]["sha"] for e in release_events(prefect_server, repo)]


def new_commit(hub: HubServer, folder: Path, seed: int) -> str:
    """Change the weights and push them as a new commit of the watched repo."""
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"].mul_(1.0 + seed / 100)
    save_file(tensors, weights, metadata={"format": "pt"})
    return hub.seed_repo("quantforge-test/watched", folder, message=f"update {seed}")


def post_release(prefect_server: PrefectServer, repo: str, payload: dict) -> None:
    """POST a release event to the server, as a CI job or a Hub webhook relay does (README)."""
    event = {
        "id": str(uuid.uuid4()),
        "occurred": dt.datetime.now(dt.UTC).isoformat(),
        "event": "quantforge.model.released",
        "resource": {"prefect.resource.id": f"huggingface.model.{repo}"},
        "payload": payload,
    }
    requests.post(
        f"{prefect_server.api_url}/events", json=[event], headers=authorization(PREFECT_AUTH), timeout=30
    ).raise_for_status()


def new_runs(prefect_server: PrefectServer, before: set[str], count: int, timeout: float) -> list[dict]:
    """The `count` runs of the `quantize` deployment not in `before`, once all have finished."""
    return wait_for(
        lambda: (
            len(r := [x for x in flow_runs(prefect_server, "quantize") if x["id"] not in before]) == count
            and finished(r)
            and r
        ),
        timeout,
        f"{count} runs of the quantize deployment",
    )


def child_runs(prefect_server: PrefectServer, parent: dict) -> list[dict]:
    """The flow runs `parent` started (the quantize flow under a release run)."""
    return api(
        prefect_server,
        "POST",
        "/flow_runs/filter",
        flow_runs={"parent_flow_run_id": {"any_": [parent["id"]]}},
    )


def log_lines(prefect_server: PrefectServer, run: dict) -> list[str]:
    return [
        line["message"]
        for line in api(prefect_server, "POST", "/logs/filter", logs={"flow_run_id": {"any_": [run["id"]]}})
    ]


def recorded_runs(mlflow_server: MlflowServer) -> int:
    """Runs in every MLflow experiment: quantize runs and the watcher's announcements."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments)) if experiments else 0


def test_servers_refuse_clients_without_credentials(stack):
    """The Prefect API answers only its auth string (health probes aside); MLflow only its users."""
    _, mlflow_server, prefect_server, _, _ = stack
    url = prefect_server.api_url
    for headers in ({}, authorization("admin:guessed"), {"Authorization": "Bearer " + PREFECT_AUTH}):
        assert requests.post(f"{url}/flows/filter", json={}, headers=headers, timeout=30).status_code == 401
        event = {"id": str(uuid.uuid4()), "occurred": "2026-01-01T00:00:00Z", "event": "x", "resource": {}}
        assert requests.post(f"{url}/events", json=[event], headers=headers, timeout=30).status_code == 401
    assert requests.post(f"{url}/flows/filter", json={}, headers=authorization(PREFECT_AUTH), timeout=30).ok
    assert requests.get(f"{url}/health", timeout=30).ok  # probes need no credentials
    search = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=30).status_code == 401
    assert requests.get(search, auth=("admin", "guessed"), timeout=30).status_code == 401
    assert requests.get(search, auth=("admin", MLFLOW_PASSWORD), timeout=30).ok


def test_refused_release_events_start_no_work(stack):
    """Events that try to set options, name an unwatched repo, ask for a recipe set the entry does not
    allow or give a moving revision: each run ends Refused with the reason logged, before any download,
    task or MLflow run. No model is needed: nothing gets that far."""
    hub, mlflow_server, prefect_server, worker_env, root = stack
    refused = {
        "`request`: ": {
            "repo": "quantforge-test/posted",
            "sha": SHA,
            "request": {
                "model": "/etc",
                "allow_pickle": True,
                "trust_remote_code": True,
                "promote_best": True,
            },
        },
        "`repo`: 'quantforge-test/unwatched' is not covered": {
            "repo": "quantforge-test/unwatched",
            "sha": SHA,
        },
        "`recipes`: 'pytorch' is not allowed": {
            "repo": "quantforge-test/posted",
            "sha": SHA,
            "recipes": "pytorch",
        },
        "`sha`: 'main' is not a commit sha": {"repo": "quantforge-test/posted", "sha": "main"},
    }
    watchlist(root)
    before = {r["id"] for r in flow_runs(prefect_server, "quantize")}
    hub_requests = len(hub.control.matching(None, "quantforge-test/", None))
    mlflow_runs = recorded_runs(mlflow_server)
    # The worker runs until the log lines are in: stopping it stops a finished run's process before it
    # has sent its last lines.
    with PrefectWorker(root, prefect_server, POOL, "worker-refusals", worker_env):
        for payload in refused.values():
            post_release(prefect_server, payload["repo"], payload)
        runs = new_runs(prefect_server, before, len(refused), 300)  # four runs start at once
        assert {(r["state"]["type"], r["state"]["name"]) for r in runs} == {("FAILED", "Refused")}
        for reason, payload in refused.items():
            (run,) = [r for r in runs if r["parameters"]["payload"] == payload]
            assert reason in run["state"]["message"], run["state"]
            wait_for(
                lambda run=run, reason=reason: any(reason in line for line in log_lines(prefect_server, run)),
                60,
                f"the refusal {reason!r} in the run's logs",
            )
            assert child_runs(prefect_server, run) == []
            task_runs = api(
                prefect_server, "POST", "/task_runs/filter", flow_runs={"id": {"any_": [run["id"]]}}
            )
            assert task_runs == []
    assert len(hub.control.matching(None, "quantforge-test/", None)) == hub_requests  # nothing fetched
    assert recorded_runs(mlflow_server) == mlflow_runs


@pytest.mark.e2e
@pytest.mark.model
def test_new_commits_trigger_exactly_one_run_each(stack, bundled_model, tmp_path):
    from mlflow import MlflowClient

    hub, mlflow_server, prefect_server, worker_env, root = stack
    watchlist(root, [{"model": "quantforge-test/watched"}])
    folder = tiny_model("llama", tmp_path / "watched", bundled_model)
    first_sha = hub.seed_repo("quantforge-test/watched", folder, message="first release")
    mlflow = MlflowClient(mlflow_server.url, mlflow_server.url)
    before = {r["id"] for r in flow_runs(prefect_server, "quantize")}

    with PrefectWorker(root, prefect_server, POOL, "worker-a", worker_env):
        run_watcher(prefect_server)
        assert announced(prefect_server, "quantforge-test/watched", 1) == [first_sha]
        runs = new_runs(prefect_server, before, 1, 300)
        assert [r["state"]["type"] for r in runs] == ["COMPLETED"]
        (version,) = mlflow.search_model_versions("name = 'watched--int8-asym'")
        assert version.tags["quantforge.source_sha"] == first_sha
        (event,) = release_events(prefect_server, "quantforge-test/watched")
        assert event["payload"] == {"repo": "quantforge-test/watched", "sha": first_sha}  # nothing more
        latency = dt.datetime.fromisoformat(runs[0]["start_time"]) - dt.datetime.fromisoformat(
            event["occurred"]
        )
        print(f"trigger-to-run latency: {latency.total_seconds():.1f} s")  # reported in the closing note

        run_watcher(prefect_server)  # nothing new on the Hub: nothing announced (checked below)

        second_sha = new_commit(hub, folder, seed=1)
        run_watcher(prefect_server)
        # two, not three: the quiet poll announced nothing
        assert announced(prefect_server, "quantforge-test/watched", 2) == [second_sha, first_sha]
        runs = new_runs(prefect_server, before, 2, 300)
        assert sorted(r["state"]["type"] for r in runs) == ["COMPLETED", "COMPLETED"]
        shas = {
            v.tags["quantforge.source_sha"]
            for v in mlflow.search_model_versions("name = 'watched--int8-asym'")
        }
        assert shas == {first_sha, second_sha}


@pytest.mark.e2e
@pytest.mark.model
def test_release_event_runs_the_quantize_flow_with_the_watchlists_settings(stack, bundled_model, tmp_path):
    """A posted event names the release and one of the recipe sets its entry allows; the quantize run it
    leads to has exactly the request the watchlist makes (its gates, texts, output folder)."""
    hub, _, prefect_server, worker_env, root = stack
    watchlist(root)
    folder = tiny_model("llama", tmp_path / "posted", bundled_model, seed=3)
    sha = hub.seed_repo("quantforge-test/posted", folder)
    before = {r["id"] for r in flow_runs(prefect_server, "quantize")}
    with PrefectWorker(root, prefect_server, POOL, "worker-post", worker_env):
        post_release(
            prefect_server,
            "quantforge-test/posted",
            {"repo": "quantforge-test/posted", "sha": sha, "recipes": "default"},
        )
        (run,) = new_runs(prefect_server, before, 1, 300)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    (quantize,) = child_runs(prefect_server, run)
    entries = load_watchlist(root / "watchlist.yaml")
    expected = entries.request_for(entries.watch[1], "quantforge-test/posted", sha, "default")
    assert quantize["parameters"]["request"] == expected.model_dump(mode="json")
    assert quantize["state"]["type"] == "COMPLETED"
    assert any((root / "output").glob("posted-*/report.json"))  # the watchlist's output folder


@pytest.mark.e2e
@pytest.mark.model
def test_two_workers_take_two_models_at_once_within_the_memory_limit(stack, bundled_model, tmp_path):
    hub, _, prefect_server, worker_env, root = stack
    watchlist(root)
    sources = []
    for seed in (5, 6):
        folder = tiny_model("llama", tmp_path / f"pair-{seed}", bundled_model, seed=seed)
        sources.append(
            (f"quantforge-test/pair-{seed}", hub.seed_repo(f"quantforge-test/pair-{seed}", folder))
        )
    # Room for one quantization at a time on this host.
    slots = memory_slots(6_400_000, 512, 49_152)  # the tiny models, scored on 512-token windows
    prefect_server.cli("global-concurrency-limit", "create", memory_limit_name(), "--limit", str(slots))
    before = {r["id"] for r in flow_runs(prefect_server, "quantize")}
    with (
        # One flow run at a time each (`--limit 1`, passed through by infra/start-worker.sh).
        PrefectWorker(root, prefect_server, POOL, "worker-1", worker_env, ("--limit", "1")),
        PrefectWorker(root, prefect_server, POOL, "worker-2", worker_env, ("--limit", "1")),
    ):
        for repo, sha in sources:
            post_release(prefect_server, repo, {"repo": repo, "sha": sha})  # the author entry covers both
        runs = new_runs(prefect_server, before, 2, 400)
    assert [r["state"]["type"] for r in runs] == ["COMPLETED", "COMPLETED"]
    # Both flow runs were in flight together (two workers, two models at once) ...
    spans = sorted((r["start_time"], r["end_time"]) for r in runs)
    assert spans[1][0] < spans[0][1]
    # ... but their heavy steps never overlapped: the server's task-run records (of the quantize flow
    # each release run started) say so.
    heavy = []
    for run in runs:
        (quantize,) = child_runs(prefect_server, run)
        task_runs = api(
            prefect_server, "POST", "/task_runs/filter", flow_runs={"id": {"any_": [quantize["id"]]}}
        )
        heavy_steps = ("-export", "-quantize", "-measure")  # e.g. `openvino-quantize-3f2`, a run's task name
        steps = [t for t in task_runs if t["name"].rsplit("-", 1)[0].endswith(heavy_steps)]
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
