"""The package sources pip is configured with, as uv options: `make install` installs the lock with uv.

uv reads no pip configuration, and this machine's packages (torch `+cpu` among them) come from what
pip's configuration names: `find-links`, `index-url`, `extra-index-url` and `constraint` files, in its
configuration files or PIP_* variables. So the Makefile asks pip (`pip config list`) and passes uv the
same sources, every index considered for every package as pip does (`--index-strategy
unsafe-best-match`; the lock pins each version exactly). Installing requirements.lock into a fresh
environment took 157 s with pip (its cache warm) and 8 s with uv (its cache empty): docs/decisions.md,
"uv installs the lock"."""

import subprocess
import sys

UV_OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",  # pip's constraint files hold for uv too (this machine caps torch)
}


# Where pip takes an install option from, weakest first: its configuration files' [global] section,
# their [install] section, then a PIP_* variable (`:env:` in `pip config list`).
SCOPES = ("global", "install", ":env:")


def uv_options(listing: str) -> list[str]:
    """uv's options for the sources in `pip config list`'s output, each option from its strongest scope
    (SCOPES); a value may hold several, separated by whitespace, each passed on its own."""
    found: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        name, _, quoted = line.partition("=")
        scope, _, key = name.rpartition(".")
        if key in UV_OPTIONS and scope in SCOPES:
            found.setdefault(key, {})[scope] = quoted.strip().strip("'\"")
    options = ["--index-strategy", "unsafe-best-match"]
    for key, flag in UV_OPTIONS.items():
        by_scope = found.get(key, {})
        strongest = next((by_scope[scope] for scope in reversed(SCOPES) if scope in by_scope), "")
        for value in strongest.split():
            options += [flag, value]
    return options


if __name__ == "__main__":
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    print(" ".join(uv_options(listing)))
