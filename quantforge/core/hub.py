"""The Hub endpoint, read when used (`HF_ENDPOINT` is otherwise frozen when huggingface_hub is imported),
and the check every answer of the Hub's host passes before huggingface_hub turns its headers into paths."""

import os
import re
import threading
from urllib.parse import urlparse

import httpx
from huggingface_hub import HfApi, constants, set_client_factory
from huggingface_hub.utils._http import default_client_factory  # not re-exported; version pinned

from quantforge.core.errors import QuantforgeError

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# A regular file's ETag is its git blob sha1; an LFS or Xet file's X-Linked-Etag is its sha256.
BLOB_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class HostileAnswer(QuantforgeError):
    """A Hub answer carrying a commit or ETag that is not a hash: refused, never retried."""


def hub_endpoint() -> str:
    """`HF_ENDPOINT` as set now, else huggingface_hub's default; guards this process's Hub downloads."""
    _guard_downloads()  # every quantforge Hub client (fetch, publish, pull) asks for the endpoint first
    return _endpoint()


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_api() -> HfApi:
    """A client for `hub_endpoint()`; the token comes from `HF_TOKEN` at request time."""
    return HfApi(endpoint=hub_endpoint())


def check_download_answer(response: httpx.Response) -> None:
    """httpx response hook: refuse a Hub answer whose commit or ETag is not a hex hash.

    huggingface_hub joins them into cache paths (`blobs/<etag>`, `snapshots/<commit>/`,
    `.no_exist/<commit>/`, a local dir's `<etag>.incomplete`), so `../` in either writes outside the cache.
    Checked in the very answer the library then reads: a pre-flight request could be answered honestly
    and the download's own request not.

    Which answers, by host and not by path: `get_hf_file_metadata` follows any relative redirect of its
    HEAD (`_httpx_follow_relative_redirects_with_backoff`; the real Hub sends `resolve` to
    `/api/resolve-cache/...` so) and reads commit and ETag from the last answer, whatever its path.
    - `X-Repo-Commit` is checked on every answer of the Hub endpoint's host and port, errors included
      (a 404's becomes `.no_exist/<commit>/`).
    - The ETag (`X-Linked-Etag` first, as the library reads it) only where the library can take it: a
      successful answer that carries `X-Repo-Commit` (without one the library gives up before reading
      the ETag), is not a relative redirect (followed, never read), and answers a HEAD (the method of
      `get_hf_file_metadata`) or a `resolve` request. API answers carry ETags that are no hash (the
      real Hub's `/api/models/...` sends a weak `W/"3a4e-..."` and no `X-Repo-Commit`): never refused.
    Answers of other hosts (the CDN a download is redirected to) are not checked: the library reads
    only their body, length and `Content-Disposition` (a progress-bar label), never a path.
    """
    url = response.request.url
    hub = httpx.URL(_endpoint())
    if (url.host, url.port) != (hub.host, hub.port):
        return
    commit = response.headers.get(constants.HUGGINGFACE_HEADER_X_REPO_COMMIT)
    if commit is not None and not COMMIT_SHA.fullmatch(commit):
        _refuse(response, constants.HUGGINGFACE_HEADER_X_REPO_COMMIT, commit, "a 40-hex commit sha")
    if commit is None or response.status_code >= 400 or _relative_redirect(response):
        return
    if response.request.method != "HEAD" and "/resolve/" not in url.path:
        return
    # Which header, and how it is unquoted, as `get_hf_file_metadata` does.
    linked = constants.HUGGINGFACE_HEADER_X_LINKED_ETAG
    name = linked if response.headers.get(linked) else "ETag"
    etag = response.headers.get(name)
    if etag is not None and not BLOB_ETAG.fullmatch(etag.removeprefix("W/").strip('"')):
        _refuse(response, name, etag, "a hex sha1 or sha256")


def _relative_redirect(response: httpx.Response) -> bool:
    """Whether huggingface_hub follows this answer rather than reading it (its own test, `urlparse`)."""
    location = response.headers.get("Location")
    return 300 <= response.status_code <= 399 and location is not None and urlparse(location).netloc == ""


def _refuse(response: httpx.Response, header: str, value: str, expected: str) -> None:
    url = response.request.url.copy_with(query=None)
    raise HostileAnswer(
        f"the Hub answered {response.request.method} {url} with `{header}` {value[:120]!r}, "
        f"not {expected} (a hostile or broken endpoint; refused)"
    )


def _guarded_client() -> httpx.Client:
    # A factory, not a hook added to today's client: huggingface_hub makes a new one after a fork.
    client = default_client_factory()
    hooks = client.event_hooks
    client.event_hooks = {**hooks, "response": [*hooks["response"], check_download_answer]}
    return client


_guard_lock = threading.Lock()
_guarded = False


def _guard_downloads() -> None:
    """Give huggingface_hub's shared HTTP client the answer check, once per process."""
    global _guarded
    with _guard_lock:
        if not _guarded:
            set_client_factory(_guarded_client)  # replaces (closes) the shared client: do it once
            _guarded = True
