"""Run one heavy step in a fresh Python process, so what it allocates is gone when it returns.

Exporting a model holds the torch model, the traced graph and the converted IR in one process; freed
in place, much of it stays in the allocator's arenas of a long-lived flow process. A child process
returns all of it to the system when it exits (docs/decisions.md, "Heavy steps in child processes").

The child is `python -m quantforge.core.child_process`, not a multiprocessing `spawn`: spawn imports the
parent's main module again in the child (the `quantforge` command: Prefect, MLflow, the CLI), memory the
step does not need. The function and its arguments go to the child pickled on stdin; the result or the
exception comes back pickled on a pipe of its own (stdout stays the libraries' for their output).
"""

import ctypes
import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

from quantforge.core.errors import QuantforgeError

T = TypeVar("T")
PR_SET_PDEATHSIG = 1


def in_child_process(what: str, function: Callable[..., T], *args: object) -> T:
    """`function(*args)` run in a child process (a module-level function; picklable arguments); its
    result, or its exception re-raised here. A child that ends without a result (killed, e.g. out of
    memory) is reported in one line naming `what`."""
    results, child_end = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", __name__, str(child_end), str(os.getpid())],
            stdin=subprocess.PIPE,
            pass_fds=(child_end,),
        )
    finally:
        os.close(child_end)
    with child, os.fdopen(results, "rb") as answer_pipe:
        child.stdin.write(pickle.dumps((function, args)))
        child.stdin.close()
        answer = answer_pipe.read()
    if not answer:
        raise QuantforgeError(
            f"{what}: the child process ended without a result (exit {child.returncode}: killed, "
            "e.g. out of memory?)"
        )
    succeeded, value = pickle.loads(answer)
    if succeeded:
        return value
    raise value


def _run(answer_fd: int, parent: int) -> None:
    # Killed with the parent: a flow killed during an export leaves no export running on.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    function, args = pickle.load(sys.stdin.buffer)
    try:
        answer = pickle.dumps((True, function(*args)))
    except Exception as error:
        if not isinstance(error, QuantforgeError):  # worded for the user already; anything else: where
            traceback.print_exc()
        try:
            answer = pickle.dumps((False, error))
        except Exception:  # an exception that does not pickle: its text
            answer = pickle.dumps((False, QuantforgeError(f"{type(error).__name__}: {error}")))
    with os.fdopen(answer_fd, "wb") as out:
        out.write(answer)


if __name__ == "__main__":
    _run(int(sys.argv[1]), int(sys.argv[2]))
