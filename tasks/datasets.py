"""datasets: calibration and evaluation token ids from wikitext2, c4 or local text, cached by content hash."""

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from prefect import task
from pydantic import BaseModel, ConfigDict

from quantforge.core.atomic import atomic_file
from quantforge.core.errors import QuantforgeError, TransientError
from quantforge.core.hub import hub_endpoint
from quantforge.core.paths import data_dir
from quantforge.core.retries import is_transient, only_io_errors
from quantforge.tasks.fetch import read_json_object

Role = Literal["calibration", "evaluation"]
# How the evaluation text becomes windows: quantforge's (its paragraphs, `window` tokens, at most
# `max_eval_windows`) or the GPTQ/AWQ papers' (wikitext2's test split, every window of the context or 2048).
Protocol = Literal["quantforge", "gptq"]
PAPERS_DATASET = "wikitext2"
# GPTQ's `model.seqlen` (2048: OPT's, BLOOM's and LLaMA's context), the windows of the tables AWQ and
# later papers copy; a model with a shorter context gets windows of its own context.
PAPERS_WINDOW = 2048
# Hub datasets: (repo, config or data files, split per role). Calibration never reads an evaluation split.
HUB_DATASETS = {
    "wikitext2": {
        "path": "Salesforce/wikitext",
        "name": "wikitext-2-raw-v1",
        "calibration": "train",
        "evaluation": "test",
    },
    "c4": {
        "path": "allenai/c4",
        "data_files": {
            "train": "en/c4-train.00000-of-01024.json.gz",
            "validation": "en/c4-validation.00000-of-00008.json.gz",
        },
        "calibration": "train",
        "evaluation": "validation",
    },
}
LOCAL_TEXT = "local text"


def shared_name(spec: str) -> str:
    """A text as records that leave this host name it (a variant's manifest, its registry tags): a Hub
    dataset by its name, anything else as local text, never a path of this host (the token ids' hash,
    recorded beside it, says which text)."""
    return spec if spec in HUB_DATASETS else LOCAL_TEXT


class TokenSet(BaseModel):
    """Token windows of shape [n, length] with where they came from and a content hash."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    spec: str
    role: Role
    windows: np.ndarray
    content_hash: str
    protocol: Protocol = "quantforge"
    overlap_removed: int = 0  # calibration paragraphs dropped because the evaluation text has them too

    @property
    def tokens(self) -> int:
        """Number of tokens in all windows."""
        return int(self.windows.size)


def read_paragraphs(spec: str, role: Role) -> list[str]:
    """Paragraphs of text for a dataset name or a local .txt/.jsonl file or folder."""
    if spec in HUB_DATASETS:
        return _hub_paragraphs(spec, role)
    path = Path(spec)
    if not path.exists():
        raise QuantforgeError(
            f"`{role}`: {spec!r} is neither a known dataset ({', '.join(HUB_DATASETS)}) nor an existing path"
        )
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
    if not files:
        raise QuantforgeError(f"`{role}`: folder {spec!r} has no .txt or .jsonl files")
    paragraphs = []
    for file in files:
        if file.suffix == ".jsonl":
            lines = file.read_text(encoding="utf-8").splitlines()
            paragraphs += [json.loads(line)["text"] for line in lines if line.strip()]
        else:
            paragraphs += re.split(r"\n\s*\n", file.read_text(encoding="utf-8", errors="replace"))
    return [p.strip() for p in paragraphs if p.strip()]


def _use_endpoint(endpoint: str) -> None:
    """Point `datasets` at `endpoint`: it reads `HF_ENDPOINT` once, when imported, into these two."""
    import datasets

    datasets.config.HF_ENDPOINT = endpoint
    datasets.config.HUB_DATASETS_URL = endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"


def _hub_paragraphs(name: str, role: Role) -> list[str]:
    return [t.strip() for t in hub_rows(name, role) if t.strip()]


def hub_rows(name: str, role: Role) -> list[str]:
    """The `text` rows of a Hub dataset's split for `role`, as served (empty rows and spaces kept)."""
    import datasets

    entry = HUB_DATASETS[name]
    split = entry[role]
    endpoint = hub_endpoint()  # HF_ENDPOINT as set now; also guards the downloads' answers
    _use_endpoint(endpoint)
    try:
        if "data_files" in entry:
            # One shard of a config whose card gives the split sizes of all its shards: the split check
            # would refuse it (ExpectedMoreSplitsError) were the config the card's default.
            data = datasets.load_dataset(
                entry["path"],
                data_files={split: entry["data_files"][split]},
                split=split,
                verification_mode="no_checks",
            )
        else:
            data = datasets.load_dataset(entry["path"], entry["name"], split=split)
    except Exception as error:  # datasets words an unreachable Hub many ways; the user needs one line
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        failure = TransientError if is_transient(error) else QuantforgeError
        raise failure(
            f"`{role}`: could not load {name!r} ({entry['path']}) from {endpoint}: {reason} "
            "(offline? pass a local .txt/.jsonl file or folder instead)"
        ) from error
    return list(data["text"])


