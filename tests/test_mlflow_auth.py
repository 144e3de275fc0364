"""MLflow behind basic authentication (`mlflow server --app-name basic-auth`): the credentials come from
MLFLOW_TRACKING_USERNAME/PASSWORD, missing or wrong ones fail in one line before anything is made, and
the password is written nowhere.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException

from quantforge.flows.quantize import quantize_flow
from quantforge.registry.releases import is_known, mark_announced
from quantforge.registry.tracking import mlflow_client
from quantforge.tasks.request import QuantizeRequest
from quantforge_testing.servers import MlflowServer
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import EVALUATION_TEXT, files_containing

PASSWORD = "canary-Pa55w0rd-9c1d7e"
SHA = "0123456789abcdef0123456789abcdef01234567"
QUANTFORGE = str(Path(sys.executable).with_name("quantforge"))


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    with MlflowServer.with_basic_auth(tmp_path_factory.mktemp("mlflow-auth"), PASSWORD) as server:
        yield server


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [QUANTFORGE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def test_clients_without_credentials_are_refused(auth_server, tmp_path, monkeypatch):
    """No model needed: the server refuses before anything is looked up."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert (
        requests.get(f"{auth_server.url}/api/2.0/mlflow/experiments/search?max_results=1").status_code == 401
    )
    refused = cli("pull", "any--model@champion", env={"QUANTFORGE_HOME": str(tmp_path / "host")})
    assert refused.returncode == 3  # MLflow refused: a service failure
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: MLflow at {auth_server.url} failed:") and "401" in line
    with pytest.raises(MlflowException, match="401"):  # the watcher's registry calls
        is_known("org/model", SHA)

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    mark_announced("org/model", SHA, "event-1")
    assert is_known("org/model", SHA)


@pytest.mark.e2e
@pytest.mark.model
def test_registers_and_pulls_with_credentials_and_refuses_wrong_ones(
    auth_server, bundled_model, prefect_harness, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    model = tiny_model("llama", tmp_path / "guarded-llama", bundled_model)
    request = QuantizeRequest(
        model=str(model),
        recipes="quick",
        only=["int8-asym"],
        evaluation=str(EVALUATION_TEXT),
        max_eval_windows=2,
        new_tokens=4,
        output_dir=tmp_path / "output",
    )
    (result,) = quantize_flow(request).variants
    assert result.model_version == 1
    spec = f"{result.model_name}@candidate"

    wrong = {
        "MLFLOW_TRACKING_URI": auth_server.url,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": "not-the-password",
        "QUANTFORGE_HOME": str(tmp_path / "host"),
    }
    refused = cli("pull", spec, env=wrong)
    assert refused.returncode == 3
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: MLflow at {auth_server.url} failed:") and "401" in line
    assert not (tmp_path / "host" / "pulled").exists()

    evaluation = ("--evaluation", str(EVALUATION_TEXT), "--max-eval-windows", "2")
    refused_run = cli(
        "run", str(model), "--recipes", "quick", *evaluation, "--output-dir", str(tmp_path / "o2"), env=wrong
    )
    assert refused_run.returncode == 3, refused_run.stderr[-3000:]
    (line,) = [line for line in refused_run.stderr.splitlines() if line.startswith("error:")]
    assert "401" in line
    assert [v.version for v in mlflow_client().search_model_versions()] == ["1"]  # nothing more made

    pulled = cli("pull", spec, env={**wrong, "MLFLOW_TRACKING_PASSWORD": PASSWORD})
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    assert (Path(pulled.stdout.strip()) / "openvino_model.xml").exists()

    assert files_containing(PASSWORD, tmp_path, Path(os.environ["QUANTFORGE_HOME"])) == []
    runs = mlflow_client().search_runs([mlflow_client().get_experiment_by_name("quantforge").experiment_id])
    assert all(PASSWORD not in str(run.data) for run in runs)
