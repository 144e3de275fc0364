"""The release flow: what the quantize deployment runs for a `quantforge.model.released` event.

An event is anyone's who can reach the Prefect API, so it names only the release (`repo`, a commit
`sha`) and at most one of the recipe sets its watchlist entry allows (`recipes`); every other setting
comes from the watchlist fixed on the deployment. An event that asks for more, for a repo no entry
covers, or for a commit that is not the repo's current head (what the watcher would announce) is
refused before any download or MLflow run: the reason is logged and the run ends Failed, named
`Refused`, so it is seen where failures are watched and is told apart from a failed quantization.
"""

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from quantforge.flows.quantize import quantize_flow
from quantforge.tasks.releases import release_request, watched_release_task
from quantforge.tasks.report import RunReport
from quantforge.tasks.watchlist import RefusedRelease, load_watchlist


@flow(name="release", validate_parameters=True)
def release_flow(watchlist: Path, payload: dict[str, Any]) -> RunReport | State:
    """Quantize the release an event announces, with the settings of the watchlist entry that covers it."""
    entries = load_watchlist(watchlist)
    try:
        request = release_request(entries, payload, watched_release_task)
    except RefusedRelease as refusal:
        get_run_logger().error("refused release event: %s", refusal)
        return Failed(name="Refused", message=str(refusal))
    return quantize_flow(request)
