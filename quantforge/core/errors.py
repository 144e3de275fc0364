"""The exception types that reach the user as a one-line message, and what `quantforge` exits with."""


class QuantforgeError(Exception):
    """Bad input or an unrecoverable condition, worded for the user (names the field and value)."""


class ServiceError(QuantforgeError):
    """A service the command depends on failed (MLflow, Prefect, the Hub, the disk); the same command
    may succeed once it is back."""


class TransientError(ServiceError):
    """A failure a retry may fix (dropped connection, overloaded server), worded for the user all the same."""


def truncated(text: str, limit: int) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut), for echoing input in one line."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
