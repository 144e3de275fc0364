"""fetch: a Hub id (pinned to a commit sha) or a local directory becomes a SourceModel on disk."""

import json
import math
from pathlib import Path

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import filter_repo_objects, validate_repo_id
from prefect import task
from pydantic import BaseModel

from quantforge.core.atomic import require_free_space
from quantforge.core.errors import QuantforgeError, TransientError
from quantforge.core.folder_digest import folder_digest
from quantforge.core.hub import COMMIT_SHA, HostileAnswer, hub_api
from quantforge.core.retries import IO_ERRORS, is_transient, only_io_errors
from quantforge.tasks.chat_templates import check_chat_templates

# What a causal LM needs on disk; weights are taken as safetensors only unless pickles are allowed.
NEEDED_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# A config is kilobytes and a tokenizer_config.json a few MB: anything far larger is not read into memory.
MAX_JSON_BYTES = 64 * 2**20
# safetensors' own bound on its header (MAX_HEADER_SIZE): real headers are kilobytes to a few MB.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "PhiForCausalLM",
    "Phi3ForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
}


class SourceModel(BaseModel):
    """A source model pinned to one immutable identity."""

    repo: str  # Hub id, or `local:NAME` (a local directory, by its folder name)
    sha: str  # Hub commit sha, or sha256 over the local directory's files
    local_dir: Path

    @property
    def cache_key(self) -> str:
        """Folder name for everything derived from this exact source."""
        # No "@": transformers and optimum read "name@rev" in a path as a Hub revision.
        return f"{self.repo.replace('/', '--').replace(':', '--')}--{self.sha[:16]}"


def fetch_source(
    model: str, revision: str = "main", *, trust_remote_code: bool = False, allow_pickle: bool = False
) -> SourceModel:
    """Resolve and download the source model, then refuse what quantforge must not load."""
    if Path(model).is_dir():
        source = _from_directory(Path(model), "local:" + Path(model).resolve().name)
    else:
        try:  # a missing folder or a mistyped id: said in one line, before any request
            validate_repo_id(model)
        except HFValidationError:
            raise QuantforgeError(
                f"`model`: {model!r} is neither a local directory nor a Hub id (org/name)"
            ) from None
        source = _from_hub(model, revision, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    check_config(source.local_dir / "config.json", source.repo, trust_remote_code=trust_remote_code)
    check_weights(source, allow_pickle=allow_pickle)
    # Before it is copied into variants that serving hosts render.
    check_chat_templates(chat_templates(source.local_dir, source.repo), source.repo)
    return source


def _from_directory(folder: Path, label: str) -> SourceModel:
    root = folder.resolve()
    for path in folder.rglob("*"):  # a link out of the folder would read (and ship) any file of the host
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise QuantforgeError(
                f"`model`: {path.relative_to(folder)} in {folder} is a symlink out of the folder (refused)"
            )
    return SourceModel(repo=label, sha=folder_digest(folder), local_dir=folder.resolve())


def _from_hub(repo: str, revision: str, *, trust_remote_code: bool, allow_pickle: bool) -> SourceModel:
    # Gated repos show their metadata to anyone and refuse the first download: both calls are covered.
    try:
        return _download(repo, revision, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    except HostileAnswer as error:
        raise QuantforgeError(f"`model`: {repo!r}: {error}") from None
    except GatedRepoError:
        raise QuantforgeError(f"`model`: {repo!r} is gated: set HF_TOKEN to a token with access") from None
    except RevisionNotFoundError:
        raise QuantforgeError(f"`revision`: {revision!r} does not exist in {repo!r}") from None
    except RepositoryNotFoundError:
        raise QuantforgeError(
            f"`model`: repository {repo!r} not found (or private without HF_TOKEN)"
        ) from None
    except (HfHubHTTPError, *IO_ERRORS) as error:
        # A dropped connection or a size the server does not deliver; a retry may fix the first.
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        failure = TransientError if is_transient(error) else QuantforgeError
        raise failure(f"`model`: download of {repo!r} failed: {reason}") from error


def _download(repo: str, revision: str, *, trust_remote_code: bool, allow_pickle: bool) -> SourceModel:
    api = hub_api()
    info = api.model_info(repo, revision=revision, files_metadata=True)
    if not COMMIT_SHA.fullmatch(info.sha or ""):  # it names the snapshot folder: a hash, or a path
        raise QuantforgeError(
            f"`model`: {repo!r} answered commit sha {str(info.sha)[:120]!r}, not 40 hex digits (refused)"
        )
    names = [s.rfilename for s in info.siblings or []]
    for name in names:  # the Hub never lists these; a hostile or broken endpoint might
        if name.startswith("/") or "\\" in name or ".." in name.split("/"):
            raise QuantforgeError(f"`model`: {repo!r} lists a file path outside the repo: {name!r} (refused)")
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    if not has_safetensors and not allow_pickle:
        pickled = [n for n in names if n.endswith(PICKLED_SUFFIXES)]
        detail = (
            f" (only pickled weights: {', '.join(pickled)}; pass --allow-pickle to accept)" if pickled else ""
        )
        raise QuantforgeError(f"`model`: {repo!r} has no safetensors weights{detail}")
    if "config.json" not in names:
        raise QuantforgeError(f"`model`: {repo!r} has no config.json")
    # The config decides whether the repo may be loaded at all: read it before the weights.
    config = _download_file(repo, info.sha, "config.json", api.endpoint)
    check_config(config, repo, trust_remote_code=trust_remote_code)
    patterns = NEEDED_FILES + ([f"*{s}" for s in PICKLED_SUFFIXES] if not has_safetensors else [])
    needed = list(
        filter_repo_objects(info.siblings or [], allow_patterns=patterns, key=lambda s: s.rfilename)
    )
    cache = Path(constants.HF_HUB_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    require_free_space(cache, sum(s.size or 0 for s in needed), f"download {repo}@{info.sha[:7]}")
    # File by file from the listing checked above, not `snapshot_download`: that asks for the listing
    # and the sha again, and a hostile endpoint may answer the second time what it did not the first.
    for sibling in needed:
        _download_file(repo, info.sha, sibling.rfilename, api.endpoint)
    return SourceModel(repo=repo, sha=info.sha, local_dir=config.parent)


def _download_file(repo: str, sha: str, name: str, endpoint: str) -> Path:
    """One file of commit `sha` into the Hub cache; every answer's headers pass `check_download_answer`."""
    path = Path(hf_hub_download(repo, name, revision=sha, endpoint=endpoint))
    expected = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
    if path != expected / "snapshots" / sha / name:  # the answer named another commit than asked for
        raise QuantforgeError(f"`model`: {repo!r} served {name} from another commit than {sha} (refused)")
    return path


def check_config(config_path: Path, repo: str, *, trust_remote_code: bool) -> None:
    """Refuse remote code and unknown architectures, from config.json alone."""
    if not config_path.exists():
        raise QuantforgeError(f"`model`: {repo!r} has no config.json")
    config = read_json_object(config_path, repo)
    if config.get("auto_map") and not trust_remote_code:
        raise QuantforgeError(
            f"`model`: {repo!r} needs remote code (config.json `auto_map`); "
            "pass --trust-remote-code to run it"
        )
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(name, str) for name in architectures):
        raise QuantforgeError(
            f"`model`: config.json of {repo!r} has `architectures` {architectures!r:.120}, "
            "not a list of class names"
        )
    if not set(architectures) & SUPPORTED_ARCHITECTURES and not trust_remote_code:
        raise QuantforgeError(
            f"`model`: architecture {architectures!r} of {repo!r} is not supported "
            f"(supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))})"
        )


def read_json_object(path: Path, repo: str) -> dict:
    """A repo's JSON file that must hold an object (config, tokenizer config), or one line saying why not."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise QuantforgeError(
            f"`model`: {path.name} of {repo!r} is {size} bytes (at most {MAX_JSON_BYTES} are read)"
        )
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or nested past the parser
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        raise QuantforgeError(f"`model`: {path.name} of {repo!r} is not valid JSON ({reason})") from None
    if not isinstance(value, dict):
        raise QuantforgeError(
            f"`model`: {path.name} of {repo!r} is not a JSON object (a {type(value).__name__}: {value!r:.60})"
        )
    return value


def chat_templates(model_dir: Path, repo: str) -> dict[str, str]:
    """The chat templates a tokenizer carries: in tokenizer_config.json and in *.jinja files."""
    templates = {path.name: path.read_text(errors="replace") for path in model_dir.glob("*.jinja")}
    config_path = model_dir / "tokenizer_config.json"
    config = read_json_object(config_path, repo) if config_path.exists() else {}
    template = config.get("chat_template")
    if isinstance(template, str):
        templates["tokenizer_config.json"] = template
    elif isinstance(template, list):
        for entry in template:
            if isinstance(entry, dict) and isinstance(entry.get("template"), str):
                templates[f"tokenizer_config.json:{entry.get('name')}"] = entry["template"]
    return templates


def check_weights(source: SourceModel, *, allow_pickle: bool) -> None:
    """Refuse pickles (unless allowed) and unreadable or truncated safetensors."""
    weights = sorted(source.local_dir.glob("*.safetensors"))
    pickled = [p for p in source.local_dir.iterdir() if p.name.endswith(PICKLED_SUFFIXES)]
    if not weights and not (pickled and allow_pickle):
        raise QuantforgeError(f"`model`: {source.repo!r} has no safetensors weights")
    for path in weights:
        check_safetensors(path)


def check_safetensors(path: Path) -> None:
    """Check that the header parses and every tensor lies inside the file (catches truncation)."""
    header, data_size = _safetensors_header(path)
    ends = [entry["data_offsets"][1] for entry in header.values()]
    if max(ends, default=0) > data_size:
        raise QuantforgeError(
            f"`model`: {path.name} is truncated ({data_size} data bytes, tensors need {max(ends)})"
        )


def parameter_count(model_dir: Path) -> int:
    """Number of weight elements in the folder's safetensors files, read from their headers."""
    return sum(
        math.prod(entry["shape"])
        for path in model_dir.glob("*.safetensors")
        for entry in _safetensors_header(path)[0].values()
    )


def _safetensors_header(path: Path) -> tuple[dict[str, dict], int]:
    """The tensor entries of a safetensors header, and the size of the data section after it."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw_length = handle.read(8)
        header_length = int.from_bytes(raw_length, "little") if len(raw_length) == 8 else size
        if header_length + 8 > size:
            raise QuantforgeError(f"`model`: {path.name} is corrupt or truncated (header past end of file)")
        if header_length > MAX_SAFETENSORS_HEADER_BYTES:  # checked before a byte of it is read
            raise QuantforgeError(
                f"`model`: {path.name} claims a {header_length}-byte safetensors header "
                f"(at most {MAX_SAFETENSORS_HEADER_BYTES}; refused)"
            )
        try:
            header = json.loads(handle.read(header_length))
        except (ValueError, RecursionError):
            header = None
    if not isinstance(header, dict) or not all(
        _is_tensor_entry(entry) for name, entry in header.items() if name != "__metadata__"
    ):
        raise QuantforgeError(f"`model`: {path.name} is corrupt (unreadable safetensors header)")
    header.pop("__metadata__", None)
    return header, size - 8 - header_length


def _is_tensor_entry(entry: object) -> bool:
    """Whether a header entry has the fields the checks read: integer shape and two data offsets."""
    if not isinstance(entry, dict):
        return False
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    return (
        isinstance(shape, list)
        and all(isinstance(n, int) for n in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(n, int) for n in offsets)
    )


# A read from the Hub that a dropped connection may fail: three more tries over ~40 s.
HUB_READ_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 10, 30], "retry_condition_fn": only_io_errors}

fetch_source_task = task(fetch_source, name="fetch", **HUB_READ_RETRIES)
