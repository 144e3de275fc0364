"""The serving host's pull never loses data: a version that fails to verify, or a pull killed at any
point of the swap, leaves a complete version at `--dest`; a `--dest` of other files is refused untouched;
two pulls of one `--dest` take turns; dead writers' leftovers, and only theirs, are swept.

Variants are small synthetic folders (tests/test_registry.py) in one real `mlflow server`; each test
registers its own model (its own recipe name). Kills, containers and concurrency use real processes.
"""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
from typer.testing import CliRunner

from quantforge.cli import app
from quantforge.core.manifest import MANIFEST_FILE, read_manifest
from quantforge.registry.tracking import mlflow_client
from quantforge.registry.variants import record_publication
from quantforge.tasks.publish import publish_variant
from quantforge_testing.hub import HubServer
from quantforge_testing.servers import MlflowServer
from tests.conftest import tmpfs
from tests.test_registry import make_variant, record

runner = CliRunner()

# `quantforge` in a process that stops (waits to be killed) at the point named by PULL_STOP_AT, once it has
# touched PULL_STOP_MARKER: a barrier on state for the kill -9 tests, with the real pull around it.
STOPPING_PULL = """
import os, sys, threading
from pathlib import Path

import quantforge.core.atomic as atomic
import quantforge.registry.pull as pull
from quantforge.cli import app

point, marker = os.environ["PULL_STOP_AT"], Path(os.environ["PULL_STOP_MARKER"])
exchange, rename, pinned_manifest = atomic._exchange, os.rename, pull._pinned_manifest


def stop():
    marker.touch()
    threading.Event().wait()


def stopping_pinned_manifest(path, pinned):
    if point == "scratch":  # the manifest is downloaded into the scratch folder
        stop()
    return pinned_manifest(path, pinned)


def stopping_exchange(first, second):
    if point == "before-swap":  # the new version is complete and verified
        stop()
    if point == "between-renames":
        return False  # as on a filesystem that cannot exchange names (NFS): two renames follow
    exchanged = exchange(first, second)
    stop()
    return exchanged


def stopping_rename(source, target):
    rename(source, target)
    if point == "between-renames" and str(target).endswith(".old"):  # the old version moved aside
        stop()


pull._pinned_manifest = stopping_pinned_manifest
atomic._exchange, os.rename = stopping_exchange, stopping_rename
sys.argv[0] = "quantforge"
app()
"""

# A writer in another container (its own pid namespace) that holds a scratch folder beside argv[1].
OTHER_CONTAINER_WRITER = """
import sys, threading
from pathlib import Path

from quantforge.core.atomic import scratch_dir

with scratch_dir(Path(sys.argv[1])) as scratch:
    (scratch / "openvino_model.bin").write_bytes(b"half a download")
    Path(sys.argv[2]).touch()
    threading.Event().wait()
"""


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture
def quiet_hub_downloads():
    """No Hub progress bars among the printed lines."""
    disable_progress_bars()
    yield
    enable_progress_bars()


@pytest.fixture
def registry(mlflow_server, monkeypatch) -> MlflowServer:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the printed lines are the test's
    return mlflow_server


def register_two_versions(registry: MlflowServer, folder: Path, recipe: str) -> tuple[str, dict[int, Path]]:
    """Versions 1 and 2 of `smollm2-135m-instruct--RECIPE`; returns the name and each version's folder."""
    folders = {}
    for version, sha in ((1, "a" * 40), (2, "b" * 40)):
        folders[version] = folder / f"v{version}"
        recorded = record(folders[version], make_variant(folders[version], sha, recipe=recipe), 21.0)
        assert recorded.model_version == version
    return recorded.model_name, folders


def stored_weights(registry: MlflowServer, name: str, version: int) -> Path:
    """The weights file of `name/version` in the MLflow server's artifact store."""
    run_id = mlflow_client().get_model_version(name, str(version)).run_id
    (stored,) = (registry.root / "artifacts").glob(f"*/{run_id}/artifacts/variant/openvino_model.bin")
    return stored


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, hidden ones included, with its bytes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def pull(spec: str, dest: Path, *options: str) -> tuple[int, list[str]]:
    """`quantforge pull SPEC --dest DEST [OPTIONS]`: its exit code and printed lines (stdout, then stderr)."""
    result = runner.invoke(app, ["pull", spec, "--dest", str(dest), *options])
    return result.exit_code, [*result.stdout.splitlines(), *result.stderr.splitlines()]


