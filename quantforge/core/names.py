"""Names derived from a source model's id, the same everywhere (registry, Hub repos, output folders)."""


def short_name(source_repo: str) -> str:
    """`SmolLM2-135M-Instruct` for `HuggingFaceTB/SmolLM2-135M-Instruct` and `local:SmolLM2-135M-Instruct`."""
    return source_repo.split(":", 1)[-1].rsplit("/", 1)[-1]
