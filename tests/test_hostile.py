"""Hostile source repos, served by the local Hub (which can lie the way a compromised endpoint would):
each is refused in one line naming the problem, nothing is written outside the cache, no repo code runs.
"""

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants
from huggingface_hub.file_download import repo_folder_name
from safetensors.numpy import save_file
from typer.testing import CliRunner

from quantforge.cli import app
from quantforge.core.errors import QuantforgeError
from quantforge.core.retries import is_transient
from quantforge.tasks.fetch import fetch_source
from quantforge_testing.hub import HubServer
from tests.conftest import EVALUATION_TEXT

TOKEN = "hf_hostileTestToken"
CANARY = "quantforge-pwned"


def model_folder(folder, **tokenizer_config):
    """A minimal Llama-shaped repo that fetch accepts as it is."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    save_file({"model.norm.weight": np.ones(8, dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer(tmp_path / "hub", tokens={TOKEN: "alice"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.chdir(tmp_path / "hub")  # a relative write by the client would land here
        yield server


def written_outside_the_cache(tmp_path) -> list[str]:
    """Files anywhere under tmp_path that are not the Hub's storage or the client's cache."""
    return [
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if p.is_file() and p.relative_to(tmp_path).parts[0] not in ("hub", "repo")
    ]


@pytest.mark.parametrize("path", ["../../outside.json", "/etc/outside.json", "a/../../outside.json"])
def test_a_path_out_of_the_repo_is_refused_before_any_download(hub, tmp_path, path):
    hub.seed_repo("mallory/escape", model_folder(tmp_path / "repo"))
    hub.plant_file("mallory/escape", path, b"{}")
    with pytest.raises(QuantforgeError, match=r"^`model`: 'mallory/escape' lists a file path outside"):
        fetch_source("mallory/escape")
    assert hub.requests("GET", r"/resolve/") == 0  # refused from the listing alone
    assert written_outside_the_cache(tmp_path) == []


def test_a_size_that_lies_fails_the_download_cleanly(hub, tmp_path):
    hub.seed_repo("mallory/liar", model_folder(tmp_path / "repo"))
    hub.plant_file("mallory/liar", "tokenizer.json", b'{"a": 1}', claimed_size=10 * 2**30)  # 10 GB, sends 8 B
    with pytest.raises(QuantforgeError, match=r"^`model`: download of 'mallory/liar' failed"):
        fetch_source("mallory/liar")
    assert written_outside_the_cache(tmp_path) == []


def test_a_download_larger_than_the_disk_is_refused_before_it_starts(hub, tmp_path):
    hub.seed_repo("mallory/huge", model_folder(tmp_path / "repo"))
    hub.plant_file("mallory/huge", "model-2.safetensors", b"x", claimed_size=2**60)
    with pytest.raises(QuantforgeError, match=r"^not enough disk space to download mallory/huge@"):
        fetch_source("mallory/huge")
    assert hub.requests("GET", r"/resolve/") == 1  # config.json only: nothing big was fetched


def climbing_to(target: Path, repo: str, folder: str) -> str:
    """The string that, joined to `folder` of the repo's Hub cache, names `target`: what a compromised Hub
    puts in a header that huggingface_hub turns into a path."""
    cache = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
    return os.path.relpath(target, cache / folder)


@pytest.fixture
def sentinel(tmp_path):
    """A folder outside both caches holding one file; a hostile answer aims at `sentinel/pwned`."""
    folder = tmp_path / "sentinel"
    folder.mkdir()
    (folder / "keep.txt").write_text("untouched")
    return folder


# (request, file, status, header, folder of the repo's cache the value is joined to)
HOSTILE_HEADERS = {
    "etag": ("HEAD", "config.json", None, "ETag", "blobs"),
    "linked-etag": ("HEAD", "model.safetensors", None, "X-Linked-Etag", "blobs"),
    "etag-on-get": ("GET", "config.json", None, "ETag", "blobs"),
    "commit": ("HEAD", "config.json", None, "X-Repo-Commit", "snapshots"),
    "commit-of-a-404": ("HEAD", "config.json", 404, "X-Repo-Commit", ".no_exist"),
}


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_a_download_header_naming_a_path_is_refused_before_anything_is_written(hub, tmp_path, sentinel, case):
    method, name, status, header, folder = HOSTILE_HEADERS[case]
    repo = f"mallory/{case}"
    hub.seed_repo(repo, model_folder(tmp_path / "repo"))
    value = climbing_to(sentinel / "pwned", repo, folder)
    headers = {header: f'"{value}"' if "etag" in header.lower() else value}
    if status == 404:
        headers["X-Error-Code"] = "EntryNotFound"
    hub.inject_fault(method, rf"/resolve/[^/]+/{name}$", status=status, headers=headers)
    with pytest.raises(QuantforgeError) as refused:
        fetch_source(repo)
    message = str(refused.value)
    assert message.startswith(f"`model`: {repo!r}: ") and f"`{header}`" in message and value[:20] in message
    assert "\n" not in message and len(message) < 400
    assert not is_transient(refused.value)  # the fetch task's retry condition: not retried
    assert hub.requests(method, rf"/resolve/[^/]+/{name}$") == 1  # nor by huggingface_hub itself
    assert sorted(p.name for p in sentinel.iterdir()) == ["keep.txt"]
    assert written_outside_the_cache(tmp_path) == ["sentinel/keep.txt"]


def redirect_to_resolve_cache(hub, repo: str, sha: str, name: str) -> str:
    """Answer the HEAD of `name`'s `resolve` with a relative 307, as the real Hub does; the cache path."""
    target = f"/api/resolve-cache/models/{repo}/{sha}/{name}"
    hub.inject_fault("HEAD", rf"/resolve/[^/]+/{name}$", status=307, headers={"Location": target})
    return target


