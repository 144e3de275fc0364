"""Toolchain: the library versions that change a variant's bytes (part of its identity)."""

import hashlib
import json
from importlib.metadata import version

BYTE_CHANGING_PACKAGES = (
    "openvino",
    "openvino-tokenizers",
    "nncf",
    "optimum-intel",
    "optimum",
    "transformers",
    "torch",
)


def toolchain() -> dict[str, str]:
    """Installed versions of the packages that decide the exported and compressed bytes."""
    return {name: version(name) for name in BYTE_CHANGING_PACKAGES}


def toolchain_hash() -> str:
    """Stable hash of `toolchain()`."""
    return hashlib.sha256(json.dumps(toolchain(), sort_keys=True).encode()).hexdigest()
