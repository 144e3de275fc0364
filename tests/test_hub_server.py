"""The local Hub endpoint driven by the real huggingface_hub client over HTTP on 127.0.0.1."""

import os

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # plain LFS uploads; read when huggingface_hub is imported

import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.numpy import save_file

from quantforge_testing.hub import HubServer

TOKEN = "hf_hubServerTestToken"
REPO = "acme/tiny"


@pytest.fixture
def hub(tmp_path):
    with HubServer(tmp_path / "hub", tokens={TOKEN: "alice"}) as server:
        yield server


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url, token=TOKEN)


@pytest.fixture
def anonymous(hub):
    return HfApi(endpoint=hub.url, token=False)


def model_folder(folder: Path, seed: int = 0) -> Path:
    """A 2 MiB random weights file (LFS) and small text files (regular), one in a subfolder."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(2 * 2**20))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "seed": seed}))
    (folder / "README.md").write_text(
        "---\npipeline_tag: text-generation\ntags:\n- quantforge\n---\n# tiny\n"
    )
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".cache" not in p.parts
    }


def test_upload_folder_makes_one_commit_with_lfs_and_regular_files(hub, api, tmp_path):
    assert api.create_repo(REPO).repo_id == REPO
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    with pytest.raises(HfHubHTTPError) as exists:
        api.create_repo(REPO)
    assert exists.value.response.status_code == 409

    folder = model_folder(tmp_path / "v1")
    info = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="first upload")
    assert len(info.oid) == 40 and info.repo_url.repo_id == REPO
    assert hub.requests("POST", r"/commit/", status=200) == 1
    assert hub.requests("PUT", r"/info/lfs/objects/[0-9a-f]{64}$", status=200) == 1  # only the weights
    commits = api.list_repo_commits(REPO)
    assert [c.title for c in commits] == ["first upload", "initial commit"] and commits[
        0
    ].commit_id == info.oid
    assert commits[0].authors == ["alice"]

    model = api.model_info(REPO, revision=info.oid, files_metadata=True)
    assert model.sha == info.oid and model.pipeline_tag == "text-generation" and "quantforge" in model.tags
    siblings = {s.rfilename: s for s in model.siblings}
    assert set(siblings) == {
        ".gitattributes",
        "model.safetensors",
        "config.json",
        "README.md",
        "tokenizer/vocab.txt",
    }
    weights = siblings["model.safetensors"]
    assert weights.size == 2 * 2**20 and weights.lfs is not None and len(weights.lfs.sha256) == 64
    assert siblings["config.json"].lfs is None

    assert sorted(api.list_repo_files(REPO)) == sorted(siblings)
    top = {e.path: type(e).__name__ for e in api.list_repo_tree(REPO)}
    assert (
        top["tokenizer"] == "RepoFolder"
        and top["config.json"] == "RepoFile"
        and "tokenizer/vocab.txt" not in top
    )
    (inside,) = api.list_repo_tree(REPO, path_in_repo="tokenizer")
    assert inside.path == "tokenizer/vocab.txt" and inside.size == 4
    assert [p.path for p in api.get_paths_info(REPO, ["config.json", "tokenizer", "nope"])] == [
        "config.json",
        "tokenizer",
    ]

    listed = list(api.list_models(author="acme", sort="last_modified", limit=5))
    assert [m.id for m in listed] == [REPO] and listed[0].sha == info.oid


def test_unchanged_files_are_not_committed_again(hub, api, tmp_path):
    api.create_repo(REPO)
    folder = model_folder(tmp_path / "v1")
    first = api.upload_folder(repo_id=REPO, folder_path=folder)
    again = api.upload_folder(repo_id=REPO, folder_path=folder)  # the client compares preupload oids
    assert again.oid == first.oid and hub.requests("POST", r"/commit/") == 1


def test_a_commit_sha_keeps_serving_the_same_bytes(hub, api, tmp_path):
    api.create_repo(REPO)
    v1 = model_folder(tmp_path / "v1", seed=1)
    first = api.upload_folder(repo_id=REPO, folder_path=v1).oid
    second = api.upload_folder(repo_id=REPO, folder_path=model_folder(tmp_path / "v2", seed=2)).oid
    assert second != first and api.model_info(REPO).sha == second

    pinned = snapshot_download(REPO, revision=first, endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "c1")
    assert files_of(Path(pinned)) == {
        **files_of(v1),
        ".gitattributes": files_of(Path(pinned))[".gitattributes"],
    }
    weights = hf_hub_download(
        REPO, "model.safetensors", revision=first, endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "c2"
    )
    assert Path(weights).read_bytes() == (v1 / "model.safetensors").read_bytes()


def test_resolve_answers_range_requests_and_lfs_headers(hub, api, tmp_path):
    api.create_repo(REPO)
    folder = model_folder(tmp_path / "v1")
    sha = api.upload_folder(repo_id=REPO, folder_path=folder).oid
    url = f"{hub.url}/{REPO}/resolve/main/model.safetensors"
    head = httpx.head(url)
    assert head.headers["X-Repo-Commit"] == sha and int(head.headers["X-Linked-Size"]) == 2 * 2**20
    assert (
        head.headers["X-Linked-Etag"].strip('"')
        == api.model_info(REPO, files_metadata=True)
        .siblings[[s.rfilename for s in api.model_info(REPO).siblings].index("model.safetensors")]
        .lfs.sha256
    )
    part = httpx.get(url, headers={"Range": "bytes=1000-"})
    assert part.status_code == 206 and part.content == (folder / "model.safetensors").read_bytes()[1000:]
    assert httpx.get(url, headers={"Range": "bytes=99999999-"}).status_code == 416


def test_tags_and_refs(api, tmp_path):
    api.create_repo(REPO)
    sha = api.upload_folder(repo_id=REPO, folder_path=model_folder(tmp_path / "v1")).oid
    api.create_tag(REPO, tag="v1.0", revision=sha, tag_message="first")
    with pytest.raises(HfHubHTTPError) as duplicate:
        api.create_tag(REPO, tag="v1.0")
    assert duplicate.value.response.status_code == 409
    api.create_branch(REPO, branch="dev", revision="v1.0")
    refs = api.list_repo_refs(REPO)
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1.0", "refs/tags/v1.0", sha)]
    assert {b.name: b.target_commit for b in refs.branches} == {"main": sha, "dev": sha}
    assert api.model_info(REPO, revision="v1.0").sha == sha
    api.delete_tag(REPO, tag="v1.0")
    assert api.list_repo_refs(REPO).tags == []


def test_errors_map_to_the_client_exceptions(hub, api, anonymous, tmp_path):
    hub.seed_repo(REPO, model_folder(tmp_path / "v1"))
    download = {"endpoint": hub.url, "cache_dir": tmp_path / "cache", "token": TOKEN}
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nope", "config.json", **download)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="v9", **download)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json", **download)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="0" * 40)
    with pytest.raises(HfHubHTTPError) as invalid_token:
        HfApi(endpoint=hub.url, token="hf_wrong").model_info(REPO)
    assert invalid_token.value.response.status_code == 401
    assert api.whoami()["name"] == "alice"
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=hub.url, token="hf_wrong").whoami()


def test_private_repo_is_invisible_without_a_token(hub, api, anonymous, tmp_path):
    api.create_repo("acme/secret", private=True)
    assert api.model_info("acme/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info("acme/secret")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/secret", ".gitattributes", endpoint=hub.url, token=False, cache_dir=tmp_path)
    assert [m.id for m in anonymous.list_models(author="acme")] == []
    # LFS uploads carry a signed URL, not the token: they work for private repos too
    api.upload_file(path_or_fileobj=os.urandom(2**20), path_in_repo="w.bin", repo_id="acme/secret")
    assert "w.bin" in api.list_repo_files("acme/secret")


def test_gated_repo_needs_a_token_to_download(hub, anonymous, tmp_path):
    hub.seed_repo("acme/gated", model_folder(tmp_path / "v1"), gated=True)
    assert anonymous.model_info("acme/gated").gated == "auto"  # metadata stays visible
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/gated", "config.json", endpoint=hub.url, token=False, cache_dir=tmp_path / "c1")
    path = hf_hub_download(
        "acme/gated", "config.json", endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "c2"
    )
    assert json.loads(Path(path).read_text())["model_type"] == "llama"


def test_writes_need_a_valid_token(hub, api, anonymous, tmp_path):
    with pytest.raises(HfHubHTTPError) as denied:
        anonymous.create_repo(REPO)
    assert denied.value.response.status_code == 401
    api.create_repo(REPO)
    with pytest.raises(HfHubHTTPError) as denied:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO)
    assert denied.value.response.status_code == 401
    assert hub.requests("POST", r"/commit/") == 0


def test_paths_escaping_the_repo_and_unknown_lfs_objects_are_refused(hub, api):
    api.create_repo(REPO)
    head = api.model_info(REPO).sha
    url = f"{hub.url}/api/models/{REPO}/commit/main"
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}

    def commit(*operations: dict) -> httpx.Response:
        lines = [{"key": "header", "value": {"summary": "s"}}, *operations]
        return httpx.post(url, headers=auth, content="\n".join(json.dumps(line) for line in lines))

    for path in ("../evil", "a/../../evil", "/abs", "a//b"):
        escaped = commit({"key": "file", "value": {"path": path, "content": "eA==", "encoding": "base64"}})
        assert escaped.status_code == 400, path
    missing = commit(
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "a" * 64, "size": 1}}
    )
    assert missing.status_code == 422
    stale = httpx.post(
        url,
        headers=auth,
        content=json.dumps({"key": "header", "value": {"summary": "s", "parentCommit": "f" * 40}}),
    )
    assert stale.status_code == 412
    assert api.model_info(REPO).sha == head
    with pytest.raises(ValueError):  # the client refuses too, before any request
        api.upload_file(path_or_fileobj=b"x", path_in_repo="../x", repo_id=REPO)


def test_lfs_upload_is_retried_by_the_client_after_two_500s(hub, api):
    api.create_repo(REPO)
    hub.inject_fault(method="PUT", path_pattern=r"/info/lfs/objects/", status=500, times=2)
    before = api.model_info(REPO).sha
    info = api.upload_file(path_or_fileobj=os.urandom(2**20), path_in_repo="w.bin", repo_id=REPO)
    assert hub.requests("PUT", r"/info/lfs/objects/") == 3  # http_backoff: 500, 500, 200
    assert [c.commit_id for c in api.list_repo_commits(REPO)][:2] == [info.oid, before]


def test_failed_commit_post_commits_nothing(hub, api):
    api.create_repo(REPO)
    before = api.list_repo_refs(REPO)
    hub.inject_fault(method="POST", path_pattern=r"/commit/", status=500, times=1)
    with pytest.raises(HfHubHTTPError) as failed:
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id=REPO)
    assert failed.value.response.status_code == 500  # the client does not retry a commit by itself
    assert api.list_repo_refs(REPO) == before

    hub.inject_fault(method="POST", path_pattern=r"/commit/", drop_connection=True)
    with pytest.raises(httpx.TransportError):
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id=REPO)
    assert api.list_repo_refs(REPO) == before
    assert hub.requests("POST", r"/commit/", status=0) == 1


def test_faults_and_counters_over_http_need_the_control_token(hub, api):
    api.create_repo(REPO)
    fault = {
        "method": "GET",
        "path_pattern": r"/api/models/acme/",
        "status": 429,
        "retry_after": 0,
        "times": 1,
    }
    for auth in ({}, {"Authorization": f"Bearer {TOKEN}"}):  # no token, and a Hub user's write token
        assert httpx.post(f"{hub.url}/_quantforge/faults", json=fault, headers=auth).status_code == 401
        assert httpx.delete(f"{hub.url}/_quantforge/faults", headers=auth).status_code == 401
        assert httpx.get(f"{hub.url}/_quantforge/requests", headers=auth).status_code == 401
    assert httpx.get(f"{hub.url}/api/models/{REPO}").status_code == 200  # no fault was taken

    control = {"Authorization": f"Bearer {hub.control_token}"}
    httpx.post(f"{hub.url}/_quantforge/faults", json=fault, headers=control).raise_for_status()
    assert httpx.get(f"{hub.url}/api/models/{REPO}").status_code == 429
    assert httpx.get(f"{hub.url}/api/models/{REPO}").status_code == 200
    httpx.post(
        f"{hub.url}/_quantforge/faults", json={**fault, "times": 5}, headers=control
    ).raise_for_status()
    httpx.delete(f"{hub.url}/_quantforge/faults", headers=control).raise_for_status()
    assert httpx.get(f"{hub.url}/api/models/{REPO}").status_code == 200
    counted = httpx.get(
        f"{hub.url}/_quantforge/requests", params={"method": "GET", "status": "429"}, headers=control
    ).json()
    assert counted["count"] == 1


def test_a_lying_answer_can_be_injected(hub, api, tmp_path):
    """`status=None`: the normal answer with a header or JSON field replaced, as a compromised Hub sends."""
    sha = hub.seed_repo(REPO, model_folder(tmp_path / "v1"))
    hub.inject_fault("HEAD", r"/resolve/.*config\.json$", status=None, headers={"ETag": '"../x"'})
    head = httpx.head(f"{hub.url}/{REPO}/resolve/main/config.json")
    assert head.status_code == 200 and head.headers["ETag"] == '"../x"'
    assert head.headers["X-Repo-Commit"] == sha
    hub.inject_fault("GET", r"/api/models/", status=None, json_fields={"sha": "not-a-sha"})
    assert httpx.get(f"{hub.url}/api/models/{REPO}").json()["sha"] == "not-a-sha"
    assert api.model_info(REPO).sha == sha  # one answer each


@pytest.mark.parametrize(
    "path",
    [
        "/api/models/acme/%2e%2e/revision/main",
        "/api/models/%2E%2E/%2e%2e/revision/main",
        "/api/models/acme%2F..%2F..%2Fhub/x/revision/main",
        "/acme/..%2F..%2Frepos/resolve/main/config.json",
        "/acme/tiny/resolve/main/..%2F..%2Frepo.json",
        "/acme/tiny/resolve/main/%2e%2e/%2e%2e/repo.json",
        "/api/models/acme/tiny/tree/main/a%2F..%2F..%2Fx",
        "/acme/tiny/resolve/main/a%5C..%5Cx",
        "/api/models/..%2F..%2F..%2Foutside/x",  # tmp_path/outside/x/repo.json, beside the root
    ],
)
def test_dot_dot_and_encoded_slashes_in_repo_ids_and_paths_are_refused(hub, tmp_path, path):
    hub.seed_repo(REPO, model_folder(tmp_path / "v1"))
    outside = tmp_path / "outside" / "x"
    outside.mkdir(parents=True)
    state = {"id": "outside/x", "type": "model", "private": False, "gated": False, "branches": {}, "tags": {}}
    (outside / "repo.json").write_text(json.dumps({**state, "createdAt": "2026-01-01T00:00:00.000Z"}))
    before = sorted(p for p in tmp_path.rglob("*"))
    answer = httpx.get(hub.url + path)
    assert answer.status_code == 400 and answer.headers["X-Error-Code"] in ("InvalidPath", "InvalidRepoId")
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, in the root or beside it


def test_encoded_slashes_in_revisions_and_tree_paths_still_work(hub, api, tmp_path):
    """The client encodes `/` in these two (`quote(..., safe="")`): refusing them would break it."""
    folder = model_folder(tmp_path / "v1")
    (folder / "tokenizer" / "extra").mkdir()
    (folder / "tokenizer" / "extra" / "merges.txt").write_text("a b\n")
    sha = hub.seed_repo(REPO, folder)
    answer = httpx.head(f"{hub.url}/{REPO}/resolve/refs%2Fheads%2Fmain/config.json")
    assert answer.status_code == 200 and answer.headers["X-Repo-Commit"] == sha
    listed = [entry.path for entry in api.list_repo_tree(REPO, path_in_repo="tokenizer/extra")]
    assert listed == ["tokenizer/extra/merges.txt"]


def test_restart_on_the_same_root_serves_the_same_commit(tmp_path):
    folder = model_folder(tmp_path / "v1")
    with HubServer(tmp_path / "hub") as first:
        sha = first.seed_repo(REPO, folder, message="seeded")
    with HubServer(tmp_path / "hub") as second:
        info = HfApi(endpoint=second.url, token=False).model_info(REPO)
        assert info.sha == sha
        path = hf_hub_download(
            REPO, "model.safetensors", revision=sha, endpoint=second.url, cache_dir=tmp_path
        )
        assert Path(path).read_bytes() == (folder / "model.safetensors").read_bytes()


def test_command_line_server_prints_its_endpoint_and_stops_on_sigterm(tmp_path):
    folder = model_folder(tmp_path / "v1")
    command = [sys.executable, "-m", "quantforge_testing.hub", "--root", str(tmp_path / "hub")]
    command += ["--token", f"{TOKEN}:alice", "--seed", f"{REPO}={folder}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("HF_ENDPOINT=http://127.0.0.1:")
        endpoint = line.removeprefix("HF_ENDPOINT=")
        name, _, control_token = process.stdout.readline().strip().partition("=")
        assert name == "QUANTFORGE_HUB_CONTROL_TOKEN" and len(control_token) >= 32
        assert HfApi(endpoint=endpoint, token=TOKEN).whoami()["name"] == "alice"
        assert "config.json" in HfApi(endpoint=endpoint, token=False).list_repo_files(REPO)
        requests = httpx.get(
            f"{endpoint}/_quantforge/requests", headers={"Authorization": f"Bearer {control_token}"}
        )
        assert requests.json()["count"] >= 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""  # exactly two lines
    finally:
        process.kill()
        process.wait()


def test_only_loopback(tmp_path):
    with pytest.raises(ValueError, match="127.0.0.1"):
        HubServer(tmp_path, host="0.0.0.0")


def test_seeding_the_same_folder_again_makes_no_commit(hub, api, tmp_path):
    folder = model_folder(tmp_path / "v1")
    first = hub.seed_repo(REPO, folder)
    assert hub.seed_repo(REPO, folder) == first
    assert len(api.list_repo_commits(REPO)) == 2  # the repo's initial commit and the seed
    (folder / "config.json").write_text("{}")
    assert hub.seed_repo(REPO, folder) != first


def test_repo_info_counts_safetensors_parameters(hub, api, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file(
        {"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float16)}, str(folder / "model.safetensors")
    )
    hub.seed_repo(REPO, folder)
    info = api.model_info(REPO, expand=["safetensors"])
    assert info.safetensors.total == 17 and info.safetensors.parameters == {"F32": 12, "F16": 5}
    [listed] = api.list_models(author="acme", expand=["sha", "safetensors"])
    assert listed.safetensors.total == 17 and listed.sha == info.sha


def test_throttled_download_is_slow_but_complete(hub, api, tmp_path):
    folder = model_folder(tmp_path / "v1")
    hub.seed_repo(REPO, folder)
    hub.inject_fault(method="GET", path_pattern=r"/resolve/.*safetensors", throttle_bps=4 * 2**20)
    started = time.monotonic()
    path = hf_hub_download(REPO, "model.safetensors", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert time.monotonic() - started >= 0.4  # 2 MiB at 4 MiB/s
    assert Path(path).read_bytes() == (folder / "model.safetensors").read_bytes()


def test_a_probe_of_an_unknown_endpoint_keeps_the_connection_usable(hub, api):
    api.create_repo(REPO)
    connection = http.client.HTTPConnection("127.0.0.1", int(hub.url.rsplit(":", 1)[1]), timeout=10)
    try:
        for path in ("/api/no-such-endpoint", f"/api/models/{REPO}", "/api/no-such-endpoint"):
            connection.request("GET", path)  # one socket throughout: a silent close would fail here
            response = connection.getresponse()
            response.read()
            assert response.status in (200, 404) and response.getheader("Connection") != "close"
            time.sleep(0.1)
    finally:
        connection.close()


def test_resolve_cache_answers_like_resolve(hub, tmp_path):
    """Where the real Hub redirects a `resolve` (a relative 307): same headers, same bytes."""
    sha = hub.seed_repo(REPO, model_folder(tmp_path / "v1"))
    resolve = httpx.get(f"{hub.url}/{REPO}/resolve/{sha}/config.json")
    cached = httpx.get(f"{hub.url}/api/resolve-cache/models/{REPO}/{sha}/config.json")
    assert cached.status_code == 200 and cached.content == resolve.content
    assert cached.headers["ETag"] == resolve.headers["ETag"] and cached.headers["X-Repo-Commit"] == sha


def test_dataset_repos_are_served_beside_model_repos_with_their_card(hub, anonymous, tmp_path):
    from quantforge_testing.dataset_repos import (
        C4_REPO,
        WIKITEXT_2,
        WIKITEXT_REPO,
        seed_dataset_repos,
        wikitext_rows,
    )

    shas = seed_dataset_repos(hub, tmp_path / "repos")
    info = anonymous.dataset_info(WIKITEXT_REPO, files_metadata=True)
    assert info.sha == shas[WIKITEXT_REPO]
    # `cardData` is the card's YAML header, nested lists and mappings included, as the Hub parses it
    assert info.card_data.configs[2] == {
        "config_name": "wikitext-2-raw-v1",
        "data_files": [
            {"split": split, "path": f"wikitext-2-raw-v1/{split}-*"}
            for split in ("test", "train", "validation")
        ],
    }
    (test_split, *_) = info.card_data.dataset_info[2]["splits"]
    assert test_split["num_examples"] == len(wikitext_rows(WIKITEXT_2["test"]))
    parquet = {s.rfilename: s for s in info.siblings}["wikitext-2-raw-v1/test-00000-of-00001.parquet"]
    assert parquet.lfs is not None and parquet.lfs.size == parquet.size  # parquet goes to LFS, as there
    listing = anonymous.list_repo_tree(WIKITEXT_REPO, "wikitext-2-raw-v1", repo_type="dataset")
    assert [e.path.split("/")[1] for e in listing] == [
        f"{split}-00000-of-00001.parquet" for split in ("test", "train", "validation")
    ]
    card = hf_hub_download(
        WIKITEXT_REPO,
        "README.md",
        repo_type="dataset",
        endpoint=hub.url,
        cache_dir=tmp_path / "c",
        token=False,
    )
    assert Path(card).read_bytes() == (tmp_path / "repos" / "wikitext" / "README.md").read_bytes()
    assert {d.id for d in anonymous.list_datasets()} == {WIKITEXT_REPO, C4_REPO}
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info(WIKITEXT_REPO)  # a dataset repo is no model repo


def test_card_data_keeps_dates_as_strings_and_drops_a_header_with_aliases(hub, api, tmp_path):
    folder = model_folder(tmp_path / "v1")
    card = "---\nlicense: mit\nreleased: 2024-05-01\nmodel-index:\n- name: tiny\n  results: []\n---\n"
    (folder / "README.md").write_text(card)
    hub.seed_repo(REPO, folder)
    card_data = api.model_info(REPO).card_data
    assert (card_data.license, card_data.released) == ("mit", "2024-05-01")
    (folder / "README.md").write_text("---\nbase: &a [x, x]\nmore: [*a, *a]\n---\n")
    hub.seed_repo(REPO, folder)
    assert api.model_info(REPO).card_data is None
