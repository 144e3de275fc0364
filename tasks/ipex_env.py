"""Where the IPEX environment lives, and the one-line error when it is missing."""

import os
import sys
from pathlib import Path

from quantforge.core.errors import QuantforgeError

REPO_ROOT = Path(__file__).resolve().parents[1]
CREATE_COMMAND = "make ipex-env"
WORKER = REPO_ROOT / "workers" / "ipex_worker.py"


def ipex_env_dir() -> Path:
    """`QUANTFORGE_IPEX_ENV`, else `.venv-ipex/` beside the code."""
    return Path(os.environ.get("QUANTFORGE_IPEX_ENV") or REPO_ROOT / ".venv-ipex")


def ipex_python() -> Path:
    """The IPEX environment's interpreter; raise naming the command that creates it when it is missing."""
    python = ipex_env_dir() / "bin" / "python"
    if not (ipex_env_dir() / ".installed").exists() or not python.exists():
        raise QuantforgeError(
            f"backend ipex needs its own environment {ipex_env_dir()} (torch 2.8 + IPEX 2.8), which is "
            f"missing: create it with `{CREATE_COMMAND}` (about 3-5 min, 7 GB)"
        )
    return python


def ipex_site_packages() -> Path:
    """The IPEX environment's site-packages (same Python minor version as this one)."""
    ipex_python()
    return (
        ipex_env_dir() / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )
