"""The Hub endpoint, read when used: `HF_ENDPOINT` is otherwise frozen when huggingface_hub is imported."""

import os

from huggingface_hub import HfApi, constants


def hub_endpoint() -> str:
    """`HF_ENDPOINT` as set now, else huggingface_hub's default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_api() -> HfApi:
    """A client for `hub_endpoint()`; the token comes from `HF_TOKEN` at request time."""
    return HfApi(endpoint=hub_endpoint())
