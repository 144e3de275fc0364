"""Secrets masked in every line quantforge prints or logs: credentials in URLs, the MLflow password and
the Hub token."""

import logging
import os
import re
import traceback
from urllib.parse import unquote, urlsplit

MASK = "***"
# Whose values are secrets wherever they turn up (read at each use: `quantforge demo` sets HF_TOKEN late).
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "HF_TOKEN", "PREFECT_API_AUTH_STRING")
# Shorter values are not masked: `admin` or a 3-digit value would be starred out of every line (numbers
# in metrics included), and a secret that short is no secret anyway.
MIN_SECRET_CHARS = 6
# `user:password@` after a URL's scheme, up to the last `@` before the path (a password may hold `@`).
URL_USERINFO = re.compile(r"(?<=://)[^\s/]+@")


def secret_values() -> list[str]:
    """The secrets of this process's environment, longest first (a secret may contain another)."""
    values = {os.environ.get(name) for name in SECRET_VARIABLES}
    password = urlsplit(os.environ.get("MLFLOW_TRACKING_URI", "")).password
    if password:
        values |= {password, unquote(password)}
    auth_string = os.environ.get("PREFECT_API_AUTH_STRING", "")
    if ":" in auth_string:  # `user:password`: the password alone is a secret too
        values.add(auth_string.split(":", 1)[1])
    return sorted((v for v in values if v and len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with URL credentials and every secret value replaced by `***`."""
    text = URL_USERINFO.sub(MASK + "@", text)
    for value in secret_values():
        text = text.replace(value, MASK)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: every handler would print them raw
        message = f"{record.msg} {record.args}"
    record.msg, record.args = redact(message), None
    if record.exc_info:
        # Formatters append `exc_text` when it is set; without `exc_info` none formats the raw exception.
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        record.exc_info = None


def install_log_redaction() -> None:
    """Redact every log record this process makes from now on, whatever its logger or handler.

    A record factory rather than a `logging.Filter`: a filter on a logger never sees its child loggers'
    records (Prefect's `prefect.task_runs.*`, urllib3's retry warnings reach handlers by propagation),
    and one on handlers misses the handlers created after it.
    """
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "redacts", False):
        return

    def redacting_factory(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        _redact_record(record)
        return record

    redacting_factory.redacts = True
    logging.setLogRecordFactory(redacting_factory)
    _redact_extras()


def _redact_extras() -> None:
    """Redact the `extra` fields a record is given after the factory made it (Prefect's run loggers put
    `flow_run_name`, "quantize <model>", there, and its formatters print it before the message)."""
    make_record = logging.Logger.makeRecord
    if getattr(make_record, "redacts", False):
        return

    def redacting_make_record(
        self, name, level, fn, lno, msg, args, exc_info, func=None, extra=None, sinfo=None
    ):
        if extra:
            extra = {key: redact(value) if isinstance(value, str) else value for key, value in extra.items()}
        return make_record(self, name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)

    redacting_make_record.redacts = True
    logging.Logger.makeRecord = redacting_make_record
