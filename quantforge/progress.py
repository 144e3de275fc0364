"""A run's progress as a person reads it: one live view of stages × variants on a terminal, one plain line
per status change elsewhere (a pipe, CI), fed by the steps' `quantforge.core.progress` records. Everything
else the run logs or prints (Prefect, nncf, warnings, native code) goes to a log file instead; `verbose`
streams it to stderr as well."""

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from quantforge.core import progress
from quantforge.core.errors import QuantforgeError

LOG_FILE = "quantforge.log"  # in the run's output folder, beside the model's folder
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class Cell:
    """One row's step: its state, when it entered it, its wall time once over, and windows scored."""

    state: str
    since: float = field(default_factory=time.monotonic)
    seconds: float | None = None
    note: str = ""
    done: int = 0
    total: int = 0
    unit: str = ""

    def text(self) -> str:
        """`done 41 s`, `running 0:12 · 12/40 windows, ETA 0:31`, `reused (this host's copy)`."""
        if self.state != "running":
            took = f" {self.seconds:.0f} s" if self.seconds is not None else ""
            return f"{self.state}{took}" + (f" ({self.note})" if self.note else "")
        elapsed = time.monotonic() - self.since
        text = f"running {_clock(elapsed)}"
        if self.done:
            eta = elapsed / self.done * (self.total - self.done)
            text += f" · {self.done}/{self.total} {self.unit}, ETA {_clock(eta)}"
        return text


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def plain_line(row: str, step: str, cell: Cell) -> str:
    """`int4-awq-se: quantize done in 41 s`: one status change, no control characters."""
    took = f" in {cell.seconds:.0f} s" if cell.seconds is not None else ""
    return f"{row}: {step} {cell.state}{took}" + (f" ({cell.note})" if cell.note else "")


class View(logging.Handler):
    """Renders `quantforge.progress` records: a live table on a terminal, else plain lines; each status
    change also goes to the log file as a plain line."""

    def __init__(self, terminal: TextIO, log: TextIO, live: bool) -> None:
        super().__init__(logging.DEBUG)
        self.terminal, self.log = terminal, log
        self.rows: dict[str, dict[str, Cell]] = {}
        self.running: Cell | None = None
        self.live = (
            Live(
                get_renderable=self.table,
                console=Console(file=terminal),
                refresh_per_second=2,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            if live
            else None
        )

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "total"):  # windows scored in the step running now
            if self.running is not None:
                self.running.done, self.running.total, self.running.unit = (
                    record.done,
                    record.total,
                    record.unit,
                )
            return
        cell = Cell(record.state, seconds=record.seconds, note=record.note)
        self.rows.setdefault(record.row, {})[record.step] = cell
        self.running = cell if cell.state == "running" else None
        line = plain_line(record.row, record.step, cell)
        self.log.write(line + "\n")
        if self.live is None:
            self.terminal.write(line + "\n")
            self.terminal.flush()

    def table(self) -> Table:
        """Rows (variants and baselines, as first reported) × the steps seen so far, and each row's state."""
        rows = [(row, dict(cells)) for row, cells in list(self.rows.items())]  # emit() adds while Live draws
        steps = list(dict.fromkeys(s for _, cells in rows for s in cells if s != "plan"))
        table = Table("", "status", *steps, title="quantforge run", title_justify="left")
        for row, cells in rows:
            latest = list(cells.values())[-1]
            table.add_row(row, latest.state, *(cells[s].text() if s in cells else "" for s in steps))
        return table


@contextlib.contextmanager
def run_view(output_dir: Path, verbose: bool) -> Iterator[Path]:
    """For the block: the live view (or plain lines) on stderr, the run's logs in `output_dir/quantforge.log`
    (and on stderr too when `verbose`); yields the log file's path."""
    path = output_dir / LOG_FILE
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        log = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed below)
    except OSError as error:
        raise QuantforgeError(
            f"`output_dir`: {str(output_dir)!r} is not writable ({error.strerror})"
        ) from None
    logging.captureWarnings(True)  # warnings as log records: redacted like every other line
    try:
        with (
            log,
            _logs_to(log, verbose) as terminal,
            _listening(View(terminal, log, live=not verbose and terminal.isatty())),
        ):
            yield path
    finally:
        logging.captureWarnings(False)


@contextlib.contextmanager
def _logs_to(log: TextIO, verbose: bool) -> Iterator[TextIO]:
    """Everything the process writes to stdout and stderr into `log` (descriptors 1 and 2: nncf's handler
    and native code included), yielding the terminal's stderr; `verbose`: the terminal keeps it all and the
    log file gets every log record."""
    if verbose:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        loggers = [logging.getLogger(), logging.getLogger("nncf")]  # nncf's logger does not propagate
        for logger in loggers:
            logger.addHandler(handler)
        try:
            yield sys.stderr
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8")
    for fd in saved:
        os.dup2(log.fileno(), fd)
    try:
        with terminal:
            yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        # What Prefect logs later (its temporary server stopping at exit) would reach the terminal.
        prefect = logging.getLogger("prefect")
        prefect.setLevel(max(prefect.getEffectiveLevel(), logging.WARNING))


@contextlib.contextmanager
def _listening(view: View) -> Iterator[None]:
    """`view` receives the steps' progress records (and only it: they do not reach the logs' handlers)."""
    logger = progress.LOGGER
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(view)
    if view.live is not None:
        view.live.start()
    try:
        yield
    finally:
        if view.live is not None:
            view.live.stop()
        logger.removeHandler(view)
        logger.setLevel(level)
        logger.propagate = propagate
