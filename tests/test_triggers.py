"""Triggers and scale-out on the production stack, over real processes on loopback: PostgreSQL and Redis;
the Prefect API and its background services apart, on both (prefect-redis); MLflow on PostgreSQL with its
artifacts in an S3 bucket (moto's server, the real boto3 client); workers started by infra/start-worker.sh;
the local Hub. These are the programs and settings infra/compose.yaml runs, and README's "Running it for
real" in order: the servers behind their credentials (the Prefect API behind its auth string, MLflow behind
basic auth with `--allowed-hosts`), the work pool and deployments from infra/deploy.py, then workers.
"""

import base64
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
import requests
import yaml
from safetensors.torch import load_file, save_file

from quantforge.core.manifest import MANIFEST_FILE, Manifest
from quantforge.registry.releases import RELEASES_EXPERIMENT
from quantforge.registry.variants import TAG
from quantforge.tasks.resources import memory_slots
from quantforge.tasks.watchlist import load_watchlist
from quantforge_testing.hub import HubServer
from quantforge_testing.servers import (
    MlflowServer,
    PostgresServer,
    PrefectServer,
    PrefectWorker,
    RedisServer,
    S3Server,
    free_port,
)
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import EVALUATION_TEXT

REPO_ROOT = Path(__file__).resolve().parents[1]
START_WORKER = REPO_ROOT / "infra" / "start-worker.sh"
QUANTFORGE = str(Path(sys.executable).with_name("quantforge"))
TOKEN = "hf_quantforgeTriggerToken"
PREFECT_AUTH = "admin:canary-prefect-auth-4f2a9e"
MLFLOW_PASSWORD = "canary-mlflow-Pa55-trigger"
DATABASES = {"prefect": "canary-prefect-db-7c1e", "mlflow": "canary-mlflow-db-2b9d"}
BUCKET = "mlflow"
MLFLOW_HOSTS = "mlflow:5000,127.0.0.1:*"  # compose's worker says `mlflow:5000`; this module, 127.0.0.1
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
SWEEP_CRON = "0 2 1 1 *"  # January 1st, 02:00
HEAVY_STEPS = ("-export", "-quantize", "-measure")  # a made variant's task names: `openvino-quantize-3f2`


