"""Credentials in MLFLOW_TRACKING_URI, the MLflow password and the Hub token reach no printed line, no
log, no Prefect record and no file, even when the registry is unreachable and everything fails."""

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantforge.core.redact import install_log_redaction
from quantforge.registry.tracking import experiment_id, mlflow_client
from quantforge_testing.servers import MlflowServer, free_port
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import EVALUATION_TEXT, files_containing

CANARY = "canarysecret-5b07e2"
QUANTFORGE = str(Path(sys.executable).with_name("quantforge"))


def test_every_log_record_is_redacted_whatever_its_logger(monkeypatch):
    """Arguments, exceptions and tracebacks of records made by a library's child logger, which reach
    a parent's handler by propagation."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:{CANARY}-uri@mlflow:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", f"{CANARY}-password")
    monkeypatch.setenv("HF_TOKEN", f"hf_{CANARY}")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", f"admin:{CANARY}-prefect")
    monkeypatch.setattr(logging.Logger, "makeRecord", logging.Logger.makeRecord)  # restored after
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter("%(flow_run_name)s | %(message)s", defaults={"flow_run_name": "-"})
    )
    parent = logging.getLogger("quantforge-test-parent")
    parent.addHandler(handler)
    previous = logging.getLogRecordFactory()
    try:
        install_log_redaction()
        install_log_redaction()  # once is enough: a second call changes nothing
        child = logging.getLogger("quantforge-test-parent.task_runs")
        child.warning("token %s, password %s", f"hf_{CANARY}", f"{CANARY}-password")
        child.warning("auth %s, 12 windows of 512 tokens by admin", f"{CANARY}-prefect")
        # as Prefect's run loggers do: the run's name, which names the model, in `extra`
        run_logger = logging.LoggerAdapter(child, {"flow_run_name": f"quantize https://u:{CANARY}@hub/m"})
        run_logger.warning("Finished in state Completed()")
        try:
            raise ConnectionError(f"API request to http://user:{CANARY}-uri@mlflow:5000/api failed")
        except ConnectionError:
            child.exception("registry unreachable at %s", "https://admin:hunter2@mlflow:5000")
    finally:
        logging.setLogRecordFactory(previous)
        parent.removeHandler(handler)
    written = stream.getvalue()
    assert CANARY not in written and "hunter2" not in written
    assert "token ***, password ***" in written
    assert "auth ***, 12 windows of 512 tokens by admin" in written  # short values are not secrets
    assert "https://***@mlflow:5000" in written
    assert "quantize https://***@hub/m | Finished in state Completed()" in written
    assert "ConnectionError: API request to http://***@mlflow:5000/api failed" in written  # the traceback


@pytest.mark.model
def test_unreachable_registry_named_without_its_credentials(bundled_model, tmp_path):
    """The real CLI (`run` on a tiny model, `pull`) against a registry URI with user:password that
    nothing listens on: MLflow's retry warnings, its error, Prefect's task-failure logs and states."""
    model = tiny_model("llama", tmp_path / "tiny-llama", bundled_model)
    port = free_port()
    prefect_home = tmp_path / "prefect"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
    }
    env |= {
        "MLFLOW_TRACKING_URI": f"http://user:{CANARY}@127.0.0.1:{port}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",  # one retry warning, which names the server
        "QUANTFORGE_HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(prefect_home),  # this run's ephemeral Prefect server and its database
        "PREFECT_LOGGING_LEVEL": "INFO",
    }

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([QUANTFORGE, *args], env=env, capture_output=True, text=True, timeout=600)

    run = cli(
        "run", str(model), "--recipes", "quick", "--only", "int8-asym", "--evaluation", str(EVALUATION_TEXT),
        "--max-eval-windows", "1", "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    pull = cli("pull", "tiny-llama--int8-asym@champion", "--dest", str(tmp_path / "pulled"))
    for done in (run, pull):
        assert done.returncode == 3, done.stderr[-3000:]  # a service failed
        (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert line.startswith(f"error: MLflow at http://127.0.0.1:{port} failed: ")
        assert len(line) < 500
        assert CANARY not in done.stdout + done.stderr
    assert "Retrying" in pull.stderr  # MLflow's retry warning was printed, redacted
    # Prefect recorded the failed task (its logs and state name the server) ...
    assert any(f"127.0.0.1:{port}".encode() in p.read_bytes() for p in prefect_home.rglob("*") if p.is_file())
    # ... and no file anywhere holds the password.
    assert files_containing(CANARY, tmp_path) == []


def test_credentials_in_the_uri_still_authenticate(tmp_path, monkeypatch):
    """MLflow is given the URI without them and reads them from MLFLOW_TRACKING_USERNAME/PASSWORD: a
    basic-auth server accepts them, and refuses a wrong password without printing it."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")  # recorded, so the values the client sets are undone after the test
        monkeypatch.delenv(name)
    with MlflowServer.with_basic_auth(tmp_path / "mlflow", CANARY) as server:
        host = server.url.removeprefix("http://")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{CANARY}@{host}")
        client = mlflow_client()
        assert client.tracking_uri == server.url
        assert client.get_experiment(experiment_id(client)).name == "quantforge"  # created: admin writes
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://admin:wrong-{CANARY}@{host}"}
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(name)
        refused = subprocess.run(
            [QUANTFORGE, "pull", "anything@champion", "--dest", str(tmp_path / "pulled")],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert refused.returncode == 3  # MLflow refused the credentials: a service failure
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: MLflow at {server.url} failed: ") and "401" in line
    assert CANARY not in refused.stdout + refused.stderr
