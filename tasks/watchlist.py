"""watchlist: which Hub models and authors to keep quantized, and how (YAML, validated on load)."""

import fnmatch
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantforge.core.errors import QuantforgeError, truncated
from quantforge.core.yaml_input import MAX_ECHO, MAX_MESSAGE, read_yaml
from quantforge.tasks.request import QuantizeRequest

# What a watch entry may set of the request; `model` and `revision` come from the Hub.
REQUEST_SETTINGS = set(QuantizeRequest.model_fields) - {"model", "revision"}
# owner/name, each part at most 96 characters (the Hub's limit); no part starts with a dot and none holds
# "..", so an id never walks out of a cache folder
REPO_ID = r"^(?=[^/]{1,96}/[^/]{1,96}\Z)\w[\w-]*(?:\.[\w-]+)*/\w[\w-]*(?:\.[\w-]+)*\Z"  # Python `re`


class RefusedRelease(QuantforgeError):
    """A release event asks for something the watchlist does not allow; no work may start."""


class WatchEntry(BaseModel):
    """One model id, or one author whose new repos are picked up (filtered)."""

    model_config = ConfigDict(extra="forbid", regex_engine="python-re")  # REPO_ID looks ahead

    model: str | None = Field(default=None, pattern=REPO_ID)
    author: str | None = Field(default=None, pattern=r"^[\w.-]+\Z")
    name_pattern: str = "*"  # shell-style, on the repo name without the author
    max_parameters: float | None = Field(default=None, gt=0)  # from the Hub's safetensors metadata
    pipeline_tag: str | None = "text-generation"
    limit: int = Field(default=20, ge=1, le=1000)  # most recently modified repos of the author
    settings: dict[str, Any] = Field(default_factory=dict)  # QuantizeRequest fields for this entry
    # Recipe sets a release event may ask for instead of the entry's own `recipes` (names or paths):
    # an event chooses among what the operator allowed, never an arbitrary set or YAML path.
    allowed_recipes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> "WatchEntry":
        if (self.model is None) == (self.author is None):
            raise ValueError("give exactly one of `model` or `author`")
        return self

    def names(self, repo_id: str) -> bool:
        """True when `repo_id` is this entry's model, or a repo of its author that matches `name_pattern`."""
        if self.model:
            return repo_id == self.model
        author, _, name = repo_id.partition("/")
        return author == self.author and fnmatch.fnmatch(name, self.name_pattern)

    def accepts(self, repo_id: str, pipeline_tag: str | None, parameters: int | None) -> bool:
        """True when an author's repo passes this entry's filters."""
        if not fnmatch.fnmatch(repo_id.split("/", 1)[1], self.name_pattern):
            return False
        if self.pipeline_tag and pipeline_tag != self.pipeline_tag:
            return False
        return self.max_parameters is None or parameters is None or parameters <= self.max_parameters


class Watchlist(BaseModel):
    """Entries plus the request settings they share."""

    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    watch: list[WatchEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_settings(self) -> "Watchlist":
        for index, entry in enumerate(self.watch):
            unknown = sorted((set(self.defaults) | set(entry.settings)) - REQUEST_SETTINGS)
            if unknown:
                raise ValueError(f"watch[{index}]: unknown request setting {', '.join(unknown)}")
            # every entry must make a valid request, with its own recipe set and each allowed one
            for recipes in (None, *entry.allowed_recipes):
                self.request_for(entry, "org/model", "0" * 40, recipes)
        return self

    def request_for(
        self, entry: WatchEntry, repo_id: str, sha: str, recipes: str | None = None
    ) -> QuantizeRequest:
        """The quantize request for one release of one entry (`recipes`: one of its `allowed_recipes`)."""
        settings = {**self.defaults, **entry.settings}
        if recipes is not None:
            allowed = {settings.get("recipes", QuantizeRequest.model_fields["recipes"].default)}
            if recipes not in allowed | set(entry.allowed_recipes):
                raise RefusedRelease(
                    f"`recipes`: {truncated(repr(recipes), MAX_ECHO)} is not allowed for {repo_id} "
                    f"(allowed: {', '.join(sorted(allowed | set(entry.allowed_recipes)))})"
                )
            settings["recipes"] = recipes
        return QuantizeRequest(model=repo_id, revision=sha, **settings)

    def candidates(self, repo_id: str) -> list[WatchEntry]:
        """The entries that name `repo_id`, an entry for the model itself before its author's, else in file
        order; an author entry's metadata filters are still to be checked."""
        return sorted((e for e in self.watch if e.names(repo_id)), key=lambda e: e.model is None)


def load_watchlist(path: Path) -> Watchlist:
    """Read and validate a watchlist YAML file; errors name the file and the field."""
    raw = read_yaml(path, "watchlist")
    try:
        return Watchlist.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "watchlist"
        message = first["msg"].removeprefix("Value error, ")
        raise QuantforgeError(truncated(f"`watchlist` {path}: `{where}`: {message}", MAX_MESSAGE)) from None
