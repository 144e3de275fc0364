"""A Hugging Face Hub-compatible HTTP server on 127.0.0.1 for tests and the demo.

The real `huggingface_hub` client talks to it when `HF_ENDPOINT` (or `HfApi(endpoint=...)`) points at it
and `HF_HUB_DISABLE_XET=1` is set: repos, commits (NDJSON), plain Git LFS uploads, tags and branches,
repo info, trees, refs, commit history and `resolve` downloads with the Hub's error headers, for model
and dataset repos (what `datasets.load_dataset` asks of a dataset repo is the same routes under
`/api/datasets/` and `/datasets/`). Storage is a folder (content-addressed blobs, immutable commit
files, one refs file per repo), so a restarted server serves the same commits. Faults (error statuses,
dropped connections, slow or lying answers) can be injected and every request is counted, so tests can
prove how a client behaves when the Hub misbehaves; the HTTP control endpoints take the server's own
control token, never a Hub user's.

The standard library's `ThreadingHTTPServer` with HTTP/1.1 keep-alive, and PyYAML for card headers. One
job per module: `storage` (blobs, commits, refs), `protocol` (the HTTP handler and its routes), `faults`
(fault injection, the request log, the control token), `server` (`HubServer`); `python -m
quantforge_testing.hub` runs it as a process.
"""

from quantforge_testing.hub.server import HubServer

__all__ = ["HubServer"]