def _normalize(paragraph: str) -> str:
    return " ".join(paragraph.split()).lower()


def remove_overlap(calibration: list[str], evaluation: list[str]) -> tuple[list[str], int]:
    """Drop calibration paragraphs that also occur in the evaluation text; return them and the count."""
    held_out = {_normalize(p) for p in evaluation}
    kept = [p for p in calibration if _normalize(p) not in held_out]
    return kept, len(calibration) - len(kept)


def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    """Hash of the tokenizer files: the same text gives the same ids only under the same tokenizer."""
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model"):
        if (tokenizer_dir / name).exists():
            digest.update((tokenizer_dir / name).read_bytes())
    return digest.hexdigest()


def _tokenize(paragraphs: list[str], tokenizer_dir: Path, protocol: Protocol) -> np.ndarray:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    # The papers' text keeps the tokenizer's special tokens (one BOS before the whole text, where the
    # tokenizer adds one), as GPTQ's `tokenizer("\n\n".join(testdata['text']))` does; ours has none.
    special = protocol == "gptq"
    ids = tokenizer("\n\n".join(paragraphs), add_special_tokens=special, verbose=False)["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def _cached_token_stream(
    paragraphs: list[str], tokenizer_dir: Path, protocol: Protocol = "quantforge"
) -> tuple[np.ndarray, str]:
    digest = hashlib.sha256(tokenizer_fingerprint(tokenizer_dir).encode())
    if protocol != "quantforge":  # the default's hashes stay those of the records made before protocols
        digest.update(f"protocol {protocol}\0".encode())
    for paragraph in paragraphs:
        digest.update(paragraph.encode() + b"\0")
    content_hash = digest.hexdigest()
    cache = data_dir() / "datasets" / f"{content_hash}.npy"
    if cache.exists():
        try:
            return np.load(cache), content_hash
        except (ValueError, OSError):  # a truncated cache file is rebuilt, not trusted
            cache.unlink()
    ids = _tokenize(paragraphs, tokenizer_dir, protocol)
    with atomic_file(cache) as partial, partial.open("wb") as handle:
        np.save(handle, ids)
    return ids, content_hash


def check_fits_context(field: str, tokens: int, model_dir: Path) -> None:
    """Refuse windows longer than the model's context (`max_position_embeddings` in its config.json):
    positions it never saw in training, or past the end of its position table."""
    context = read_json_object(model_dir / "config.json", model_dir.name).get("max_position_embeddings")
    if isinstance(context, int) and tokens > context:
        raise QuantforgeError(
            f"`{field}`: {tokens} tokens is longer than the model's context "
            f"(`max_position_embeddings` {context} in config.json)"
        )


