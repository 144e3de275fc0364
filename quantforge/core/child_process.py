"""Run one heavy step in a fresh child process, so what it allocates is gone when it returns.

Exporting a model holds the torch model, the traced graph and the converted IR in one process; freed
in place, much of it stays in the allocator's arenas of a long-lived flow process. A spawned child
returns all of it to the system when it exits (docs/decisions.md, "Heavy steps in child processes").
"""

import ctypes
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from quantforge.core.errors import QuantforgeError

T = TypeVar("T")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """The child gets SIGKILL when its parent dies (a killed flow leaves no export running on)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def in_child_process(what: str, function: Callable[..., T], *args: object) -> T:
    """`function(*args)` run in a spawned child process; its result or its exception, re-raised here.
    A child that ends without a result (killed, e.g. out of memory) is reported in one line."""
    with ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent
    ) as pool:
        try:
            return pool.submit(function, *args).result()
        except BrokenProcessPool:
            raise QuantforgeError(
                f"{what}: the child process ended without a result (killed: out of memory?)"
            ) from None
