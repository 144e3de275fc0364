"""The one exception type that reaches the user as a one-line message."""


class QuantforgeError(Exception):
    """Bad input or an unrecoverable condition, worded for the user (names the field and value)."""


class TransientError(QuantforgeError):
    """A failure a retry may fix (dropped connection, overloaded server), worded for the user all the same."""


def truncated(text: str, limit: int) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut), for echoing input in one line."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
