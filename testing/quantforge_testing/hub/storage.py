"""The local Hub's storage: content-addressed blobs, immutable commit files and one state file per repo
(settings, branches, tags) under one folder, so a restarted server serves the same commits."""

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
LFS_MIN_SIZE = 1 << 20  # simpler than the Hub's 10 MiB, so tests exercise LFS with small files
LFS_SUFFIXES = (".bin", ".safetensors", ".gguf", ".onnx", ".npy", ".parquet", ".gz")
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
REF_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,127}")


class HubError(Exception):
    """An HTTP error answered the way the Hub does (`X-Error-Code`, `X-Error-Message`, JSON body)."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})
        self.body: dict[str, Any] = {}


def _now() -> str:
    """The Hub's timestamp format: ISO 8601, milliseconds, UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _git_blob_oid(data: bytes) -> str:
    """What git (and the Hub's `oid`/`ETag`) calls a blob: sha1 of a header and the content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer file git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_lfs(path: str, size: int) -> bool:
    """Whether the Hub stores this file with LFS (large, or a binary suffix tracked in .gitattributes)."""
    return size >= LFS_MIN_SIZE or path.endswith(LFS_SUFFIXES)


def check_path(path: str) -> str:
    """Refuse repo paths that could escape the repo or confuse git: absolute, `..`, `.`, empty parts."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..", ".git") for p in parts):
        raise HubError(400, f"Invalid path in repo: {path!r}", "InvalidPath")
    return path


def check_repo_id(repo_id: str) -> str:
    """Refuse repo ids that are not `namespace/name` or hold `..`: they become folders under the root."""
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise HubError(400, f"Invalid repo id: {repo_id[:100]!r}", "InvalidRepoId")
    return repo_id


def _entry(sha256: str, size: int, lfs: bool, content_git_oid: str | None = None) -> dict:
    """A tree entry; an LFS file's git oid is the one of its pointer file, as in git."""
    git_oid = _git_blob_oid(lfs_pointer(sha256, size)) if lfs else content_git_oid
    return {"sha256": sha256, "size": size, "lfs": lfs, "git_oid": git_oid}


