"""Links on a quantize flow run to what it made: its MLflow run and each published variant's Hub commit.

Prefect link artifacts, keyed per source (and recipe) like the run's report. Links never carry
credentials: the tracking URI and the Hub endpoint are taken without their `user:password@`, and pass
`redact` for the secrets of the environment.
"""

from prefect.artifacts import create_link_artifact, create_markdown_artifact

from quantforge.core.redact import redact
from quantforge.registry.publishing import hub_url
from quantforge.registry.tracking import mlflow_client, tracking_uri
from quantforge.tasks.report import VariantResult, artifact_key


def link_mlflow_run(run_id: str, source_repo: str) -> None:
    """A link to the flow run's MLflow run on a tracking server; where the store is a file or database of
    this host, a markdown artifact saying where."""
    uri = redact(tracking_uri()).rstrip("/")  # tracking_uri() leaves out `user:password@`
    key = artifact_key(source_repo, "mlflow-run")
    if not uri.startswith(("http://", "https://")):
        create_markdown_artifact(
            markdown=f"MLflow run `{run_id}` in the tracking store `{uri}` (not served over HTTP).",
            key=key,
            description="quantforge MLflow run",
        )
        return
    experiment = mlflow_client().get_run(run_id).info.experiment_id
    create_link_artifact(
        link=f"{uri}/#/experiments/{experiment}/runs/{run_id}",
        link_text=f"MLflow run {run_id}",
        key=key,
        description="quantforge MLflow run",
    )


def link_hub_commits(results: list[VariantResult], source_repo: str) -> None:
    """One link per published variant to its Hub commit."""
    hub = redact(hub_url())
    for result in results:
        if result.hub_repo and result.hub_commit:
            create_link_artifact(
                link=f"{hub}/{result.hub_repo}/commit/{result.hub_commit}",
                link_text=f"{result.hub_repo}@{result.hub_commit[:12]}",
                key=artifact_key(source_repo, result.recipe, "hub"),
                description=f"quantforge: {result.recipe} on the Hub",
            )
