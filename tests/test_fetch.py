"""fetch: local identity, and refusal of remote code, pickles, unknown architectures and corrupt weights."""

import json
import shutil
import struct

import pytest

from quantforge.errors import QuantforgeError
from tasks.fetch import check_safetensors, fetch_source


@pytest.fixture
def model_copy(bundled_model, tmp_path):
    """A writable copy of the bundled model to tamper with."""
    target = tmp_path / "model"
    shutil.copytree(bundled_model, target)
    return target


def test_local_directory_identity_is_the_hash_of_its_files(model_copy):
    first = fetch_source(str(model_copy))
    assert first.repo == "local:model" and len(first.sha) == 64
    assert fetch_source(str(model_copy)).sha == first.sha
    (model_copy / "generation_config.json").write_text("{}")
    assert fetch_source(str(model_copy)).sha != first.sha


def test_bundled_model_is_a_llama_with_a_working_tokenizer(bundled_model):
    from transformers import AutoTokenizer

    source = fetch_source("bundled:SmolLM2-135M-Instruct")
    assert source.local_dir == bundled_model
    config = json.loads((bundled_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0  # both forms
    tokenizer = AutoTokenizer.from_pretrained(bundled_model)
    text = "The quick brown fox jumps over 12 lazy dogs."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_ids_to_tokens(0) == "<|endoftext|>" and 0 not in ids  # the GGUF bug: spaces -> 0


def test_remote_code_is_refused_without_the_flag(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantforgeError, match="needs remote code.*--trust-remote-code"):
        fetch_source(str(model_copy))


def test_unsupported_architecture_is_refused(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantforgeError, match=r"architecture \['BertForMaskedLM'\].*not supported"):
        fetch_source(str(model_copy))


def test_pickled_weights_only_are_refused(model_copy):
    (model_copy / "model.safetensors").rename(model_copy / "pytorch_model.bin")
    with pytest.raises(QuantforgeError, match="has no safetensors weights"):
        fetch_source(str(model_copy))


def test_truncated_safetensors_is_refused(model_copy):
    weights = model_copy / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    with pytest.raises(QuantforgeError, match="model.safetensors is truncated"):
        fetch_source(str(model_copy))


def test_header_lying_about_its_length_is_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(QuantforgeError, match="header past end of file"):
        check_safetensors(bad)
