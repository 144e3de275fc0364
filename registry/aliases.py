"""Model versions by name: `NAME@ALIAS` or `NAME/VERSION`, promotion of aliases, archiving."""

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.errors import QuantforgeError
from quantforge.registry.tracking import mlflow_client
from quantforge.registry.variants import ARCHIVED_TAG, TAG

CHAMPION_ALIAS = "champion"


def parse_spec(spec: str) -> tuple[str, str | None, int | None]:
    """`name@alias` → (name, alias, None); `name/3` → (name, None, 3)."""
    if "@" in spec:
        name, alias = spec.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in spec:
        name, number = spec.rsplit("/", 1)
        if name and number.isdigit():
            return name, None, int(number)
    raise QuantforgeError(f"`model`: {spec!r} is not NAME@ALIAS or NAME/VERSION")


def resolve_version(spec: str) -> ModelVersion:
    """The model version `spec` names, refusing archived, failed or unfinished versions."""
    version = _find(spec)
    if version.status != "READY":
        raise QuantforgeError(f"`model`: {spec!r} (version {version.version}) is {version.status}, not READY")
    if version.tags.get(ARCHIVED_TAG) == "true":
        raise QuantforgeError(f"`model`: {spec!r} (version {version.version}) is archived")
    if version.tags.get(f"{TAG}passed") != "true":
        raise QuantforgeError(f"`model`: {spec!r} (version {version.version}) did not pass its gate")
    return version


def _find(spec: str) -> ModelVersion:
    name, alias, number = parse_spec(spec)
    client = mlflow_client()
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, number)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise QuantforgeError(f"`model`: no model version {spec!r} in the registry") from None
        raise


def promote(name: str, version: int, alias: str) -> ModelVersion:
    """Point `alias` at `version` (which must be pullable); returns the version."""
    target = resolve_version(f"{name}/{version}")
    mlflow_client().set_registered_model_alias(name, alias, target.version)
    return target


def archive(name: str, version: int) -> None:
    """Mark a version archived and drop its aliases: it can never be pulled again."""
    target = _find(f"{name}/{version}")
    client = mlflow_client()
    client.set_model_version_tag(name, target.version, ARCHIVED_TAG, "true")
    for alias in target.aliases:
        client.delete_registered_model_alias(name, alias)


promote_task = task(promote, name="promote", cache_policy=NO_CACHE)
