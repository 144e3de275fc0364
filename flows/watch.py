"""The release watcher: poll the Hub for the watchlist, announce each release the registry does not know.

Each announcement is one Prefect event, `quantforge.model.released`, whose payload names the release
(`repo`, `sha`) and nothing else: the quantize deployment's trigger runs the release flow, which takes
every setting from the watchlist (flows/release.py). With `include_known` (the nightly sweep) every
current release is announced: runs of registered identities do no work.
"""

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.events import emit_event

from quantforge.registry.releases import is_known_task, mark_announced_task
from quantforge.tasks.releases import Release, current_releases_task
from quantforge.tasks.watchlist import load_watchlist

RELEASE_EVENT = "quantforge.model.released"


@flow(name="watch-releases", validate_parameters=True)
def watch_flow(watchlist: Path, include_known: bool = False) -> list[Release]:
    """Announce every watched release the registry has not seen (or all of them with `include_known`)."""
    entries = load_watchlist(watchlist)
    logger = get_run_logger()
    announced = []
    for entry in entries.watch:
        for release in current_releases_task(entry):
            if not include_known and is_known_task(release.repo, release.sha):
                continue
            event = emit_event(
                RELEASE_EVENT,
                resource={"prefect.resource.id": f"huggingface.model.{release.repo}"},
                payload={"repo": release.repo, "sha": release.sha},
            )
            mark_announced_task(release.repo, release.sha, str(event.id) if event else "")
            logger.info("announced %s@%s", release.repo, release.sha[:12])
            announced.append(release)
    return announced
