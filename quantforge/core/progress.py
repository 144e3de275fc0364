"""What a run is doing, told as log records on one logger (`quantforge.progress`) for whoever shows them:
the CLI's live view (quantforge/progress.py). Steps only report; nothing listens unless a view is installed
(the logger's level is then lowered), so a worker's run pays a level check per call."""

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Literal

LOGGER = logging.getLogger("quantforge.progress")
Status = Literal["waiting", "running", "done", "failed", "reused"]


def status(row: str, step: str, state: Status, seconds: float | None = None, note: str = "") -> None:
    """`row` (a variant, or a runtime's baseline) entered `state` at `step`."""
    LOGGER.info(
        "%s: %s %s",
        row,
        step,
        state,
        extra={"row": row, "step": step, "state": state, "seconds": seconds, "note": note},
    )


@contextlib.contextmanager
def stage(row: str, step: str) -> Iterator[None]:
    """`row`'s `step` running for the block, then done or failed with its wall time."""
    status(row, step, "running")
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        status(row, step, "failed", time.perf_counter() - started)
        raise
    status(row, step, "done", time.perf_counter() - started)


def advance(done: int, total: int, unit: str) -> None:
    """`done` of `total` `unit` of the step running now (for its ETA)."""
    LOGGER.debug("%d/%d %s", done, total, unit, extra={"done": done, "total": total, "unit": unit})
