"""Source releases the registry has seen: the watcher's memory lives in MLflow, not in a local file.

A release (Hub repo, commit sha) is known once a quantize run recorded it (its parent run carries the
source tags) or the watcher announced it (a run in the `quantforge-releases` experiment).
"""

from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.registry.tracking import EXPERIMENT, experiment_id, mlflow_client
from quantforge.registry.variants import TAG

RELEASES_EXPERIMENT = "quantforge-releases"


def is_known(repo: str, sha: str) -> bool:
    """True when a quantize run or an earlier announcement recorded this release."""
    client = mlflow_client()
    experiments = [
        e.experiment_id
        for name in (EXPERIMENT, RELEASES_EXPERIMENT)
        if (e := client.get_experiment_by_name(name))
    ]
    if not experiments:
        return False
    runs = client.search_runs(
        experiments,
        f"tags.`{TAG}source_repo` = '{_quoted(repo)}' and tags.`{TAG}source_sha` = '{_quoted(sha)}'",
        max_results=1,
    )
    return bool(runs)


def mark_announced(repo: str, sha: str, event_id: str) -> None:
    """Record that the watcher announced this release (so the next poll stays quiet)."""
    client = mlflow_client()
    tags = {
        "mlflow.runName": f"{repo}@{sha[:12]}",
        f"{TAG}source_repo": repo,
        f"{TAG}source_sha": sha,
        f"{TAG}event_id": event_id,
    }
    run = client.create_run(experiment_id(client, RELEASES_EXPERIMENT), tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


is_known_task = task(is_known, name="registry-known", cache_policy=NO_CACHE)
mark_announced_task = task(mark_announced, name="registry-announced", cache_policy=NO_CACHE)
