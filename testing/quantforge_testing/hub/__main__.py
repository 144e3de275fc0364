"""`python -m quantforge_testing.hub`: the local Hub as a process, serving until SIGTERM or SIGINT."""

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from quantforge_testing.hub.server import HubServer


def _parse_pairs(values: list[str], separator: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        left, sep, right = value.partition(separator)
        if not sep or not left or not right:
            raise SystemExit(f"--{what} expects A{separator}B, got {value!r}")
        pairs.append((left, right))
    return pairs


def main(argv: list[str] | None = None) -> None:
    """`python -m quantforge_testing.hub`: serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m quantforge_testing.hub",
        description="A Hugging Face Hub-compatible server on 127.0.0.1 (clients set HF_HUB_DISABLE_XET=1)."
        " Prints HF_ENDPOINT=http://127.0.0.1:PORT once listening, then the line"
        " QUANTFORGE_HUB_CONTROL_TOKEN=... (the Bearer token of /_quantforge/faults and /requests);"
        " stops on SIGTERM or SIGINT.",
    )
    parser.add_argument("--root", type=Path, required=True, help="Folder holding repos, commits and blobs.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port).")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN:USER",
        help="Accept this token as USER (repeatable).",
    )
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="REPO_ID=FOLDER",
        help="Commit FOLDER to model REPO_ID first.",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="Log every request (method, path, status) to stderr."
    )
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    hub = HubServer(
        args.root, dict(_parse_pairs(args.token, ":", "token")), port=args.port, verbose=args.verbose
    )
    with hub:
        for repo_id, folder in _parse_pairs(args.seed, "=", "seed"):
            hub.seed_repo(repo_id, folder)
        print(f"HF_ENDPOINT={hub.url}", flush=True)
        print(f"QUANTFORGE_HUB_CONTROL_TOKEN={hub.control_token}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
