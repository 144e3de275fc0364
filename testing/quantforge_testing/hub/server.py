"""The local Hub server: `HubServer` serves a storage folder on 127.0.0.1 in a thread, seeds repos from
local folders, plants files the real Hub would refuse, and injects faults."""

import contextlib
import http.server
import secrets
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantforge_testing.hub.faults import Control, Fault
from quantforge_testing.hub.protocol import URL_PREFIX, Handler
from quantforge_testing.hub.storage import REPO_ID, HubError, Store, check_gated, check_path

HOST = "127.0.0.1"


class HubHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a client holding a keep-alive connection never blocks shutdown
    app: "HubServer"
    verbose: bool
    connections: set[socket.socket]  # open ones, shut down on stop (idle keep-alive clients included)
    connections_lock: threading.Lock


class HubServer:
    """The local Hub: `with HubServer(root, tokens={token: user}) as hub:` serves on `hub.url` in a thread."""

    def __init__(
        self,
        root: Path | str,
        tokens: Mapping[str, str] | None = None,
        *,
        host: str = HOST,
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        if host != HOST:
            raise ValueError(
                f"the local Hub binds to {HOST} only (it has test tokens and no TLS), not {host!r}"
            )
        self.root = Path(root)
        self.tokens = dict(tokens or {})
        self.store = Store(self.root)
        self.control = Control()
        self.secret = secrets.token_bytes(32)  # signs LFS upload URLs of this process
        self._port, self._verbose = port, verbose
        self._httpd: HubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def control_token(self) -> str:
        """The Bearer token of the control endpoints (`/_quantforge/faults`, `/_quantforge/requests`)."""
        return self.control.token

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` once started."""
        if self._httpd is None:
            raise RuntimeError("the local Hub is not started")
        return f"http://{HOST}:{self._httpd.server_address[1]}"

    def start(self) -> "HubServer":
        """Listen and serve in a daemon thread."""
        httpd = HubHTTPServer((HOST, self._port), Handler)
        httpd.app, httpd.verbose = self, self._verbose
        httpd.connections, httpd.connections_lock = set(), threading.Lock()
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="quantforge-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close open keep-alive connections."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        with self._httpd.connections_lock:
            connections = list(self._httpd.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def seed_repo(
        self,
        repo_id: str,
        folder: Path | str,
        *,
        repo_type: str = "model",
        gated: bool | str = False,
        private: bool = False,
        message: str = "Upload folder",
        author: str = "quantforge-seed",
    ) -> str:
        """Commit a local folder as the whole tree of `main` (creating the repo); return the commit oid.

        `gated` and `private` are applied to an existing repo too: the repo ends up as described here.
        """
        if repo_type not in URL_PREFIX or not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
            raise ValueError(f"invalid repo {repo_type}:{repo_id}")
        if gated not in (True, False, "auto", "manual"):
            raise ValueError(f"gated must be a bool, 'auto' or 'manual', not {gated!r}")
        store, folder = self.store, Path(folder)
        if store.repo(repo_type, repo_id) is None:
            with contextlib.suppress(HubError):  # created concurrently: fine
                store.create_repo(repo_type, repo_id, author, private, gated)
        tree = {}
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            if path.is_file() and not _ignored(name):
                tree[check_path(name)] = store.put_file(path, name)
        with store.lock(repo_type, repo_id):
            state = store.repo(repo_type, repo_id)
            head = state["branches"]["main"]
            if ".gitattributes" not in tree and (
                kept := store.commit(state, head)["tree"].get(".gitattributes")
            ):
                tree[".gitattributes"] = kept
            state.update(private=private, gated=check_gated(gated))
            if tree != store.commit(state, head)["tree"]:  # the same tree again: no new commit
                state["branches"]["main"] = store.write_commit(state, head, tree, message, "", author)
            store.save_repo(state)
        return state["branches"]["main"]

    def plant_file(self, repo_id: str, path: str, data: bytes, *, claimed_size: int | None = None) -> str:
        """Commit one file the real Hub would refuse on top of `main`: a path out of the repo, or a size
        it lies about (announced everywhere, while `resolve` sends `data` and hangs up). For
        hostile-input tests; returns the commit oid."""
        store = self.store
        entry = store.put_bytes(data, path)
        if claimed_size is not None:
            entry = {**entry, "size": claimed_size}
        with store.lock("model", repo_id):
            state = store.repo("model", repo_id)
            head = state["branches"]["main"]
            tree = {**store.commit(state, head)["tree"], path: entry}
            state["branches"]["main"] = store.write_commit(state, head, tree, f"add {path}", "", "mallory")
            store.save_repo(state)
        return state["branches"]["main"]

    def inject_fault(
        self,
        method: str | None = "POST",
        path_pattern: str = ".",
        status: int | None = 500,
        times: int = 1,
        retry_after: int | None = None,
        drop_connection: bool = False,
        throttle_bps: int | None = None,
        headers: dict[str, str] | None = None,
        json_fields: dict[str, Any] | None = None,
    ) -> None:
        """The next `times` requests matching method and path regex get `status`, a dropped connection,
        or (with `throttle_bps` or `status=None`) their normal answer, its body moving at `throttle_bps`
        bytes/s and its top-level `json_fields` replaced. `headers` are set on whichever answer is sent:
        how a compromised Hub lies."""
        self.control.add(
            Fault(
                method,
                path_pattern,
                status,
                times,
                retry_after,
                drop_connection,
                throttle_bps,
                headers,
                json_fields,
            )
        )

    def clear_faults(self) -> None:
        """Remove every pending fault."""
        self.control.clear()

    def requests(self, method: str | None = None, pattern: str = "", status: int | None = None) -> int:
        """How many requests with this method (None: any) and path regex were answered (status 0: dropped)."""
        return len(self.control.matching(method, pattern, status))


def _ignored(path: str) -> bool:
    """Local-only files `upload_folder` skips too: git metadata and the client's local-dir cache."""
    return path.startswith((".git/", ".cache/huggingface/"))
