"""Toolchain: the library versions that change a variant's bytes (part of its identity), per backend."""

import hashlib
import json
from importlib.metadata import Distribution, version

from tasks.ipex_env import ipex_site_packages

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
        found = {
            d.metadata["Name"].lower(): d.version
            for d in Distribution.discover(path=[str(ipex_site_packages())])
        }
        return {name: found[name] for name in packages}
    return {name: version(name) for name in packages}


def toolchain_hash(backend: str = "openvino") -> str:
    """Stable hash of `toolchain(backend)`."""
    return hashlib.sha256(json.dumps(toolchain(backend), sort_keys=True).encode()).hexdigest()