class Stack(NamedTuple):
    hub: HubServer
    postgres: PostgresServer
    s3: S3Server
    mlflow: MlflowServer
    prefect: PrefectServer
    worker_env: dict[str, str]  # what a worker host sets: the Hub, MLflow and its credentials
    root: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The servers, then the work pool and deployments (infra/deploy.py); workers are per test. This
    module's own MLflow clients get the credentials the workers get."""
    root = tmp_path_factory.mktemp("stack")
    with (
        HubServer(root / "hub", tokens={TOKEN: "quantforge-bot"}) as hub,
        PostgresServer(root / "postgres", DATABASES) as postgres,
        RedisServer(root / "redis") as redis_server,
        S3Server(root / "s3", BUCKET) as s3,
        MlflowServer.with_basic_auth(
            root / "mlflow",
            MLFLOW_PASSWORD,
            env=s3.client_env,
            backend_store_uri=postgres.url("mlflow", "postgresql+psycopg2"),
            artifacts_destination=f"s3://{BUCKET}/artifacts",
            allowed_hosts=MLFLOW_HOSTS,
        ) as mlflow_server,
        PrefectServer(
            root / "prefect",
            auth_string=PREFECT_AUTH,
            database_url=postgres.url("prefect", "postgresql+asyncpg"),
            redis_server=redis_server,
        ) as prefect_server,
        pytest.MonkeyPatch.context() as env,
    ):
        mlflow_credentials = {
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
        }
        for name, value in mlflow_credentials.items():
            env.setenv(name, value)
        worker_env = {  # no S3 variables: MLflow serves the artifacts
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": TOKEN,
            "HF_HUB_DISABLE_XET": "1",
            "MLFLOW_TRACKING_URI": mlflow_server.url,
            **mlflow_credentials,
            "QUANTFORGE_HOME": str(root / "worker-home"),
            "HF_HOME": str(root / "worker-hf-home"),
        }
        # README's steps in order: a worker host started before the deployments waits for the work
        # pool (infra/start-worker.sh) rather than exit, and starts once infra/deploy.py has made it.
        early = PrefectWorker(
            root, prefect_server, POOL, "worker-early", worker_env, start_script=START_WORKER
        )
        with early:
            wait_for(
                lambda: b"waiting for work pool 'quantforge'" in early.log_path.read_bytes(), 120, "a wait"
            )
            deploy = subprocess.run(
                [
                    sys.executable,
                    str(REPO_ROOT / "infra" / "deploy.py"),
                    *("--watchlist", str(watchlist(root))),
                    # Schedules that fall outside the module's run: a scheduled watcher or sweep would
                    # announce releases in the middle of a test. Tests start the watcher themselves.
                    *("--watch-interval", str(24 * 3600), "--sweep-cron", SWEEP_CRON),
                ],
                env={**os.environ, **prefect_server.client_env},
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert deploy.returncode == 0, deploy.stderr[-2000:]
            wait_for(
                lambda: b"Worker 'worker-early' started!" in early.log_path.read_bytes(), 120, "the worker"
            )
        yield Stack(hub, postgres, s3, mlflow_server, prefect_server, worker_env, root)


def start_worker(stack: Stack, name: str, *args: str, env: dict[str, str] | None = None) -> PrefectWorker:
    """A worker as a host starts one: infra/start-worker.sh, `args` passed to `prefect worker start`."""
    worker_env = {**stack.worker_env, **(env or {})}
    return PrefectWorker(stack.root, stack.prefect, POOL, name, worker_env, args, start_script=START_WORKER)


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


def announced(stack: Stack, repo: str, count: int) -> list[str]:
    """The announced shas of `repo`, newest first. The watcher records each event's id in MLflow as it
    emits it (registry/releases.py): `count` records, then the server holding exactly those events (it
    stores events in batches), are the states waited on."""
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow.url)
    experiment = client.get_experiment_by_name(RELEASES_EXPERIMENT)
    records = client.search_runs([experiment.experiment_id], f"tags.`{TAG}source_repo` = '{repo}'")
    recorded = {r.data.tags[f"{TAG}event_id"] for r in records}
    assert len(recorded) == count, recorded
    events = wait_for(
        lambda: (e := release_events(stack.prefect, repo)) and {x["id"] for x in e} >= recorded and e,
        60,
        f"the {count} recorded release events on the server",
    )
    assert {e["id"] for e in events} == recorded
    return [e["payload"]["sha"] for e in events]


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
    """The Prefect API answers only its auth string (health probes aside); MLflow only its users, and
    only under the Host names it was started with (`--allowed-hosts`: compose's worker says mlflow:5000)."""
    mlflow_server, prefect_server = stack.mlflow, stack.prefect
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
    admin = ("admin", MLFLOW_PASSWORD)
    assert requests.get(search, auth=admin, headers={"Host": "mlflow:5000"}, timeout=30).ok
    refused = requests.get(search, auth=admin, headers={"Host": "rebound.example.org:5000"}, timeout=30)
    assert refused.status_code == 403


def test_refused_release_events_start_no_work(stack):
    """Events that try to set options, name an unwatched repo, ask for a recipe set the entry does not
    allow or give a moving revision: each run ends Refused with the reason logged, before any download,
    task or MLflow run. No model is needed: nothing gets that far."""
    hub, mlflow_server, prefect_server, root = stack.hub, stack.mlflow, stack.prefect, stack.root
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
    # has sent its last lines. It serves compose's and k8s' health check (`--with-healthcheck`).
    health_port = free_port()
    health = {"PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_WORKER_WEBSERVER_PORT": str(health_port)}
    with start_worker(stack, "worker-refusals", "--with-healthcheck", env=health):
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
        assert requests.get(f"http://127.0.0.1:{health_port}/health", timeout=30).json() == {"message": "OK"}
    assert len(hub.control.matching(None, "quantforge-test/", None)) == hub_requests  # nothing fetched
    assert recorded_runs(mlflow_server) == mlflow_runs


@pytest.mark.e2e
@pytest.mark.model
def test_new_commits_trigger_exactly_one_run_each(stack, bundled_model, tmp_path):
    from mlflow import MlflowClient

    hub, mlflow_server, prefect_server, root = stack.hub, stack.mlflow, stack.prefect, stack.root
    watchlist(root, [{"model": "quantforge-test/watched"}])
    folder = tiny_model("llama", tmp_path / "watched", bundled_model)
    first_sha = hub.seed_repo("quantforge-test/watched", folder, message="first release")
    mlflow = MlflowClient(mlflow_server.url, mlflow_server.url)
    before = {r["id"] for r in flow_runs(prefect_server, "quantize")}

    with start_worker(stack, "worker-a"):
        run_watcher(prefect_server)
        assert announced(stack, "quantforge-test/watched", 1) == [first_sha]
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
        assert announced(stack, "quantforge-test/watched", 2) == [second_sha, first_sha]
        runs = new_runs(prefect_server, before, 2, 300)
        assert sorted(r["state"]["type"] for r in runs) == ["COMPLETED", "COMPLETED"]
        shas = {
            v.tags["quantforge.source_sha"]
            for v in mlflow.search_model_versions("name = 'watched--int8-asym'")
        }
        assert shas == {first_sha, second_sha}


