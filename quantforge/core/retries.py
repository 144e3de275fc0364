"""Retry policy for Prefect tasks: retry I/O failures and overloaded servers, never bad input."""

import httpx
from huggingface_hub.errors import HfHubHTTPError
from requests import RequestException

from quantforge.core.errors import QuantforgeError, TransientError

IO_ERRORS = (OSError, httpx.TransportError, RequestException, TimeoutError)


def is_transient(error: BaseException) -> bool:
    """True for dropped connections, timeouts, HTTP 429 and 5xx; False for everything a retry cannot fix."""
    if isinstance(error, QuantforgeError):
        return isinstance(error, TransientError)
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        return status is None or status == 429 or status >= 500
    return isinstance(error, IO_ERRORS)


def only_io_errors(_task, _task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry only transient failures (see `is_transient`)."""
    return is_transient(state.result(raise_on_failure=False))
