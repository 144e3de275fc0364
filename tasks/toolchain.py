"""Toolchain: the library versions that change a variant's bytes (part of its identity), per backend."""

import hashlib
import json
import re
from importlib.metadata import Distribution, version

from quantforge.tasks.ipex_env import ipex_site_packages

BYTE_CHANGING_PACKAGES = {
    "openvino": (
        "openvino",
        "openvino-tokenizers",
        "nncf",
        "optimum-intel",
        "optimum",
        "transformers",
        "torch",
    ),
    "torchao": ("torchao", "transformers", "torch"),
    "ipex": ("intel-extension-for-pytorch", "transformers", "torch"),
}


def toolchain(backend: str = "openvino") -> dict[str, str]:
    """Installed versions of the packages that decide the backend's bytes (IPEX's from its own env)."""
    packages = BYTE_CHANGING_PACKAGES[backend]
    if backend == "ipex":
        installed = Distribution.discover(path=[str(ipex_site_packages())])
        found = {_normalized(d.metadata["Name"]): d.version for d in installed}
        return {name: found[name] for name in packages}
    return {name: version(name) for name in packages}


def _normalized(name: str) -> str:
    """PEP 503 name: IPEX's metadata says `intel_extension_for_pytorch`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def toolchain_hash(backend: str = "openvino") -> str:
    """Stable hash of `toolchain(backend)`."""
    return hashlib.sha256(json.dumps(toolchain(backend), sort_keys=True).encode()).hexdigest()
