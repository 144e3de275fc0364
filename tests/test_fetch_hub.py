"""fetch against a Hub: the real huggingface_hub client and quantforge's local Hub endpoint.

A Hub id resolves to a commit sha and downloads exactly that commit; unknown repos and revisions,
gated repos without a token and hostile repos are refused in one line before anything is loaded.
"""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from quantforge.core.errors import QuantforgeError
from quantforge.tasks.fetch import fetch_source
from quantforge_testing.hub import HubServer

TOKEN = "hf_fetchTestToken"


def model_folder(folder, value: float = 0.0, **config_extra):
    """A minimal Llama-shaped repo: config, one safetensors file, tokenizer files."""
    folder.mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **config_extra}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"model.norm.weight": np.full(8, value, dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "README.md").write_text("not downloaded: only what a causal LM needs")
    return folder


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer(tmp_path / "hub", tokens={TOKEN: "alice"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def test_hub_id_is_pinned_to_a_commit_and_downloads_exactly_it(hub, tmp_path):
    first = hub.seed_repo("acme/tiny", model_folder(tmp_path / "v1", 1.0))
    source = fetch_source("acme/tiny")
    assert source.repo == "acme/tiny" and source.sha == first and len(first) == 40
    files = {p.name for p in source.local_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files and "README.md" not in files

    second = hub.seed_repo("acme/tiny", model_folder(tmp_path / "v2", 2.0))
    assert fetch_source("acme/tiny").sha == second != first
    pinned = fetch_source("acme/tiny", revision=first)  # a sha keeps meaning the same bytes
    assert pinned.sha == first
    assert (pinned.local_dir / "model.safetensors").read_bytes() == (
        tmp_path / "v1" / "model.safetensors"
    ).read_bytes()


def test_unknown_repo_and_revision_are_named(hub, tmp_path):
    hub.seed_repo("acme/tiny", model_folder(tmp_path / "v1"))
    with pytest.raises(QuantforgeError, match=r"^`model`: repository 'acme/nope' not found"):
        fetch_source("acme/nope")
    with pytest.raises(QuantforgeError, match=r"^`revision`: 'v9' does not exist in 'acme/tiny'$"):
        fetch_source("acme/tiny", revision="v9")


def test_gated_repo_needs_a_token(hub, tmp_path, monkeypatch):
    hub.seed_repo("acme/gated", model_folder(tmp_path / "v1"), gated=True)
    with pytest.raises(QuantforgeError, match=r"^`model`: 'acme/gated' is gated: set HF_TOKEN"):
        fetch_source("acme/gated")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert len(fetch_source("acme/gated").sha) == 40


def test_remote_code_and_pickles_are_refused_before_download(hub, tmp_path):
    hub.seed_repo("acme/remote", model_folder(tmp_path / "r", auto_map={"AutoModel": "x.Model"}))
    with pytest.raises(QuantforgeError, match=r"needs remote code .* --trust-remote-code"):
        fetch_source("acme/remote")
    pickled = tmp_path / "p"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    hub.seed_repo("acme/pickled", pickled)
    with pytest.raises(
        QuantforgeError, match=r"only pickled weights: pytorch_model\.bin; pass --allow-pickle"
    ):
        fetch_source("acme/pickled")
