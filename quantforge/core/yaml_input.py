"""YAML files a user or an operator hands quantforge (recipe sets, watchlists), read within bounds.

An alias is a reference: a few lines of anchors stand for billions of nodes ("billion laughs"), cheap
to load as shared objects but expanded wherever they are walked: merge keys (`<<: *a`) copy them at
load time, and an error message echoing the value printed 50 MB. These files have no need for them.
Deep nesting would exhaust Python's recursion in the composer instead, and a capped read bounds the rest.
"""

from pathlib import Path
from typing import Any

import yaml

from quantforge.core.errors import QuantforgeError, truncated

# The shipped recipe sets are under 2 KB and four levels deep, the example watchlist likewise. Past these
# bounds a file is refused in one line before it is parsed further or echoed in a message.
MAX_FILE_BYTES = 64 * 1024
MAX_DEPTH = 16
MAX_MESSAGE = 300  # characters of one error line
MAX_ECHO = 80  # characters of a value echoed in it


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.safe_load` without aliases and with bounded nesting."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not accepted", event.start_mark
            )
        if self.depth == MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_yaml(path: Path, field: str) -> Any:
    """The YAML document at `path`, within the bounds above; anything else one line naming `field`."""
    try:
        with path.open("rb") as handle:
            content = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise QuantforgeError(f"`{field}`: cannot read {path.name}: {error.strerror}") from None
    if len(content) > MAX_FILE_BYTES:
        raise QuantforgeError(f"`{field}`: {path.name} is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        return yaml.load(content, Loader=_BoundedLoader)  # a SafeLoader: builds no Python objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise QuantforgeError(
            truncated(f"`{field}`: {path.name} is not valid YAML: {problem}{where}", MAX_MESSAGE)
        ) from None
