"""The local Hub's HTTP side: the routes of the Hub API the `huggingface_hub` client uses (repos, commits
as NDJSON, plain Git LFS uploads, tags and branches, repo info, trees, refs, commit history and
`resolve` downloads with the Hub's error headers), answered by one handler per connection with HTTP/1.1
keep-alive, and the two control endpoints of fault injection and request counting."""

import functools
import hashlib
import hmac
import http.server
import json
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from quantforge_testing.hub.faults import CONTROL, Fault
from quantforge_testing.hub.storage import (
    CHUNK,
    REF_NAME,
    REPO_ID,
    HubError,
    Store,
    apply_operations,
    check_gated,
    check_path,
    is_lfs,
    lfs_pointer,
)

if TYPE_CHECKING:
    from quantforge_testing.hub.server import HubHTTPServer, HubServer

log = logging.getLogger(__name__)

KINDS = {"models": "model", "datasets": "dataset"}
URL_PREFIX = {"model": "", "dataset": "datasets/"}


def _front_matter(text: str) -> dict[str, Any]:
    """A card's YAML header as the Hub's `cardData` has it: nested lists and mappings (a dataset card's
    `configs` and `dataset_info`), dates as strings; {} without one, or for one that is not a YAML
    mapping or uses aliases (the JSON answer would expand them)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), len(lines))
    header = "\n".join(lines[1:end])
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(header, Loader=yaml.SafeLoader)):
            return {}
        data = yaml.safe_load(header)
    except yaml.YAMLError:
        return {}
    return json.loads(json.dumps(data, default=str)) if isinstance(data, dict) else {}


def _parameters(store: Store, tree: dict) -> dict[str, int]:
    """Weight elements per dtype in the tree's safetensors files, from their headers (as the Hub shows)."""
    counts: dict[str, int] = {}
    for path, entry in tree.items():
        if path.endswith(".safetensors"):
            for dtype, count in _blob_parameters(store.blob_path(entry["sha256"]), entry["size"]):
                counts[dtype] = counts.get(dtype, 0) + count
    return counts


@functools.lru_cache(maxsize=1024)
def _blob_parameters(blob: Path, size: int) -> tuple[tuple[str, int], ...]:
    """(dtype, elements) per tensor of one safetensors blob; blobs never change, so read each once."""
    with blob.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        try:
            header = json.loads(handle.read(length)) if length + 8 <= size else {}
        except ValueError:
            header = {}  # not a safetensors file after all: nothing to count
    return tuple(
        (tensor["dtype"], math.prod(tensor["shape"]))
        for name, tensor in header.items()
        if name != "__metadata__"
    )