@pytest.mark.e2e
@pytest.mark.model
def test_posted_release_runs_through_a_postgres_restart_and_is_pulled_from_s3(stack, bundled_model, tmp_path):
    """A posted event names the release and one of the recipe sets its entry allows; the quantize run it
    leads to has exactly the request the watchlist makes (its gates, texts, output folder).

    PostgreSQL, under both servers, restarts (fast shutdown: every connection dropped) once that run
    has begun making its variants. The Prefect API answers 503 while the database is away and clients
    retry; both servers reconnect. The run goes on and completes; what it made is recorded once and the
    passed variants are registered once each, by this same run. Their files are in the S3 bucket, and a
    serving host that knows only MLflow's URL and its credentials installs one, each byte checked."""
    from mlflow import MlflowClient

    hub, prefect_server, root = stack.hub, stack.prefect, stack.root
    watchlist(root)
    folder = tiny_model("llama", tmp_path / "posted", bundled_model, seed=3)
    sha = hub.seed_repo("quantforge-test/posted", folder)
    before = {r["id"] for r in flow_runs(prefect_server, "quantize")}
    with start_worker(stack, "worker-post"):
        post_release(
            prefect_server,
            "quantforge-test/posted",
            {"repo": "quantforge-test/posted", "sha": sha, "recipes": "default"},
        )
        (running,) = wait_for(
            lambda: [r for r in flow_runs(prefect_server, "quantize") if r["id"] not in before],
            300,
            "the release run",
        )
        made = wait_for(lambda: heavy_task_runs(prefect_server, running), 300, "a variant being made")
        stack.postgres.restart()
        restarted = dt.datetime.now(dt.UTC)
        # The servers had connections open, and lost them all.
        assert b"terminating connection due to administrator command" in stack.postgres.log_path.read_bytes()
        print("PostgreSQL restarted during", [(t["name"], t["state"]["type"]) for t in made])
        (run,) = new_runs(prefect_server, before, 1, 300)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert (
        dt.datetime.fromisoformat(run["start_time"]) < restarted < dt.datetime.fromisoformat(run["end_time"])
    )
    (quantize,) = child_runs(prefect_server, run)
    entries = load_watchlist(root / "watchlist.yaml")
    expected = entries.request_for(entries.watch[1], "quantforge-test/posted", sha, "default")
    assert quantize["parameters"]["request"] == expected.model_dump(mode="json")
    assert quantize["state"]["type"] == "COMPLETED"
    tasks = api(prefect_server, "POST", "/task_runs/filter", flow_runs={"id": {"any_": [quantize["id"]]}})
    assert {t["state"]["type"] for t in tasks} == {"COMPLETED"}
    assert any(
        dt.datetime.fromisoformat(t["end_time"]) > restarted for t in tasks if t["id"] == made[0]["id"]
    )
    assert any((root / "output").glob("posted-*/report.json"))  # the watchlist's output folder

    # Each variant recorded once, and each that passed registered once (no version from a retry).
    mlflow = MlflowClient(stack.mlflow.url, stack.mlflow.url)
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    recorded = [
        r.data.tags
        for r in mlflow.search_runs(experiments, f"tags.`quantforge.source_sha` = '{sha}'")
        if "quantforge.identity" in r.data.tags
    ]
    identities = [tags["quantforge.identity"] for tags in recorded]
    assert identities and len(identities) == len(set(identities))
    passed = {
        f"posted--{tags['quantforge.recipe']}" for tags in recorded if tags["quantforge.passed"] == "true"
    }
    versions = mlflow.search_model_versions("name LIKE 'posted--%'")
    print("registered:", sorted((v.name, v.version) for v in versions))
    assert sorted(v.name for v in versions) == sorted(passed) and passed
    assert {v.tags["quantforge.source_sha"] for v in versions} == {sha}
    s3 = stack.s3.client()
    for version in versions:
        prefix = s3_prefix(version.source)
        stored = {key.removeprefix(prefix) for key in stack.s3.keys(prefix)}
        manifest = Manifest.model_validate_json(
            s3.get_object(Bucket=BUCKET, Key=prefix + MANIFEST_FILE)["Body"].read()
        )
        assert set(manifest.files) | {MANIFEST_FILE} <= stored, version.name

    version = versions[0]
    serving_host = {  # what a serving host sets: no S3 endpoint nor keys (MLflow serves the bytes)
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "serving-home"),
        "MLFLOW_TRACKING_URI": stack.mlflow.url,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
        "QUANTFORGE_HOME": str(tmp_path / "serving-host"),
    }
    pulled = subprocess.run(
        [QUANTFORGE, "pull", f"{version.name}/{version.version}"],
        env=serving_host,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    installed = Path(pulled.stdout.strip())
    for name in Manifest.model_validate_json((installed / MANIFEST_FILE).read_bytes()).files:
        stored = s3.get_object(Bucket=BUCKET, Key=s3_prefix(version.source) + name)["Body"].read()
        assert (installed / name).read_bytes() == stored, name


def s3_prefix(source: str) -> str:
    """Where MLflow stores a version's files in the bucket: `mlflow-artifacts:/…` under `artifacts/`."""
    return f"artifacts/{source.removeprefix('mlflow-artifacts:/').strip('/')}/"


def heavy_task_runs(prefect_server: PrefectServer, release_run: dict) -> list[dict]:
    """The export, quantize and measure task runs of the quantize flow under `release_run` so far."""
    runs = child_runs(prefect_server, release_run)
    if not runs:
        return []
    task_runs = api(prefect_server, "POST", "/task_runs/filter", flow_runs={"id": {"any_": [runs[0]["id"]]}})
    return [t for t in task_runs if t["name"].rsplit("-", 1)[0].endswith(HEAVY_STEPS)]


@pytest.mark.e2e
@pytest.mark.model
def test_two_workers_take_two_models_at_once_within_the_memory_limit(stack, bundled_model, tmp_path):
    hub, prefect_server, root = stack.hub, stack.prefect, stack.root
    watchlist(root)
    sources = []
    for seed in (5, 6):
        folder = tiny_model("llama", tmp_path / f"pair-{seed}", bundled_model, seed=seed)
        sources.append(
            (f"quantforge-test/pair-{seed}", hub.seed_repo(f"quantforge-test/pair-{seed}", folder))
        )
    # Room for one quantization at a time on this host: both workers size the host's limit so.
    slots = memory_slots(6_400_000, 512, 49_152)  # the tiny models, scored on 512-token windows
    memory = {"QUANTFORGE_MEMORY_GIB": str(slots)}
    before = {r["id"] for r in flow_runs(prefect_server, "quantize")}
    with (
        # One flow run at a time each (`--limit 1`, passed through by infra/start-worker.sh).
        start_worker(stack, "worker-1", "--limit", "1", env=memory) as worker_1,
        start_worker(stack, "worker-2", "--limit", "1", env=memory) as worker_2,
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
        steps = [t for t in task_runs if t["name"].rsplit("-", 1)[0].endswith(HEAVY_STEPS)]
        heavy.append((min(t["start_time"] for t in steps), max(t["end_time"] for t in steps)))
    heavy.sort()
    assert heavy[0][1] <= heavy[1][0], heavy
    # One run per worker: each worker started exactly one of the two flow runs (the other worker may
    # have tried the same run first and been told it was taken: that is not a start).
    for worker in (worker_1, worker_2):
        log = worker.log_path.read_text()
        started = [
            run
            for run in runs
            if f"submitting flow run '{run['id']}'" in log
            and f"Aborted submission of flow run '{run['id']}'" not in log
        ]
        assert len(started) == 1, worker.log_path


def test_background_services_schedule_the_deployments(stack):
    """The background services' scheduler (a process apart from the API) has put the coming runs of the
    scheduled deployments on the calendar: the watcher a day after registration, the sweep on January
    1st; none is due during the module. Last in the module: the scheduler's loop has run by then."""
    for name in ("watch-releases", "nightly-sweep"):
        runs = wait_for(
            lambda name=name: [r for r in flow_runs(stack.prefect, name) if r["auto_scheduled"]],
            120,
            f"scheduled runs of {name}",
        )
        assert {r["state"]["type"] for r in runs} == {"SCHEDULED"}, name
        first = min(dt.datetime.fromisoformat(r["expected_start_time"]) for r in runs)
        assert first > dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), (name, first)
