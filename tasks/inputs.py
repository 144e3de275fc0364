"""What every flow reads first, from its request: the source, the evaluation windows, the calibration
samples (when a recipe needs them) and each recipe's job."""

from typing import NamedTuple

from quantforge.tasks.backends.base import Job
from quantforge.tasks.datasets import (
    TokenSet,
    calibration_samples_task,
    evaluation_windows_task,
    protocol_windows,
)
from quantforge.tasks.fetch import SourceModel, fetch_source_task
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.request import QuantizeRequest
from quantforge.tasks.variants import variant_job


class RunInputs(NamedTuple):
    source: SourceModel
    evaluation: TokenSet
    calibration: TokenSet | None  # None when no recipe is data-aware
    jobs: list[Job]  # in the recipes' order


def run_inputs(request: QuantizeRequest, recipes: list[Recipe]) -> RunInputs:
    """Fetch the source, window its evaluation text under the request's protocol, sample calibration
    text when a recipe is data-aware, and make each recipe's job."""
    source = fetch_source_task(
        request.model,
        request.revision,
        trust_remote_code=request.trust_remote_code,
        allow_pickle=request.allow_pickle,
    )
    window, max_windows = protocol_windows(
        request.protocol, request.window, request.max_eval_windows, source.local_dir
    )
    evaluation = evaluation_windows_task(
        request.evaluation, source.local_dir, window, max_windows, request.protocol
    )
    calibration = None
    if any(r.data_aware for r in recipes):
        calibration = calibration_samples_task(
            request.calibration,
            request.evaluation,
            source.local_dir,
            request.num_samples,
            request.seq_len,
            request.seed,
        )
    jobs = [
        variant_job(
            source,
            r,
            calibration,
            evaluation,
            request.new_tokens,
            request.targets,
            request.inference_precision,
        )
        for r in recipes
    ]
    return RunInputs(source=source, evaluation=evaluation, calibration=calibration, jobs=jobs)