API = r"/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)"
WEB = r"/(?:(?P<kind>datasets)/)?(?P<repo>[^/]+/[^/]+?)"
ROUTES: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    (methods, re.compile(pattern), name)
    for methods, pattern, name in [
        (("GET",), r"/api/whoami-v2", "whoami"),
        (("POST",), r"/api/repos/create", "create_repo"),
        (("POST",), r"/api/validate-yaml", "validate_yaml"),
        (("GET",), r"/api/(?P<kind>models|datasets)", "list_repos"),
        (("GET",), API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        (("PUT",), API + r"/settings", "settings"),
        (("POST",), API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        (("POST",), API + r"/commit/(?P<rev>[^/]+)", "commit"),
        (("POST", "DELETE"), API + r"/(?P<ref_kind>tag|branch)/(?P<rev>[^/]+)", "ref"),
        (("GET",), API + r"/refs", "refs"),
        (("GET",), API + r"/commits/(?P<rev>[^/]+)", "commits"),
        (("GET",), API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        (("POST",), API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
        (("POST",), WEB + r"\.git/info/lfs/objects/batch", "lfs_batch"),
        (("POST",), WEB + r"\.git/info/lfs/objects/verify", "lfs_verify"),
        (("PUT",), WEB + r"\.git/info/lfs/objects/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        (("GET", "HEAD"), WEB + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        # Where the real Hub sends a `resolve` by a relative redirect; here only an injected fault sends one.
        (
            ("GET", "HEAD"),
            r"/api/resolve-cache/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)/(?P<rev>[^/]+)/(?P<path>.+)",
            "resolve_cache",
        ),
        (("POST", "DELETE"), r"/_quantforge/faults", "faults"),
        (("GET",), r"/_quantforge/requests", "requests"),
    ]
]


class Handler(http.server.BaseHTTPRequestHandler):
    """One connection; routes requests to `_r_<name>` methods by `ROUTES`."""

    protocol_version = "HTTP/1.1"
    server_version = "quantforge-hub"
    timeout = 120  # an idle keep-alive connection is closed after this, not held forever
    server: "HubHTTPServer"

    # plumbing

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # `_dispatch` logs each request itself: method, path without query, status

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes to stderr; only protocol errors (timeouts, bad request lines) get here,
        # and they carry no headers, so no Authorization value can leak.
        if self.server.verbose:
            log.info(format, *args)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.status = 0
        self.throttle_bps: int | None = None
        self.extra_headers: dict[str, str] = {}
        self.json_fields: dict[str, Any] = {}
        self.body_read = False
        self.request_path = path = url.path
        try:
            fault = None if path in CONTROL else self.app.control.take(self.command, path)
            if fault is not None:
                self.extra_headers = dict(fault.headers or {})
            if fault is not None and (fault.throttle_bps or fault.status is None):
                self.throttle_bps = fault.throttle_bps
                self.json_fields = dict(fault.json_fields or {})
                self._route(path)
            elif fault is not None:
                self._fail(fault)
            else:
                self._route(path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away: nobody to answer
        except HubError as error:
            self._error(error)
        except Exception as error:  # a bug: answer 500 and say so, the client must not hang
            log.exception("%s %s failed", self.command, path)
            self._error(HubError(500, f"internal error: {type(error).__name__}"))
        finally:
            if not self.body_read:  # an unread body would be parsed as the next request
                self.close_connection = True
            if self.status == 0:  # dropped: no answer recorded it
                self._record()
            if self.server.verbose:
                log.info("%s %s -> %s", self.command, path, self.status or "dropped")

    def _route(self, path: str) -> None:
        # Decoded before routing: `%2e%2e` is `..` to anything that later joins the value into a path.
        if any(unquote(segment) in (".", "..") for segment in path.split("/")):
            self._read_body()
            raise HubError(400, f"Invalid path: {path[:200]!r}", "InvalidPath")
        allowed = False
        for methods, pattern, name in ROUTES:
            if match := pattern.fullmatch(path):
                if self.command in methods:
                    params = {k: _param(k, v) for k, v in match.groupdict().items() if v is not None}
                    if name in ("faults", "requests"):
                        self._controller()
                    if name != "lfs_put":  # streamed to disk; everything else is small JSON
                        self.body = self._read_body()
                    getattr(self, f"_r_{name}")(**params)
                    return
                allowed = True
        self._read_body()  # so the connection stays usable: clients probe endpoints this server lacks
        raise HubError(405 if allowed else 404, f"{self.command} {path}: no such endpoint")

    def _record(self, status: int = 0) -> None:
        """Count the request as answered with `status` before the answer leaves: a client that reacts to
        its headers finds the request counted."""
        self.status = status
        if self.request_path not in CONTROL:
            self.app.control.record(self.command, self.request_path, status)

    def _fail(self, fault: Fault) -> None:
        self._read_body()  # so a keep-alive client is not left mid-upload
        if fault.drop_connection:
            self.close_connection = True  # `finish` then closes the socket: no status line at all
            return
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        self._json(fault.status, {"error": f"injected fault ({fault.status})"}, headers)

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body by Content-Length or chunked transfer encoding (httpx streams files so)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                yield self._throttled(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(CHUNK, remaining))
                if not chunk:
                    raise HubError(400, "request body ended early", "BadRequest")
                remaining -= len(chunk)
                yield self._throttled(chunk)
        self.body_read = True  # only once all of it is read: otherwise the connection is closed

    def _throttled(self, chunk: bytes) -> bytes:
        """`chunk`, after the time it takes at the injected rate (no rate: at once)."""
        if self.throttle_bps:
            time.sleep(len(chunk) / self.throttle_bps)
        return chunk

    def _read_body(self) -> bytes:
        return b"".join(self._body_chunks())

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as error:
            raise HubError(400, f"invalid JSON: {error}", "BadRequest") from None

    def _send(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**(headers or {}), **self.extra_headers}.items():
            self.send_header(name, value)
        if not self.body_read:  # the unread body ends this connection: say so, or the client reuses it
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":  # HEAD: the Content-Length of the GET, no body
            self.wfile.write(body)

    def _json(
        self,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        if isinstance(payload, dict) and self.json_fields:
            payload = {**payload, **self.json_fields}
        self._send(status, json.dumps(payload).encode(), content_type, headers)

    def _error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message.encode("ascii", "replace").decode().replace("\n", " ")}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._json(error.status, {"error": error.message, **error.body}, {**headers, **error.headers})

    # auth and lookups

    @property
    def app(self) -> "HubServer":
        return self.server.app

    def _user(self) -> str | None:
        """The user of a valid Bearer token, None without one; an unknown token is refused like the Hub."""
        header = self.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        user = self.app.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _controller(self) -> None:
        """Only the holder of the server's control token may inject faults or read the request log."""
        if not self.app.control.authorises(self.headers.get("Authorization", "")):
            self._read_body()
            raise HubError(401, "the control endpoints need this server's control token")

    def _writer(self) -> str:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to write: pass a token")
        return user

    def _repo(self, kind: str | None, repo: str) -> dict:
        """The repo's state if it exists and the caller may see it (private ones need a token)."""
        user = self._user()  # an invalid token is refused on every repo, public or not, like the Hub
        state = self.app.store.repo(KINDS[kind or "models"], repo)
        if state is None or (state["private"] and user is None):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return state

    def _base(self, state: dict) -> str:
        return f"{self.app.url}/{URL_PREFIX[state['type']]}{state['id']}"

    # endpoints: account, repos

    def _r_whoami(self) -> None:
        user = self._user()
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        access = {"displayName": "quantforge local hub", "role": "write"}
        self._json(200, {"name": user, "type": "user", "orgs": [], "auth": {"accessToken": access}})

    def _r_create_repo(self) -> None:
        user = self._writer()
        body = self._json_body()
        kind = body.get("type") or "model"
        if kind not in URL_PREFIX:
            raise HubError(400, f"repo type {kind!r} is not supported here", "BadRequest")
        repo_id = f"{body.get('organization') or user}/{body.get('name', '')}"
        if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
            raise HubError(400, f"invalid repo id {repo_id!r}", "BadRequest")
        private = body.get("visibility") == "private" or bool(body.get("private"))
        url = f"{self.app.url}/{URL_PREFIX[kind]}{repo_id}"
        try:
            self.app.store.create_repo(kind, repo_id, user, private, body.get("gated", False))
        except HubError as error:
            error.body["url"] = url  # `create_repo(exist_ok=True)` reads the url of a 409
            raise
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _r_validate_yaml(self) -> None:
        self._json(200, {"errors": [], "warnings": []})  # card metadata is not validated here

    def _r_settings(self, kind: str, repo: str) -> None:
        self._writer()
        body = self._json_body()
        state = self._repo(kind, repo)
        with self.app.store.lock(state["type"], repo):
            state = self.app.store.repo(state["type"], repo)
            if "gated" in body:
                state["gated"] = check_gated(body["gated"])
            if "visibility" in body or "private" in body:
                state["private"] = body.get("visibility") == "private" or bool(body.get("private"))
            self.app.store.save_repo(state)
        self._json(200, {})

    def _info(self, state: dict, oid: str, blobs: bool) -> dict:
        """ModelInfo / DatasetInfo JSON for one commit of a repo."""
        store = self.app.store
        commit = store.commit(state, oid)
        siblings = []
        for path, entry in sorted(commit["tree"].items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["git_oid"])
                if entry["lfs"]:
                    pointer = len(lfs_pointer(entry["sha256"], entry["size"]))
                    sibling["lfs"] = {
                        "size": entry["size"],
                        "sha256": entry["sha256"],
                        "pointerSize": pointer,
                    }
            siblings.append(sibling)
        card: dict[str, Any] = {}
        if "README.md" in commit["tree"]:
            card = _front_matter(
                store.blob_path(commit["tree"]["README.md"]["sha256"]).read_text("utf-8", "replace")
            )
        tags = (
            [t for t in card.get("tags", []) if isinstance(t, str)]
            if isinstance(card.get("tags"), list)
            else []
        )
        info = {
            "_id": hashlib.sha1(state["id"].encode()).hexdigest()[:24],
            "id": state["id"],
            "author": state["id"].split("/")[0],
            "sha": oid,
            "lastModified": commit["date"],
            "createdAt": state["createdAt"],
            "private": state["private"],
            "gated": state["gated"],
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "siblings": siblings,
        }
        if state["type"] == "model":
            info["modelId"] = state["id"]
            if parameters := _parameters(store, commit["tree"]):
                info["safetensors"] = {"parameters": parameters, "total": sum(parameters.values())}
            for key in ("pipeline_tag", "library_name"):
                if isinstance(card.get(key), str):
                    info[key] = card[key]
        if card:
            info["cardData"] = card
        return info

    def _r_repo_info(self, kind: str, repo: str, rev: str = "main") -> None:
        state = self._repo(kind, repo)
        oid = self.app.store.resolve(state, rev)
        self._json(200, self._info(state, oid, blobs=self.query.get("blobs", "").lower() in ("1", "true")))

    def _r_list_repos(self, kind: str) -> None:
        store, query, user = self.app.store, self.query, self._user()
        infos = [
            self._info(state, state["branches"]["main"], blobs=False)
            for state in store.repos(KINDS[kind])
            if (user is not None or not state["private"]) and "main" in state["branches"]
        ]
        if author := query.get("author"):
            infos = [i for i in infos if i["author"] == author]
        if search := query.get("search"):
            infos = [i for i in infos if search.lower() in i["id"].lower()]
        if wanted := parse_qs(urlsplit(self.path).query).get("filter"):
            infos = [i for i in infos if set(wanted) <= set(i["tags"])]
        sort = query.get("sort")
        if sort in ("lastModified", "createdAt", "id"):
            infos.sort(key=lambda i: i[sort], reverse=query.get("direction", "-1") == "-1")
        if limit := query.get("limit"):
            infos = infos[: int(limit)]
        self._json(200, infos)  # one page: no `Link: rel="next"` header, so the client stops here

    # endpoints: writing

    def _branch_head(self, state: dict, rev: str) -> str:
        if rev not in state["branches"]:
            raise HubError(404, f"Invalid rev id: {rev} (only branches can be written)", "RevisionNotFound")
        return state["branches"][rev]

    def _r_preupload(self, kind: str, repo: str, rev: str) -> None:
        self._writer()
        state = self._repo(kind, repo)
        tree = self.app.store.commit(state, self._branch_head(state, rev))["tree"]
        files = []
        for item in self._json_body().get("files", []):
            path, size = check_path(str(item.get("path", ""))), int(item.get("size", 0))
            lfs = is_lfs(path, size)
            current = tree.get(path)
            # The client skips a file whose oid equals its own (sha256 for LFS, git sha1 otherwise).
            oid = (
                (current["sha256"] if lfs else current["git_oid"])
                if current and current["lfs"] == lfs
                else None
            )
            files.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._json(200, {"files": files})

    def _r_commit(self, kind: str, repo: str, rev: str) -> None:
        user = self._writer()
        state = self._repo(kind, repo)
        if self.query.get("create_pr"):
            raise HubError(400, "pull requests are not supported by this server", "BadRequest")
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except ValueError as error:
            raise HubError(400, f"invalid NDJSON: {error}", "BadRequest") from None
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if header is None:
            raise HubError(400, "the commit has no header line", "BadRequest")
        store = self.app.store
        with store.lock(state["type"], repo):
            state = store.repo(state["type"], repo)  # the branch as it is now, under the lock
            head = self._branch_head(state, rev)
            parent = header.get("parentCommit")
            if parent and parent != head:
                raise HubError(
                    412, f"parentCommit {parent} is not the head of {rev} ({head})", "PreconditionFailed"
                )
            operations = [line for line in lines if line.get("key") != "header"]
            tree = apply_operations(store, store.commit(state, head)["tree"], operations)
            summary, description = str(header.get("summary") or ""), str(header.get("description") or "")
            oid = store.write_commit(state, head, tree, summary, description, user)
            state["branches"][rev] = oid
            store.save_repo(state)
        commit_url = f"{self._base(state)}/commit/{oid}"
        self._json(200, {"commitUrl": commit_url, "commitOid": oid, "success": True, "pullRequestUrl": None})

    def _r_ref(self, kind: str, repo: str, ref_kind: str, rev: str) -> None:
        """Create (POST) or delete (DELETE) a tag or a branch."""
        self._writer()
        state = self._repo(kind, repo)
        store, body = self.app.store, self._json_body()
        refs = "tags" if ref_kind == "tag" else "branches"
        with store.lock(state["type"], repo):
            state = store.repo(state["type"], repo)
            if self.command == "DELETE":
                if rev not in state[refs] or (refs == "branches" and rev == "main"):
                    raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                del state[refs][rev]
            else:
                name = body.get("tag") if ref_kind == "tag" else rev
                if not isinstance(name, str) or not REF_NAME.fullmatch(name) or ".." in name:
                    raise HubError(400, f"invalid {ref_kind} name {name!r}", "BadRequest")
                if name in state[refs]:
                    raise HubError(409, f"{ref_kind} {name} already exists", "RefExists")
                start = store.resolve(
                    state, rev if ref_kind == "tag" else body.get("startingPoint") or "main"
                )
                state[refs][name] = (
                    {"commit": start, "message": body.get("message", "")} if refs == "tags" else start
                )
            store.save_repo(state)
        self._json(200, {})

    # endpoints: reading

    def _r_refs(self, kind: str, repo: str) -> None:
        state = self._repo(kind, repo)
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid}
            for n, oid in sorted(state["branches"].items())
        ]
        tags = [
            {"name": n, "ref": f"refs/tags/{n}", "targetCommit": t["commit"]}
            for n, t in sorted(state["tags"].items())
        ]
        self._json(200, {"branches": branches, "tags": tags, "converts": [], "pullRequests": []})

    def _r_commits(self, kind: str, repo: str, rev: str) -> None:
        state = self._repo(kind, repo)
        oid: str | None = self.app.store.resolve(state, rev)
        history = []
        while oid:
            commit = self.app.store.commit(state, oid)
            history.append(
                {
                    "id": oid,
                    "title": commit["summary"],
                    "message": commit["description"],
                    "authors": [{"user": commit["author"]}],
                    "date": commit["date"],
                }
            )
            oid = commit["parent"]
        self._json(200, history)

    def _tree_items(self, tree: dict, folder: str, recursive: bool) -> list[dict]:
        """Tree listing entries (files and folders) under `folder`, as the Hub's tree API returns them."""
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        items: dict[str, dict] = {}
        for path, entry in tree.items():
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            if not recursive and len(parts) > 1:  # only the folder directly under `folder`
                items.setdefault(prefix + parts[0], self._folder_item(tree, prefix + parts[0]))
                continue
            for depth in range(1, len(parts)):  # recursive: every folder on the way too
                name = prefix + "/".join(parts[:depth])
                items.setdefault(name, self._folder_item(tree, name))
            items[path] = self._file_item(path, entry)
        return [items[name] for name in sorted(items)]

    @staticmethod
    def _file_item(path: str, entry: dict) -> dict:
        item = {"type": "file", "oid": entry["git_oid"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            pointer = len(lfs_pointer(entry["sha256"], entry["size"]))
            item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer}
        return item

    @staticmethod
    def _folder_item(tree: dict, folder: str) -> dict:
        inside = sorted((p, e["git_oid"]) for p, e in tree.items() if p.startswith(folder + "/"))
        return {
            "type": "directory",
            "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(),
            "size": 0,
            "path": folder,
        }

    def _r_tree(self, kind: str, repo: str, rev: str, path: str = "") -> None:
        state = self._repo(kind, repo)
        tree = self.app.store.commit(state, self.app.store.resolve(state, rev))["tree"]
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        items = self._tree_items(tree, path, recursive)
        if path.strip("/") and not items:
            raise HubError(404, f"{path} does not exist on {rev!r}", "EntryNotFound")
        self._json(200, items)  # one page: no `Link` header

    def _r_paths_info(self, kind: str, repo: str, rev: str) -> None:
        state = self._repo(kind, repo)
        tree = self.app.store.commit(state, self.app.store.resolve(state, rev))["tree"]
        if "json" in self.headers.get("Content-Type", ""):
            paths = self._json_body().get("paths", [])
        else:  # the client posts a form: paths=a&paths=b&expand=False
            paths = parse_qs(self.body.decode()).get("paths", [])
        items = []
        for path in paths:
            if path in tree:
                items.append(self._file_item(path, tree[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in tree):
                items.append(self._folder_item(tree, path.rstrip("/")))
        self._json(200, items)

    def _r_resolve(self, repo: str, rev: str, path: str, kind: str | None = None) -> None:
        state = self._repo(kind, repo)
        if state["gated"] and self._user() is None:
            message = (
                f"Access to {state['type']} {repo} is restricted. You must be authenticated to access it."
            )
            raise HubError(401, message, "GatedRepo")
        oid = self.app.store.resolve(state, rev)
        entry = self.app.store.commit(state, oid)["tree"].get(path)
        if entry is None:  # the client caches the absence per commit, hence X-Repo-Commit
            raise HubError(404, f"{path} does not exist on {rev!r}", "EntryNotFound", {"X-Repo-Commit": oid})
        headers = {"X-Repo-Commit": oid, "Accept-Ranges": "bytes", "ETag": f'"{entry["git_oid"]}"'}
        if entry["lfs"]:  # the Hub names an LFS file by its sha256, and gives its real size
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
        self._send_file(self.app.store.blob_path(entry["sha256"]), entry["size"], headers)

    def _r_resolve_cache(self, kind: str, repo: str, rev: str, path: str) -> None:
        self._r_resolve(repo, rev, path, None if kind == "models" else kind)

    def _send_file(self, blob: Path, size: int, headers: dict[str, str]) -> None:
        """The blob, or the part a `Range: bytes=N-[M]` header asks for (206), streamed."""
        start, end, status = 0, size - 1, 200
        if requested := self.headers.get("Range"):
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", requested.strip())
            if not match or int(match.group(1)) >= max(size, 1):
                raise HubError(
                    416, f"range {requested} not satisfiable", None, {"Content-Range": f"bytes */{size}"}
                )
            start, end, status = int(match.group(1)), min(int(match.group(2) or end), end), 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        for name, value in {**headers, **self.extra_headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with blob.open("rb") as source:
            source.seek(start)
            remaining = end - start + 1
            while remaining > 0 and (chunk := source.read(min(CHUNK, remaining))):
                self.wfile.write(self._throttled(chunk))
                remaining -= len(chunk)
        if remaining:  # a size that lies (`plant_file`): hang up short of it, as a broken Hub would
            self.close_connection = True

    # endpoints: Git LFS

    def _signature(self, state: dict, oid: str, size: int) -> str:
        message = f"{state['type']}:{state['id']}:{oid}:{size}".encode()
        return hmac.new(self.app.secret, message, hashlib.sha256).hexdigest()

    def _r_lfs_batch(self, repo: str, kind: str | None = None) -> None:
        self._writer()
        state = self._repo(kind, repo)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "only the LFS upload operation is supported", "BadRequest")
        answers = []
        for item in body.get("objects", []):
            oid, size = str(item.get("oid", "")), item.get("size")
            answer: dict[str, Any] = {"oid": oid, "size": size if isinstance(size, int) else -1}
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) or size < 0:
                answer["error"] = {"code": 422, "message": "invalid oid or size"}
            elif not self.app.store.has_blob(oid, size):  # present objects get no actions: nothing to upload
                # The client PUTs without its token (as to S3), so the URL carries a signature instead.
                objects = f"{self._base(state)}.git/info/lfs/objects"
                signature = self._signature(state, oid, size)
                answer["authenticated"] = True
                answer["actions"] = {
                    "upload": {"href": f"{objects}/{oid}?size={size}&sig={signature}", "expires_in": 3600},
                    "verify": {"href": f"{objects}/verify", "header": {}},
                }
            answers.append(answer)
        self._json(
            200, {"transfer": "basic", "objects": answers}, content_type="application/vnd.git-lfs+json"
        )

    def _r_lfs_put(self, repo: str, oid: str, kind: str | None = None) -> None:
        # No token comes with the PUT (the client uploads as to S3): the signature is the authorisation,
        # so a private repo is looked up without `_repo`'s visibility check.
        state = self.app.store.repo(KINDS[kind or "models"], repo)
        size = int(self.query.get("size", "-1"))
        if state is None or not hmac.compare_digest(
            self.query.get("sig", ""), self._signature(state, oid, size)
        ):
            raise HubError(403, "invalid or missing upload signature")
        if self.app.store.has_blob(oid, size):
            self._read_body()
        else:
            received, _ = self.app.store.put_stream(self._body_chunks(), size)
            if received != oid:
                self.app.store.blob_path(received).unlink(missing_ok=True)  # not what was announced
                raise HubError(400, f"content sha256 {received} does not match {oid}", "Sha256Mismatch")
        self._send(200, b"", "application/octet-stream")

    def _r_lfs_verify(self, repo: str, kind: str | None = None) -> None:
        self._writer()
        self._repo(kind, repo)
        body = self._json_body()
        if not self.app.store.has_blob(str(body.get("oid", "")), body.get("size")):
            raise HubError(404, f"LFS object {body.get('oid')} not found")
        self._json(200, {})

    # endpoints: test control

    def _r_faults(self) -> None:
        if self.command == "DELETE":
            self.app.control.clear()
        else:
            try:
                self.app.inject_fault(**self._json_body())
            except (TypeError, re.error) as error:
                raise HubError(400, f"invalid fault: {error}", "BadRequest") from None
        self._json(200, {})

    def _r_requests(self) -> None:
        status = self.query.get("status")
        found = self.app.control.matching(
            self.query.get("method"), self.query.get("pattern", ""), int(status) if status else None
        )
        self._json(200, {"count": len(found), "requests": [list(entry) for entry in found]})


def _param(name: str, raw: str) -> str:
    """A route parameter, decoded; `..` is refused everywhere and an encoded slash in a repo id (the
    client encodes them in revisions such as `refs%2Fpr%2F1` and in tree paths, never in repo ids)."""
    value = unquote(raw)
    if (name == "repo" and re.search(r"%2f|%5c", raw, re.IGNORECASE)) or ".." in re.split(r"[/\\]", value):
        raise HubError(400, f"Invalid {name}: {raw[:200]!r}", "InvalidPath")
    return value
