"""Retry policy for Prefect tasks: retry I/O failures, never bad input."""

from huggingface_hub.errors import HfHubHTTPError
from requests import RequestException

from quantforge.errors import QuantforgeError

IO_ERRORS = (OSError, HfHubHTTPError, RequestException, TimeoutError)


def only_io_errors(_task, _task_run, state) -> bool:
    """Prefect `retry_condition_fn`: True when the failure is an I/O error worth retrying."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, IO_ERRORS) and not isinstance(error, QuantforgeError)