def protocol_windows(protocol: Protocol, window: int, max_windows: int, model_dir: Path) -> tuple[int, int]:
    """The window length and the most windows a protocol scores: the request's under quantforge's; the
    model's context or 2048 tokens (the lesser), and every window, under the papers'."""
    if protocol == "quantforge":
        return window, max_windows
    context = read_json_object(model_dir / "config.json", model_dir.name).get("max_position_embeddings")
    return min(context, PAPERS_WINDOW) if isinstance(context, int) else PAPERS_WINDOW, sys.maxsize


def evaluation_text(spec: str, tokenizer_dir: Path, protocol: Protocol) -> tuple[np.ndarray, str]:
    """The evaluation text's token ids and their hash. quantforge's: its non-empty paragraphs, stripped,
    joined by a blank line. The papers': wikitext2's test rows as served, empty ones included, joined by
    "\n\n" and tokenized at once, as GPTQ's `datautils.get_wikitext2` (IST-DASLab/gptq) does:
    `testenc = tokenizer("\n\n".join(testdata['text']), return_tensors='pt')`."""
    if protocol == "quantforge":
        return _cached_token_stream(read_paragraphs(spec, "evaluation"), tokenizer_dir)
    if spec != PAPERS_DATASET:
        raise QuantforgeError(f"`protocol` {protocol!r} scores {PAPERS_DATASET}: not `evaluation` {spec!r}")
    return _cached_token_stream(hub_rows(spec, "evaluation"), tokenizer_dir, protocol)


def evaluation_windows(
    spec: str, tokenizer_dir: Path, window: int, max_windows: int, protocol: Protocol = "quantforge"
) -> TokenSet:
    """Non-overlapping windows from the start of the evaluation text (the same for every variant); the
    tail shorter than a window is left out, as the papers leave it."""
    check_fits_context("window", window, tokenizer_dir)
    ids, content_hash = evaluation_text(spec, tokenizer_dir, protocol)
    count = min(len(ids) // window, max_windows)
    if count < 1:
        raise QuantforgeError(
            f"`evaluation`: {spec!r} has {len(ids)} tokens, fewer than one window of {window}"
        )
    windows = ids[: count * window].reshape(count, window)
    return TokenSet(
        spec=spec,
        role="evaluation",
        windows=windows,
        content_hash=_windows_hash(content_hash, windows),
        protocol=protocol,
    )


def calibration_samples(
    spec: str, evaluation_spec: str, tokenizer_dir: Path, num_samples: int, seq_len: int, seed: int
) -> TokenSet:
    """`num_samples` random windows of `seq_len` tokens (seeded), from text that evaluation never sees."""
    check_fits_context("seq_len", seq_len, tokenizer_dir)
    paragraphs, removed = remove_overlap(
        read_paragraphs(spec, "calibration"), read_paragraphs(evaluation_spec, "evaluation")
    )
    ids, content_hash = _cached_token_stream(paragraphs, tokenizer_dir)
    if len(ids) < seq_len:
        raise QuantforgeError(
            f"`calibration`: {spec!r} has {len(ids)} tokens after removing text shared with the "
            "evaluation set, "
            f"fewer than one sample of {seq_len}"
        )
    starts = np.random.default_rng(seed).integers(0, len(ids) - seq_len + 1, size=num_samples)
    windows = np.stack([ids[s : s + seq_len] for s in starts])
    return TokenSet(
        spec=spec,
        role="calibration",
        windows=windows,
        content_hash=_windows_hash(content_hash, windows),
        overlap_removed=removed,
    )


def _windows_hash(text_hash: str, windows: np.ndarray) -> str:
    """Identity of exactly these token windows: the text (and tokenizer) they come from, their count,
    length and positions. Two requests that sample or cut the same text differently never share it."""
    digest = hashlib.sha256(f"{text_hash}|{windows.shape}|{windows.dtype}".encode())
    digest.update(np.ascontiguousarray(windows).tobytes())
    return digest.hexdigest()


evaluation_windows_task = task(
    evaluation_windows,
    name="evaluation-set",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=only_io_errors,
)
calibration_samples_task = task(
    calibration_samples,
    name="calibration-set",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=only_io_errors,
)