def wait_for(condition, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, f"the process ended first: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"never reached: {log.read_text()[-2000:]}"
        time.sleep(0.02)


@pytest.mark.parametrize("damage", ["altered", "truncated", "missing"])
def test_a_version_that_fails_to_verify_leaves_the_installed_one_byte_for_byte(registry, tmp_path, damage):
    name, folders = register_two_versions(registry, tmp_path, f"keep-{damage}")
    dest = tmp_path / "serving" / "model"
    assert pull(f"{name}/1", dest) == (0, [str(dest)])
    stored = stored_weights(registry, name, 2)
    weights = stored.read_bytes()
    if damage == "altered":
        stored.write_bytes(bytes(len(weights)))
    elif damage == "truncated":
        stored.write_bytes(weights[: len(weights) // 2])
    else:
        stored.unlink()

    code, lines = pull(f"{name}/2", dest)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: openvino_model.bin: ")
    assert tree(dest) == tree(folders[1])  # version 1, every byte
    assert os.listdir(dest.parent) == ["model"]  # no staging, scratch or lock left beside it

    stored.write_bytes(weights)  # repaired: the same pull now replaces version 1
    assert pull(f"{name}/2", dest) == (0, [str(dest)])
    assert tree(dest) == tree(folders[2]) and os.listdir(dest.parent) == ["model"]


@pytest.mark.parametrize(
    ("point", "survivor"),
    [("scratch", 1), ("before-swap", 1), ("after-swap", 2), ("between-renames", 2)],
)
def test_kill_9_at_any_point_of_a_replacing_pull_leaves_one_complete_version(
    registry, tmp_path, point, survivor
):
    """v1 installed, a pull of v2 killed at `point`; then v2's stored weights are altered and v2 is pulled
    again: that pull can only succeed by keeping (or putting back) the complete copy the killed one left."""
    name, folders = register_two_versions(registry, tmp_path, f"kill-{point}")
    dest = tmp_path / "serving" / "model"
    assert pull(f"{name}/1", dest) == (0, [str(dest)])
    marker, log = tmp_path / "stopped", tmp_path / "pull.log"
    with log.open("wb") as sink:
        stopping = subprocess.Popen(
            [sys.executable, "-c", STOPPING_PULL, "pull", f"{name}/2", "--dest", str(dest)],
            env={**os.environ, "PULL_STOP_AT": point, "PULL_STOP_MARKER": str(marker)},
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    wait_for(marker.exists, stopping, log)
    os.killpg(stopping.pid, signal.SIGKILL)
    stopping.wait()
    if point == "between-renames":
        assert not dest.exists()  # the one moment a filesystem without an atomic exchange has
    else:
        assert tree(dest) == tree(folders[survivor])  # complete at every instant
    assert len(os.listdir(dest.parent)) > 1  # the killed pull's leftovers

    stored = stored_weights(registry, name, 2)
    stored.write_bytes(bytes(stored.stat().st_size))
    code, lines = pull(f"{name}/2", dest)
    assert code == (0 if survivor == 2 else 2), lines
    assert tree(dest) == tree(folders[survivor])
    assert os.listdir(dest.parent) == ["model"]  # the dead pull's staging, scratch and locks are swept


@pytest.mark.parametrize("kind", ["other models", "a foreign manifest.json", "a file", "a symlink"])
def test_a_dest_that_is_not_a_quantforge_install_is_refused_untouched(registry, tmp_path, kind):
    name, _ = register_two_versions(registry, tmp_path, "refuse-" + kind.replace(" ", "-").replace(".", ""))
    srv = tmp_path / "srv"
    (srv / "other").mkdir(parents=True)
    (srv / "other" / MANIFEST_FILE).write_text("{}")  # not one quantforge wrote
    dest = srv / "models"
    if kind == "other models":
        make_variant(dest / "llama-int4", "c" * 40)  # quantforge installs, one level down: still not ours
        (dest / "README").write_text("the models this host serves")
    elif kind == "a foreign manifest.json":
        dest.mkdir()
        (dest / MANIFEST_FILE).write_text('{"name": "someone else\'s"}')
    elif kind == "a file":
        dest.write_text("not a folder")
    else:
        dest.symlink_to(srv / "other")
    before = tree(srv)

    code, lines = pull(f"{name}/1", dest)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: `--dest`: {dest} ") and lines[0].endswith("(nothing was touched)")
    assert tree(srv) == before and sorted(os.listdir(srv)) == ["models", "other"]


def test_an_empty_folder_is_a_valid_dest(registry, tmp_path):
    name, folders = register_two_versions(registry, tmp_path, "empty-dest")
    dest = tmp_path / "model"
    dest.mkdir()
    assert pull(f"{name}/2", dest) == (0, [str(dest)])
    assert tree(dest) == tree(folders[2])


def _pull_at_barrier(spec: str, dest: str, barrier) -> str:
    from quantforge.registry.pull import pull as pull_variant

    barrier.wait()
    return str(pull_variant(spec, Path(dest), source="hub"))


def test_two_pulls_of_one_dest_at_once_download_once_and_install_once(registry, tmp_path, monkeypatch):
    name, folders = register_two_versions(registry, tmp_path, "two-at-once")
    token = "hf_twoPullsToken"
    with HubServer(tmp_path / "hub", tokens={token: "quantforge-bot"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", token)
        manifest = read_manifest(folders[2])
        published = publish_variant(folders[2], manifest, "# card", "serving/two-at-once", private=False)
        record_publication(name, 2, published.repo, published.commit, published.tag)
        # The weights take ~1 s to arrive, so the second pull reaches the destination mid-download.
        hub.inject_fault(method="GET", path_pattern=r"/resolve/.*\.bin$", throttle_bps=2**20, times=2)
        dest = tmp_path / "serving" / "model"
        context = multiprocessing.get_context("spawn")
        barrier = context.Manager().Barrier(2)
        with context.Pool(2) as pool:
            paths = pool.starmap(_pull_at_barrier, [(f"{name}/2", str(dest), barrier)] * 2)
        downloads = hub.requests("GET", r"/resolve/.*openvino_model\.bin$")
    assert paths == [str(dest)] * 2
    assert downloads == 1  # the second pull waited for the first and kept its install
    assert tree(dest) == tree(folders[2]) and os.listdir(dest.parent) == ["model"]


def test_a_live_writer_in_another_container_is_left_alone_and_a_dead_one_is_swept(registry, tmp_path):
    """Containers sharing a volume share the kernel's locks, not pids: the other writer's pid means
    nothing here, its lock does."""
    name, folders = register_two_versions(registry, tmp_path, "containers")
    dest = tmp_path / "serving" / "model"
    dest.parent.mkdir()
    marker, log = tmp_path / "writing", tmp_path / "writer.log"
    with log.open("wb") as sink:
        writer = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", OTHER_CONTAINER_WRITER]
            + [str(dest), str(marker)],
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not marker.exists() and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if not marker.exists():
        os.killpg(writer.pid, signal.SIGKILL)
        pytest.skip(f"cannot start a process in its own pid namespace here: {log.read_text()[-500:]}")
    others = sorted(os.listdir(dest.parent))  # its scratch folder and its lock
    assert len(others) == 2

    assert pull(f"{name}/1", dest) == (0, [str(dest)])
    assert sorted(os.listdir(dest.parent)) == sorted([*others, "model"])  # left alone while it lives
    scratch = next(dest.parent.glob(".model.*.partial"))
    assert (scratch / "openvino_model.bin").read_bytes() == b"half a download"

    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    kept_by_hand = dest.parent / ".model.backup.old"  # looks like a sibling, was not made by a writer
    kept_by_hand.mkdir()
    (kept_by_hand / "notes.txt").write_text("mine")
    assert pull(f"{name}/1", dest) == (0, [str(dest)])
    assert sorted(os.listdir(dest.parent)) == [".model.backup.old", "model"]
    assert tree(dest) == tree(folders[1]) and (kept_by_hand / "notes.txt").read_text() == "mine"


def test_a_connection_dropped_mid_download_leaves_the_installed_one(
    registry, tmp_path, monkeypatch, quiet_hub_downloads
):
    name, folders = register_two_versions(registry, tmp_path, "dropped")
    token = "hf_droppedToken"
    dest = tmp_path / "serving" / "model"
    with HubServer(tmp_path / "hub", tokens={token: "quantforge-bot"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", token)
        for version in (1, 2):
            manifest = read_manifest(folders[version])
            published = publish_variant(
                folders[version], manifest, "# card", "serving/dropped", private=False
            )
            record_publication(name, version, published.repo, published.commit, published.tag)
        assert pull(f"{name}/1", dest, "--from", "hub") == (0, [str(dest)])
        hub.inject_fault(method="GET", path_pattern=r"/resolve/.*\.bin$", drop_connection=True)
        code, lines = pull(f"{name}/2", dest, "--from", "hub")
    assert code == 3  # the Hub dropped the connection: a service failure
    assert lines == [
        f"error: `from`: download of {name}/2 from hub failed: "
        "RemoteProtocolError: Server disconnected without sending a response."
    ]
    assert tree(dest) == tree(folders[1]) and os.listdir(dest.parent) == ["model"]


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs."""
    with tmpfs(tmp_path / "small-disk", "8M") as mount_point:
        yield mount_point


def test_a_version_that_cannot_fit_beside_the_installed_one_is_refused_and_keeps_it(
    registry, tmp_path, small_disk
):
    """The installed version stays until the new one is verified, so both must fit at once."""
    name, folders = register_two_versions(registry, tmp_path, "full-disk")
    dest = small_disk / "model"
    assert pull(f"{name}/1", dest) == (0, [str(dest)])
    (small_disk / "other-data").write_bytes(bytes(6 * 2**20 + 2**19))  # under 1 MiB left for 1 MiB
    code, lines = pull(f"{name}/2", dest)
    assert code == 3 and len(lines) == 1  # the disk: a service failure
    assert lines[0].startswith(f"error: not enough disk space to write {dest}: needs ~1 MiB, ")
    assert tree(dest) == tree(folders[1]) and sorted(os.listdir(small_disk)) == ["model", "other-data"]
