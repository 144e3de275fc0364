"""Register quantforge's Prefect deployments on the server at PREFECT_API_URL (with
PREFECT_API_AUTH_STRING when the server requires it, as infra/compose.yaml and k8s/servers.yaml do).

    python infra/deploy.py --watchlist /etc/quantforge/watchlist.yaml [--work-pool quantforge]

- `quantize`: runs the release flow for every `quantforge.model.released` event (from the watcher, or
  POSTed to the server's /api/events): the event names a release (`repo`, `sha`, optionally one of the
  `recipes` its watchlist entry allows) and the flow takes every other setting from `--watchlist`,
  fixed on the deployment; an event asking for more is refused (flows/release.py).
- `watch-releases`: polls the Hub for the watchlist every `--watch-interval` seconds (default 15 min).
- `nightly-sweep`: announces every watched model's current release on `--sweep-cron`; runs of
  registered identities finish without work, so this only fills gaps.

The process work pool `--work-pool` is made first if it does not exist (the workers of
infra/start-worker.sh wait for it); workers pull the code from `--source` (this checkout by default; a
git URL for workers on other hosts). The flows read the watchlist when they run: editing the file needs
no new registration, moving it does. Run again, it changes only what changed.
"""

from pathlib import Path
from typing import Annotated

import typer
from prefect import Flow, deploy
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.workers.process import ProcessWorker

REPO_ROOT = Path(__file__).resolve().parents[1]
RELEASE_EVENT = "quantforge.model.released"  # flows.watch.RELEASE_EVENT, without importing the flows

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def release_trigger() -> DeploymentEventTrigger:
    """One release run per release event. The whole payload is passed so that the flow can refuse an event
    that tries to set more than it may; the watchlist parameter is the deployment's, never the event's."""
    return DeploymentEventTrigger(
        name="on-release",
        expect={RELEASE_EVENT},
        match={"prefect.resource.id": "huggingface.model.*"},
        parameters={"payload": "{{ event.payload }}"},
    )


def ensure_work_pool(name: str) -> None:
    """Make the process work pool `name` with Prefect's default job template, unless it exists."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            pool = WorkPoolCreate(
                name=name,
                type=ProcessWorker.type,
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
            try:
                client.create_work_pool(pool)
            except ObjectAlreadyExists:  # another deploy made it meanwhile
                pass


@app.command()
def main(
    watchlist: Annotated[Path, typer.Option(help="Watchlist YAML, as the workers see the path.")],
    work_pool: Annotated[str, typer.Option(help="Process work pool the workers poll.")] = "quantforge",
    source: Annotated[str, typer.Option(help="Where workers get the code: a folder or a git URL.")] = str(
        REPO_ROOT
    ),
    watch_interval: Annotated[int, typer.Option(help="Seconds between Hub polls.")] = 900,
    sweep_cron: Annotated[str, typer.Option(help="Cron of the nightly sweep (server time).")] = "0 2 * * *",
) -> None:
    """Create the work pool if needed, then create or update the three deployments."""
    ensure_work_pool(work_pool)
    release = Flow.from_source(source, "flows/release.py:release_flow")
    watch = Flow.from_source(source, "flows/watch.py:watch_flow")
    deployment_ids = deploy(
        release.to_deployment(
            name="quantize", triggers=[release_trigger()], parameters={"watchlist": str(watchlist)}
        ),
        watch.to_deployment(
            name="watch-releases", interval=watch_interval, parameters={"watchlist": str(watchlist)}
        ),
        watch.to_deployment(
            name="nightly-sweep",
            cron=sweep_cron,
            parameters={"watchlist": str(watchlist), "include_known": True},
        ),
        work_pool_name=work_pool,
        build=False,
        push=False,
        print_next_steps_message=False,
    )
    for deployment_id in deployment_ids:
        print(deployment_id)


if __name__ == "__main__":
    app()
