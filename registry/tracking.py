"""Which MLflow quantforge talks to: `MLFLOW_TRACKING_URI`, or a sqlite database in the data directory."""

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from quantforge.core.errors import QuantforgeError
from quantforge.core.paths import data_dir

EXPERIMENT = "quantforge"
# MLflow's own default retries an unreachable server 7 times with factor-2 backoff (over 4 minutes);
# a flow should fail clearly within seconds instead. Users can still set these variables themselves.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` without its user:password part, else the embedded sqlite database.

    The URI MLflow is given and messages name: MLflow writes it into its errors and its retry warnings,
    and Prefect stores a failed task's error with its state, so credentials in it would be printed and
    recorded. `mlflow_client` hands them to MLflow as MLFLOW_TRACKING_USERNAME/PASSWORD instead.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{_embedded_root() / 'mlflow.db'}"
    parts = urlsplit(uri)
    if "@" not in parts.netloc:  # no credentials (and urlunsplit would make sqlite:////abs/path relative)
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def require_registry() -> None:
    """Refuse to read a registry that is not there: with `MLFLOW_TRACKING_URI` unset, MLflow would create
    an empty embedded database and answer that nothing is registered."""
    database = _embedded_root() / "mlflow.db"
    if not os.environ.get("MLFLOW_TRACKING_URI") and not database.exists():
        raise QuantforgeError(
            f"`MLFLOW_TRACKING_URI` is not set and this host has no registry of its own ({database}): "
            "set it to the MLflow server that holds the variants"
        )


def _credentials_from_uri() -> None:
    """Basic-auth credentials of `MLFLOW_TRACKING_URI` as the variables MLflow reads; ones set explicitly
    win, as requests lets explicit credentials win over a URL's."""
    parts = urlsplit(os.environ.get("MLFLOW_TRACKING_URI", ""))
    if parts.username is not None:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
    if parts.password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))


def _embedded_root() -> Path:
    return data_dir() / "mlflow"


def mlflow_client() -> MlflowClient:
    """A client for `tracking_uri()`; credentials from MLFLOW_TRACKING_USERNAME/PASSWORD or the URI."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    _credentials_from_uri()
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        _embedded_root().mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, name: str = EXPERIMENT) -> str:
    """The experiment `name`, created on first use (artifacts beside the embedded database)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # A server decides its own artifact store; the embedded database keeps artifacts in the data dir
    # (MLflow would otherwise write ./mlruns into whatever folder the user ran from).
    location = None if _is_remote(client) else (_embedded_root() / "artifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":  # else another run created it just now
            raise
        return client.get_experiment_by_name(name).experiment_id


def _is_remote(client: MlflowClient) -> bool:
    return client.tracking_uri.startswith(("http://", "https://", "databricks"))