def test_a_relative_redirect_like_the_real_hubs_is_followed(hub, tmp_path):
    sha = hub.seed_repo("acme/redirected", model_folder(tmp_path / "repo"))
    target = redirect_to_resolve_cache(hub, "acme/redirected", sha, "config.json")
    assert fetch_source("acme/redirected").sha == sha
    assert hub.requests("HEAD", target) == 1


# (header, status of the redirect's target, folder of the repo's cache the value is joined to)
HOSTILE_AFTER_A_REDIRECT = {
    "etag": ("ETag", None, "blobs"),
    "commit": ("X-Repo-Commit", None, "snapshots"),
    "commit-of-a-404": ("X-Repo-Commit", 404, ".no_exist"),
}


@pytest.mark.parametrize("case", list(HOSTILE_AFTER_A_REDIRECT))
def test_a_hostile_header_behind_a_relative_redirect_is_refused(hub, tmp_path, sentinel, case):
    """huggingface_hub follows a relative redirect of its HEAD and reads the headers of where it lands."""
    header, status, folder = HOSTILE_AFTER_A_REDIRECT[case]
    repo = f"mallory/redirect-{case}"
    sha = hub.seed_repo(repo, model_folder(tmp_path / "repo"))
    target = redirect_to_resolve_cache(hub, repo, sha, "config.json")
    value = climbing_to(sentinel / "pwned", repo, folder)
    headers = {header: f'"{value}"' if header == "ETag" else value}
    if status == 404:
        headers["X-Error-Code"] = "EntryNotFound"
    hub.inject_fault("HEAD", re.escape(target), status=status, headers=headers)
    with pytest.raises(QuantforgeError) as refused:
        fetch_source(repo)
    message = str(refused.value)
    assert (
        message.startswith(f"`model`: {repo!r}: the Hub answered HEAD ") and "/api/resolve-cache/" in message
    )
    assert f"`{header}`" in message and value[:20] in message
    assert "\n" not in message and len(message) < 500
    assert not is_transient(refused.value)
    assert hub.requests("HEAD", re.escape(target)) == 1
    assert sorted(p.name for p in sentinel.iterdir()) == ["keep.txt"]
    assert written_outside_the_cache(tmp_path) == ["sentinel/keep.txt"]


def test_a_commit_sha_that_is_not_one_is_refused_before_any_download(hub, tmp_path):
    hub.seed_repo("mallory/sha", model_folder(tmp_path / "repo"))
    hub.inject_fault("GET", r"/api/models/mallory/sha", status=None, json_fields={"sha": "../" * 8 + "x"})
    with pytest.raises(QuantforgeError, match=r"^`model`: 'mallory/sha' answered commit sha '\.\./\.\./"):
        fetch_source("mallory/sha")
    assert hub.requests(None, r"/resolve/") == 0


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        f"{{% set x = cycler.__init__.__globals__.os.system('touch {CANARY}') %}}",
    ],
)
def test_a_chat_template_reaching_for_python_is_refused_and_never_runs(hub, tmp_path, template):
    hub.seed_repo("mallory/template", model_folder(tmp_path / "repo", chat_template=template))
    with pytest.raises(QuantforgeError, match=r"chat template 'tokenizer_config.json' of .* unsafe"):
        fetch_source("mallory/template")
    assert not list(tmp_path.rglob(CANARY))


def test_a_plain_chat_template_passes(hub, tmp_path):
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    hub.seed_repo("acme/chat", model_folder(tmp_path / "repo", chat_template=template))
    assert fetch_source("acme/chat").repo == "acme/chat"


def test_a_local_folder_linking_out_of_itself_is_refused(tmp_path):
    folder = model_folder(tmp_path / "local")
    (folder / "tokenizer.json").symlink_to("/etc/passwd")
    with pytest.raises(QuantforgeError, match=r"tokenizer\.json in .* is a symlink out of the folder"):
        fetch_source(str(folder))


def test_the_command_line_refuses_a_hostile_answer_in_one_line_exit_2_without_retrying(
    hub, tmp_path, sentinel, prefect_harness
):
    """Through `quantforge run` and its Prefect fetch task (which retries transient failures)."""
    hub.seed_repo("mallory/cli", model_folder(tmp_path / "repo"))
    value = climbing_to(sentinel / "pwned", "mallory/cli", "blobs")
    hub.inject_fault("HEAD", r"/resolve/[^/]+/config\.json$", status=None, headers={"ETag": f'"{value}"'})
    output = tmp_path / "out"
    command = [
        "run",
        "mallory/cli",
        "--recipes",
        "quick",
        "--evaluation",
        str(EVALUATION_TEXT),
        "--output-dir",
        str(output),
    ]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "`model`: 'mallory/cli': the Hub answered HEAD" in errors[0]
    assert hub.requests("HEAD", r"/resolve/") == 1  # the task was not retried
    assert sorted(p.name for p in sentinel.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"config.json": b"[1, 2]"},
            "`model`: config.json of 'local:m' is not a JSON object (a list: [1, 2])",
        ),
        (
            {"model-2.safetensors": struct.pack("<Q", 200_000_000) + bytes(210_000_000 - 8)},
            "`model`: model-2.safetensors claims a 200000000-byte safetensors header",
        ),
    ],
)
def test_the_command_line_refuses_a_bad_config_or_header_in_one_line_exit_2(
    tmp_path, prefect_harness, files, message
):
    folder = model_folder(tmp_path / "m")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    command = [
        "run",
        str(folder),
        "--recipes",
        "quick",
        "--evaluation",
        str(EVALUATION_TEXT),
        "--output-dir",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0]
