"""fetch: local identity, and refusal of remote code, pickles, unknown architectures and corrupt weights."""

import json
import math
import os
import shutil
import struct
import time
import tracemalloc

import pytest

from quantforge.core.errors import QuantforgeError
from quantforge.core.folder_digest import TICK_NS, folder_digest, record_path
from quantforge.tasks.fetch import check_safetensors, fetch_source


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


def test_a_local_folder_is_hashed_again_only_when_a_file_changes_even_with_its_mtime_put_back(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    real = folder_digest(folder)
    record = record_path(folder)

    def recorded_as(sha: str, started_ns: int) -> None:
        written = json.loads(record.read_text())
        record.write_text(json.dumps({**written, "sha256": sha, "started_ns": started_ns}))

    # A file changed within a clock tick of the hashing: the record is not trusted, the bytes are hashed.
    newest_change = max(p.stat().st_ctime_ns for p in folder.iterdir())
    recorded_as("f" * 64, newest_change + TICK_NS)
    assert folder_digest(folder) == real
    # Every file older than the hashing: the recorded digest is taken as it is, nothing is read.
    recorded_as("f" * 64, time.time_ns() + 10**9)
    assert folder_digest(folder) == "f" * 64
    # Same size, mtime put back: the ctime moved, so the bytes are hashed again.
    weights = folder / "model.safetensors"
    before = weights.stat()
    weights.write_bytes(b"WEIGHTS")
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_mtime_ns == before.st_mtime_ns
    changed = folder_digest(folder)
    assert changed not in (real, "f" * 64)
    weights.write_bytes(b"weights")
    assert folder_digest(folder) == real


def test_bundled_model_is_a_llama_with_a_working_tokenizer(bundled_model):
    from transformers import AutoTokenizer

    source = fetch_source(str(bundled_model))
    assert source.local_dir == bundled_model and source.repo == "local:SmolLM2-135M-Instruct"
    config = json.loads((bundled_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0  # both forms
    tokenizer = AutoTokenizer.from_pretrained(bundled_model)
    text = "The quick brown fox jumps over 12 lazy dogs."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_ids_to_tokens(0) == "<|endoftext|>" and 0 not in ids  # the GGUF bug: spaces -> 0


@pytest.mark.parametrize("model", ["bundled:SmolLM2-135M-Instruct", "./no-such-folder", "/no/such/folder"])
def test_neither_a_folder_nor_a_hub_id_is_one_line_before_any_request(model):
    with pytest.raises(QuantforgeError, match=r"is neither a local directory nor a Hub id \(org/name\)$"):
        fetch_source(model)


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


def tiny_folder(folder, config: str = '{"architectures": ["LlamaForCausalLM"]}'):
    """A repo with only what fetch reads: config.json and one small safetensors file."""
    folder.mkdir()
    (folder / "config.json").write_text(config)
    (folder / "model.safetensors").write_bytes(safetensors_bytes({"model.norm.weight": [8]}))
    return folder


def safetensors_bytes(shapes: dict[str, list[int]]) -> bytes:
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ('["LlamaForCausalLM"]', r"is not a JSON object \(a list: \['LlamaForCausalLM'\]\)"),
        ('"LlamaForCausalLM"', r"is not a JSON object \(a str: 'LlamaForCausalLM'\)"),
        ('{"architectures": ', r"is not valid JSON \(JSONDecodeError: Expecting value"),
        ("\xff\xfe{}", r"is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, r"is not valid JSON \(RecursionError"),
        ('{"architectures": "LlamaForCausalLM"}', r"has `architectures` 'LlamaForCausalLM', not a list"),
    ],
)
def test_a_config_that_is_not_a_json_object_is_refused_in_one_line(tmp_path, config, reason):
    folder = tiny_folder(tmp_path / "m", config)
    with pytest.raises(QuantforgeError, match=rf"^`model`: (config\.json of )?'local:m' {reason}") as refused:
        fetch_source(str(folder))
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300


def test_a_tokenizer_config_that_is_not_an_object_is_refused(tmp_path):
    folder = tiny_folder(tmp_path / "m")
    (folder / "tokenizer_config.json").write_text("[]")
    with pytest.raises(
        QuantforgeError, match=r"^`model`: tokenizer_config\.json of 'local:m' is not a JSON object"
    ):
        fetch_source(str(folder))


def test_a_safetensors_header_claiming_most_of_the_file_is_refused_before_it_is_read(tmp_path):
    bomb = tmp_path / "model-2.safetensors"
    with bomb.open("wb") as handle:  # 1.1 GiB, sparse: a 1 GiB header length, nothing behind it
        handle.write(struct.pack("<Q", 2**30))
        handle.truncate(int(1.1 * 2**30))
    claim = r"^`model`: model-2\.safetensors claims a 1073741824-byte safetensors header \(at most 10{8}; "
    tracemalloc.start()
    try:
        with pytest.raises(QuantforgeError, match=claim):
            check_safetensors(bomb)
        assert tracemalloc.get_traced_memory()[1] < 2**20  # the header was never read
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "header",
    [b"[]", b'{"w": {"dtype": "F32", "shape": [2]}}', b'{"w": {"shape": "2", "data_offsets": [0, 8]}}'],
)
def test_a_safetensors_header_that_is_not_a_table_of_tensors_is_refused(tmp_path, header):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(
        QuantforgeError, match=r"^`model`: bad\.safetensors is corrupt \(unreadable safetensors header\)$"
    ):
        check_safetensors(bad)
