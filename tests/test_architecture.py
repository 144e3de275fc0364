"""The house's shape: the wheel installs one package holding every product module and no test support,
and its imports only go down the floors (import-linter's contracts in pyproject.toml)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each installed package's modules live in the repository (pyproject.toml's package-dir).
PRODUCT_FOLDERS = {
    "quantforge": REPO / "quantforge",
    "quantforge/tasks": REPO / "tasks",
    "quantforge/flows": REPO / "flows",
    "quantforge/registry": REPO / "registry",
    "quantforge/workers": REPO / "workers",
}


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    """The product's wheel, built by setuptools as a user's pip would, unpacked."""
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(folder),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = folder.glob("quantforge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder / "site")
    return folder / "site"


def test_the_wheel_holds_every_product_module_under_one_name_and_no_test_support(unpacked_wheel):
    top_level = {p.name for p in unpacked_wheel.iterdir() if not p.name.endswith(".dist-info")}
    assert top_level == {"quantforge"}
    installed = {str(p.relative_to(unpacked_wheel)) for p in unpacked_wheel.rglob("*.py")}
    expected = set()
    for prefix, folder in PRODUCT_FOLDERS.items():
        nested = [f for f in PRODUCT_FOLDERS.values() if f != folder and f.is_relative_to(folder)]
        expected |= {
            f"{prefix}/{p.relative_to(folder)}"
            for p in folder.rglob("*.py")
            if not any(p.is_relative_to(n) for n in nested)
        }
    assert installed == expected
    assert (unpacked_wheel / "quantforge/tasks/recipe_sets/default.yaml").is_file()
    assert not [name for name in installed if "hub_server" in name or "bundled_model" in name]


def test_imports_only_go_down_the_floors(unpacked_wheel):
    """Checked on the installed layout: import-linter walks package folders, and the repository's
    folders become `quantforge.*` only when installed. It puts its working folder first on the path."""
    done = subprocess.run(
        [Path(sys.executable).parent / "lint-imports", str(REPO / "pyproject.toml")],
        cwd=unpacked_wheel,
        env={"PYTHONPATH": f"{unpacked_wheel}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
