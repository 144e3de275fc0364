"""What keeps a large model's run within memory: heavy steps in child processes, and the pages of a
mapped weights file handed back once read."""

import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from quantforge.core.child_process import in_child_process
from quantforge.core.errors import QuantforgeError
from quantforge.core.manifest import is_intact
from quantforge.core.mapped_files import pages_handed_back, read_only_mappings
from quantforge.tasks.export import IR_BIN
from quantforge_testing.tiny_models import tiny_model

MIB = 2**20


def _pss_file() -> int:
    """Bytes of file-backed pages this process maps (its share of them)."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss_File:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no Pss_File in smaps_rollup")


def _until(condition, what: str, limit: float = 30.0) -> None:
    """Wait for a state (never a fixed time): `condition()` true, checked every 50 ms up to `limit` s."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {limit} s"
        time.sleep(0.05)


def test_read_pages_of_a_mapped_weights_file_are_handed_back_and_still_read_the_same(tmp_path):
    weights = tmp_path / "openvino_model.bin"
    content = os.urandom(64 * MIB)
    weights.write_bytes(content)
    with weights.open("rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert len(read_only_mappings("openvino_model.bin")) == 1
        before = _pss_file()
        assert mapped[:] == content  # every page read: now mapped into this process
        assert _pss_file() - before > 60 * MIB
        with pages_handed_back("openvino_model.bin", interval=0.05):
            _until(lambda: _pss_file() - before < 8 * MIB, "handed back")
            assert mapped[:] == content  # read again from the page cache, unchanged


def test_a_writable_mapping_is_never_handed_back(tmp_path):
    """Unmapping a private writable mapping would drop what was written to it: it is not selected."""
    weights = tmp_path / "openvino_model.bin"
    weights.write_bytes(b"\0" * MIB)
    with weights.open("r+b") as file, mmap.mmap(file.fileno(), 0) as mapped:
        mapped[:4] = b"kept"
        assert read_only_mappings("openvino_model.bin") == []
        assert mapped[:4] == b"kept"


def _square(value: int) -> tuple[int, int]:
    return value * value, os.getpid()


def _refuse(value: int) -> None:
    raise QuantforgeError(f"`value`: {value} is refused")


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_returns_its_result_from_another_process():
    square, pid = in_child_process("squaring", _square, 7)
    assert square == 49 and pid != os.getpid()


def test_a_childs_error_reaches_the_caller_as_it_was_raised():
    with pytest.raises(QuantforgeError, match=r"^`value`: 3 is refused$"):
        in_child_process("refusing", _refuse, 3)


def test_a_child_killed_on_the_way_is_one_line_naming_the_step():
    with pytest.raises(QuantforgeError, match=r"^export of m: the child process ended without a result"):
        in_child_process("export of m", _killed)


def test_a_child_dies_with_its_parent(tmp_path):
    """A flow killed during an export leaves no export running on: the child is killed with it."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from tests.test_memory import _record_and_wait; _record_and_wait({str(pid_file)!r})",
        ],
        cwd=Path(__file__).parents[1],
    )
    try:
        _until(lambda: pid_file.exists() and pid_file.read_text().strip(), "started")
        child = psutil.Process(int(pid_file.read_text()))
        parent.kill()
        parent.wait()
        _until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, "killed")
    finally:
        parent.kill()


def _record_and_wait(pid_file: str) -> None:
    in_child_process("waiting", _wait_forever, pid_file)


def _wait_forever(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    signal.pause()


# A process that exports a source counted as large (the threshold at 0), then says whether it ever
# imported optimum's exporters itself.
EXPORT_AS_LARGE = """
import sys
import quantforge.tasks.export as export
from quantforge.tasks.fetch import fetch_source
export.EXPORT_APART_FROM_PARAMETERS = 0
ir = export.export_baseline(fetch_source(sys.argv[1]), "fp16", "toolchain")
print(ir.path, "optimum.exporters.openvino" in sys.modules)
"""


@pytest.mark.model
def test_a_large_sources_export_runs_in_a_child_process(bundled_model, tmp_path):
    """From EXPORT_APART_FROM_PARAMETERS on, the export's libraries and allocations stay in a child
    process: the IR is made and intact, and the exporting process never imported optimum's exporters."""
    model = tiny_model("llama", tmp_path / "tiny-llama", bundled_model)
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_AS_LARGE, str(model)],
        env={**os.environ, "QUANTFORGE_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    path, imported = done.stdout.splitlines()[-1].rsplit(" ", 1)  # the child's libraries print too
    assert is_intact(Path(path)) and (Path(path) / IR_BIN).stat().st_size > 100_000
    assert imported == "False"
