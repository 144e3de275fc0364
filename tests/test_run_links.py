"""The quantize flow run's links: to its MLflow run on a tracking server (a note where the store is a local
database) and to each published variant's Hub commit, with no credential in any of them."""

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.context import FlowRunContext

from quantforge.registry.run_links import link_hub_commits, link_mlflow_run
from quantforge.registry.tracking import mlflow_client
from quantforge.registry.variants import start_flow_run
from quantforge_testing.servers import MlflowServer
from tests.test_report import variant

PASSWORD = "canary-Pa55w0rd-run-links"
HUB_PASSWORD = "canary-hub-proxy-secret"
HF_TOKEN = "hf_canaryTokenOfTheRunLinks"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@flow
def linked(mlflow_run: str) -> str:
    """The two link steps of the quantize flow, on one published variant and one that is not."""
    published = variant("int8-asym", 100.0, 20.0, 50.0).model_copy(
        update={"hub_repo": "acme/model-int8-asym-ov", "hub_commit": COMMIT}
    )
    link_mlflow_run(mlflow_run, "org/Model")
    link_hub_commits([published, variant("int4-awq", 60.0, 25.0, 60.0, passed=False)], "org/Model")
    return str(FlowRunContext.get().flow_run.id)


def artifacts_of(flow_run_id: str) -> dict[str, tuple[str, str]]:
    """The flow run's artifacts: key → (description, data)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: (a.description, a.data) for a in found}


def test_a_tracking_server_run_and_the_hub_commits_are_linked_without_credentials(
    prefect_harness, tmp_path, monkeypatch
):
    with MlflowServer.with_basic_auth(tmp_path / "mlflow", PASSWORD) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url.replace("http://", f"http://admin:{PASSWORD}@"))
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"https://proxy:{HUB_PASSWORD}@hub.example/")
        monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
        run_id = start_flow_run("org/Model", COMMIT)
        experiment = mlflow_client().get_run(run_id).info.experiment_id
        artifacts = artifacts_of(linked(run_id))
    assert artifacts == {
        "quantforge-org-model-mlflow-run": (
            "quantforge MLflow run",
            f"[MLflow run {run_id}]({server.url}/#/experiments/{experiment}/runs/{run_id})",
        ),
        "quantforge-org-model-int8-asym-hub": (
            "quantforge: int8-asym on the Hub",
            f"[acme/model-int8-asym-ov@{COMMIT[:12]}](https://hub.example/acme/model-int8-asym-ov/commit/{COMMIT})",
        ),
    }
    text = repr(artifacts)
    assert PASSWORD not in text and HUB_PASSWORD not in text and HF_TOKEN not in text and "@hub" not in text


def test_a_local_tracking_store_is_named_in_a_note(prefect_harness, monkeypatch, quantforge_home):
    """The embedded sqlite database has no page to link to: a markdown note says where the run is."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_id, database = "f00d" * 8, quantforge_home.resolve() / "mlflow" / "mlflow.db"
    assert artifacts_of(linked(run_id))["quantforge-org-model-mlflow-run"] == (
        "quantforge MLflow run",
        f"MLflow run `{run_id}` in the tracking store `sqlite:///{database}` (not served over HTTP).",
    )
