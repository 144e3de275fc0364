"""What the peak-memory sampler costs the work it measures: one recipe compressed from a baseline IR,
each time in a fresh process, with no sampler, with `tasks.resources.PeakSampler`, and with the loops
it replaced (PSS or RSS read every 50 ms whatever a read costs); rounds alternate.

    .venv/bin/python -m bench.sampler_cost IR_DIR [--recipe int4-asym-g128] [--rounds 2]

IR_DIR is a baseline IR directory, e.g. `$QUANTFORGE_HOME/ir/<model>/<dtype>-<toolchain>` after a run.
"""

import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import psutil
import typer

SAMPLERS = ("none", "bounded", "pss-every-50ms", "rss-every-50ms")
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class EveryFiftyMs:
    """The loop before the bounded sampler: a read every 50 ms, however long a read takes."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read, self._done = read, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._done.wait(0.05):
            self.read()

    def __enter__(self) -> "EveryFiftyMs":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self.thread.join()


def one_compression(ir_dir: Path, recipe_name: str, sampler: str) -> None:
    """Compress once under `sampler` in this process; print wall, user and system seconds."""
    from quantforge.tasks.backends.openvino import _compress
    from quantforge.tasks.recipes import load_recipe_set
    from quantforge.tasks.resources import PeakSampler

    recipe = next(r for r in load_recipe_set("default").recipes if r.name == recipe_name)
    me = psutil.Process()
    context = {
        "none": contextlib.nullcontext,
        "bounded": lambda: PeakSampler(me),
        "pss-every-50ms": lambda: EveryFiftyMs(lambda: me.memory_full_info().pss),
        "rss-every-50ms": lambda: EveryFiftyMs(lambda: me.memory_info().rss),
    }[sampler]
    with tempfile.TemporaryDirectory() as out:
        started, cpu = time.perf_counter(), me.cpu_times()
        with context():
            _compress(ir_dir, recipe, None, Path(out))
        used = me.cpu_times()
        print(
            f"{sampler:15} wall {time.perf_counter() - started:6.1f} s   "
            f"user {used.user - cpu.user:6.1f} s   system {used.system - cpu.system:5.1f} s",
            flush=True,
        )


@app.command()
def main(
    ir_dir: Path,
    recipe: Annotated[str, typer.Option(help="A data-free recipe of the default set.")] = "int4-asym-g128",
    rounds: int = 2,
    sampler: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    if sampler:
        one_compression(ir_dir, recipe, sampler)
        return
    for _ in range(rounds):
        for name in SAMPLERS:
            command = [sys.executable, "-m", "bench.sampler_cost", str(ir_dir), "--recipe", recipe]
            child = subprocess.run([*command, "--sampler", name], check=True, capture_output=True, text=True)
            print(child.stdout.strip().splitlines()[-1], flush=True)  # nncf prints its own tables first


if __name__ == "__main__":
    app()