def _locked_file(path: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive flock: serialises writers across threads (separate open files) and processes."""

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    return hold()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temp sibling then rename: readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """Repos, commits and blobs under one folder; every method is threadsafe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._commits: dict[tuple[str, str], dict] = {}  # immutable, so caching them is always right
        self._cache_lock = threading.Lock()

    # blobs

    def blob_path(self, sha256: str) -> Path:
        """Where the content with this sha256 lives (whether or not it is there)."""
        return self.root / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        """Whether this content is stored (with this size, if given)."""
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_stream(self, chunks: Iterator[bytes], size: int) -> tuple[str, str]:
        """Store streamed content of a known size; return (sha256, git blob oid of the content)."""
        sha256, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
        handle, tmp = tempfile.mkstemp(suffix=".partial", dir=self.tmp)
        try:
            written = 0
            with os.fdopen(handle, "wb") as out:
                for chunk in chunks:
                    sha256.update(chunk)
                    git.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
            if written != size:
                raise HubError(400, f"expected {size} bytes, received {written}", "SizeMismatch")
            final = self.blob_path(sha256.hexdigest())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)  # same content under the same name: concurrent writers agree
        finally:
            Path(tmp).unlink(missing_ok=True)
        return sha256.hexdigest(), git.hexdigest()

    def put_file(self, path: Path, repo_path: str) -> dict:
        """Store a local file; return its tree entry."""
        size = path.stat().st_size
        with path.open("rb") as source:
            sha256, git_oid = self.put_stream(iter(lambda: source.read(CHUNK), b""), size)
        return _entry(sha256, size, is_lfs(repo_path, size), git_oid)

    def put_bytes(self, data: bytes, repo_path: str) -> dict:
        """Store content given in a commit; return its tree entry."""
        sha256, git_oid = self.put_stream(iter([data]), len(data))
        return _entry(sha256, len(data), is_lfs(repo_path, len(data)), git_oid)

    # repos

    def repo_dir(self, kind: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{kind}s" / check_repo_id(repo_id)

    def lock(self, kind: str, repo_id: str) -> contextlib.AbstractContextManager[None]:
        """The lock every change of one repo's state (creation, refs, settings) holds."""
        return _locked_file(self.root / "locks" / f"{kind}--{check_repo_id(repo_id).replace('/', '--')}.lock")

    def repo(self, kind: str, repo_id: str) -> dict | None:
        """The repo's state (settings, branches, tags), or None if it does not exist."""
        try:
            return json.loads((self.repo_dir(kind, repo_id) / "repo.json").read_bytes())
        except FileNotFoundError:
            return None

    def save_repo(self, state: dict) -> None:
        """Replace the repo's state file atomically; call with `lock` held."""
        path = self.repo_dir(state["type"], state["id"]) / "repo.json"
        _write_atomically(path, json.dumps(state, indent=1, sort_keys=True).encode())

    def repos(self, kind: str) -> list[dict]:
        """Every repo of this type."""
        base = self.root / "repos" / f"{kind}s"
        return [json.loads(p.read_bytes()) for p in sorted(base.glob("*/*/repo.json"))]

    def create_repo(self, kind: str, repo_id: str, author: str, private: bool, gated: bool | str) -> dict:
        """Create a repo whose `main` holds one commit with a .gitattributes, like the Hub."""
        with self.lock(kind, repo_id):
            if self.repo(kind, repo_id) is not None:
                raise HubError(409, f"You already created this {kind} repo", "RepoExists")
            state = {
                "id": repo_id,
                "type": kind,
                "private": private,
                "gated": check_gated(gated),
                "createdAt": _now(),
                "branches": {},
                "tags": {},
            }
            tree = {".gitattributes": self.put_bytes(GITATTRIBUTES.encode(), ".gitattributes")}
            state["branches"]["main"] = self.write_commit(state, None, tree, "initial commit", "", author)
            self.save_repo(state)
            return state

    # commits

    def write_commit(
        self, state: dict, parent: str | None, tree: dict, summary: str, description: str, author: str
    ) -> str:
        """Write an immutable commit file; return its oid (sha1 of its canonical JSON)."""
        record = {
            "repo": f"{state['type']}:{state['id']}",  # so equal trees in two repos get distinct oids
            "parent": parent,
            "summary": summary,
            "description": description,
            "author": author,
            "date": _now(),
            "tree": tree,
        }
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        oid = hashlib.sha1(canonical).hexdigest()
        path = self.repo_dir(state["type"], state["id"]) / "commits" / f"{oid}.json"
        if not path.exists():
            _write_atomically(path, canonical)
        return oid

    def commit(self, state: dict, oid: str) -> dict:
        """A commit of this repo by oid."""
        key = (f"{state['type']}:{state['id']}", oid)
        with self._cache_lock:
            cached = self._commits.get(key)
        if cached is None:
            path = self.repo_dir(state["type"], state["id"]) / "commits" / f"{oid}.json"
            cached = json.loads(path.read_bytes())
            with self._cache_lock:
                self._commits[key] = cached
        return cached

    def resolve(self, state: dict, revision: str) -> str:
        """A branch, tag, `refs/heads/X`, `refs/tags/X` or full commit oid → commit oid."""
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        if name in state["branches"]:
            return state["branches"][name]
        if name in state["tags"]:
            return state["tags"][name]["commit"]
        if re.fullmatch(r"[0-9a-f]{40}", revision):
            if (self.repo_dir(state["type"], state["id"]) / "commits" / f"{revision}.json").exists():
                return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def check_gated(value: bool | str) -> bool | str:
    """The Hub's `gated` values: False, "auto" or "manual" (True means "auto")."""
    if value is True:
        return "auto"
    if value in (False, "auto", "manual"):
        return value
    raise HubError(400, f"gated must be false, 'auto' or 'manual', not {value!r}", "BadRequest")


def apply_operations(store: Store, tree: dict, operations: list[dict]) -> dict:
    """The tree after a commit's operations; refuses bad paths and LFS objects never uploaded."""
    tree = dict(tree)
    for operation in operations:
        key, value = operation.get("key"), operation.get("value") or {}
        path = check_path(str(value.get("path", "")))
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"unsupported encoding for {path}", "BadRequest")
            tree[path] = store.put_bytes(base64.b64decode(value.get("content", "")), path)
        elif key == "lfsFile":
            sha256, size = str(value.get("oid", "")), value.get("size")
            if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not store.has_blob(sha256, size):
                raise HubError(422, f"LFS object {sha256} for {path} was never uploaded", "LfsObjectMissing")
            tree[path] = _entry(sha256, store.blob_path(sha256).stat().st_size, lfs=True)
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                raise HubError(404, f"{path} does not exist", "EntryNotFound")
        elif key == "deletedFolder":
            inside = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
            if not inside:
                raise HubError(404, f"{path} does not exist", "EntryNotFound")
            for p in inside:
                del tree[p]
        else:
            raise HubError(400, f"unknown commit operation {key!r}", "BadRequest")
    for path in tree:  # a path cannot be both a file and a folder
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        while parent:
            if parent in tree:
                raise HubError(400, f"{parent} is a file, so {path} cannot exist", "InvalidPath")
            parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
    return tree
