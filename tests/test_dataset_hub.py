"""wikitext2 and c4 for real: quantforge's loaders read `Salesforce/wikitext` and `allenai/c4`, in their
Hub layouts, through `datasets` and `huggingface_hub` from the local Hub endpoint."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import NamedTuple

import datasets
import pytest
from huggingface_hub import constants
from transformers import AutoTokenizer

from quantforge.core.errors import QuantforgeError, TransientError
from quantforge.registry.tracking import experiment_id, mlflow_client
from quantforge.tasks.datasets import (
    calibration_samples,
    evaluation_windows,
    protocol_windows,
    read_paragraphs,
)
from quantforge_testing.dataset_repos import (
    C4_REPO,
    C4_SHARDS,
    WIKITEXT_2,
    WIKITEXT_REPO,
    build_c4,
    build_wikitext,
    c4_documents,
    paragraphs,
    seed_dataset_repos,
    wikitext_rows,
)
from quantforge_testing.hub import HubServer
from quantforge_testing.tiny_models import tiny_model

# In GPL-3 (wikitext's test split) and in no license of its train split, and the other way round.
TEST_ONLY = (
    "The GNU General Public License is a free, copyleft license for software and other kinds of works."
)
TRAIN_ONLY = "The licenses for most software are designed to take away your freedom to share and change it."
WIKITEXT_TEST_FILE = "wikitext-2-raw-v1/test-00000-of-00001.parquet"


def served_paragraphs(rows: list[str]) -> list[str]:
    """What a loader should make of served rows: the non-empty ones, stripped."""
    return [row.strip() for row in rows if row.strip()]


def license_text(names: tuple[str, ...]) -> str:
    return "\n\n".join(p for name in names for p in paragraphs(name))


class Served(NamedTuple):
    hub: HubServer
    shas: dict[str, str]  # repo id → the commit seeded


@pytest.fixture
def served(tmp_path, monkeypatch) -> Iterator[Served]:
    """The local Hub serving both dataset repos, HF_ENDPOINT set to it after the libraries were imported
    (as in any long-lived process), and empty Hub and `datasets` caches."""
    with HubServer(tmp_path / "hub") as hub:
        shas = seed_dataset_repos(hub, tmp_path / "repos")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub-cache"))
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
        yield Served(hub, shas)


def test_wikitext2_reads_the_raw_configs_test_and_train_splits_as_served(served):
    assert TEST_ONLY in license_text(WIKITEXT_2["test"]) and TEST_ONLY not in license_text(
        WIKITEXT_2["train"]
    )
    evaluation = read_paragraphs("wikitext2", "evaluation")
    calibration = read_paragraphs("wikitext2", "calibration")
    # wikitext-2-raw-v1 exactly: not the 103 configs' larger train split, nor the non-raw `<unk>` text
    assert evaluation == served_paragraphs(wikitext_rows(WIKITEXT_2["test"]))
    assert calibration == served_paragraphs(wikitext_rows(WIKITEXT_2["train"]))
    evaluated, calibrated = "\n\n".join(evaluation), "\n\n".join(calibration)
    assert TEST_ONLY in evaluated and TEST_ONLY not in calibrated and TRAIN_ONLY in calibrated
    sha = served.shas[WIKITEXT_REPO]
    assert (
        served.hub.requests("GET", f"^/datasets/{WIKITEXT_REPO}/resolve/{sha}/{WIKITEXT_TEST_FILE}$", 200)
        == 1
    )
    assert served.hub.requests("GET", "/resolve/.*wikitext-103", None) == 0


@pytest.mark.model
def test_wikitext2_windows_hold_the_test_text_and_calibration_never_does(served, bundled_model):
    tokenizer = AutoTokenizer.from_pretrained(bundled_model)
    evaluation = evaluation_windows("wikitext2", bundled_model, 128, 10_000)
    evaluated = tokenizer.decode(evaluation.windows.ravel().tolist())
    assert evaluated.startswith("= GPL-3 =\n\nGNU GENERAL PUBLIC LICENSE Version 3, 29 June 2007")
    assert TEST_ONLY in evaluated

    calibration = calibration_samples("wikitext2", "wikitext2", bundled_model, 64, 64, seed=0)
    assert calibration.windows.shape == (64, 64)
    train = served_paragraphs(wikitext_rows(WIKITEXT_2["train"]))
    test = {" ".join(p.split()).lower() for p in served_paragraphs(wikitext_rows(WIKITEXT_2["test"]))}
    kept = [p for p in train if " ".join(p.split()).lower() not in test]
    assert calibration.overlap_removed == len(train) - len(kept) > 0  # GPL-2 and GPL-3 share paragraphs
    kept_text = "\n\n".join(kept)
    assert TEST_ONLY not in kept_text and TRAIN_ONLY in kept_text
    for window in calibration.windows:  # every sample is train text, from no paragraph of the test split
        assert tokenizer.decode(window.tolist()) in kept_text


@pytest.mark.parametrize("default_config", [None, "en"], ids=["real-card", "card-with-a-default-config"])
def test_c4_reads_one_shard_per_role(served, default_config, tmp_path):
    """The real card has no default config; one with `en` as default made `datasets` check the shard
    against `en`'s 1024-shard split sizes (ExpectedMoreSplitsError) until quantforge skipped that check."""
    if default_config:
        served.hub.seed_repo(C4_REPO, build_c4(tmp_path / "c4-default", default_config), repo_type="dataset")
    train, validation = C4_SHARDS.values()
    assert read_paragraphs("c4", "evaluation") == [d["text"] for d in c4_documents(validation)]
    assert read_paragraphs("c4", "calibration") == [d["text"] for d in c4_documents(train)]
    assert (
        served.hub.requests("GET", r"/resolve/[0-9a-f]{40}/en/c4-validation\.00000-of-00008\.json\.gz$") == 1
    )
    assert served.hub.requests("GET", r"/resolve/[0-9a-f]{40}/en/c4-train\.00000-of-01024\.json\.gz$") == 1


@pytest.mark.model
def test_the_evaluation_identity_is_the_served_text_of_the_commit_read(served, bundled_model, tmp_path):
    """Each load reads the Hub's newest commit; a commit that leaves the test split as it was leaves the
    evaluation hash as it was, one that changes the test split changes it."""
    first = evaluation_windows("wikitext2", bundled_model, 128, 8)
    repo = shutil.copytree(tmp_path / "repos" / "wikitext", tmp_path / "wikitext-v2")
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nA new paragraph of the card.\n")
    card_only = served.hub.seed_repo(WIKITEXT_REPO, repo, repo_type="dataset")
    again = evaluation_windows("wikitext2", bundled_model, 128, 8)
    assert served.hub.requests("HEAD", f"/resolve/{card_only}/{WIKITEXT_TEST_FILE}$", 200) == 1
    assert again.content_hash == first.content_hash

    other_test = {**WIKITEXT_2, "test": ("LGPL-3",)}  # a license no split held
    repo = build_wikitext(tmp_path / "wikitext-v3", other_test)
    new_text = served.hub.seed_repo(WIKITEXT_REPO, repo, repo_type="dataset")
    changed = evaluation_windows("wikitext2", bundled_model, 128, 8)
    assert served.hub.requests("GET", f"/resolve/{new_text}/{WIKITEXT_TEST_FILE}$", 200) == 1
    assert changed.content_hash != first.content_hash
    assert read_paragraphs("wikitext2", "evaluation") == served_paragraphs(wikitext_rows(("LGPL-3",)))


def test_a_loaded_dataset_is_read_from_the_cache_when_the_hub_is_unreachable(served, tmp_path, monkeypatch):
    first = read_paragraphs("wikitext2", "evaluation")
    served.hub.stop()
    assert read_paragraphs("wikitext2", "evaluation") == first
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-datasets-cache")
    # huggingface_hub 1.21 retries a refused connection on the client it has just closed, so the cause
    # arrives as "RuntimeError: Cannot send a request, as the client has been closed."
    with pytest.raises(QuantforgeError) as unreachable:
        read_paragraphs("c4", "calibration")
    (line,) = str(unreachable.value).splitlines()
    endpoint = os.environ["HF_ENDPOINT"]
    assert line.startswith(f"`calibration`: could not load 'c4' (allenai/c4) from {endpoint}: ")
    assert line.endswith("(offline? pass a local .txt/.jsonl file or folder instead)")


def test_a_hostile_commit_header_of_the_dataset_hub_is_refused(served, tmp_path):
    served.hub.inject_fault(
        method="HEAD",
        path_pattern=f"^/datasets/{WIKITEXT_REPO}/resolve/main/README.md$",
        status=None,
        headers={"X-Repo-Commit": "../../../escaped"},  # from snapshots/ in the cache up to tmp_path
    )
    with pytest.raises(
        QuantforgeError, match=r"HostileAnswer: the Hub answered HEAD .* `X-Repo-Commit`"
    ) as refused:
        read_paragraphs("wikitext2", "evaluation")
    assert not isinstance(refused.value, TransientError)  # not retried
    assert not list(tmp_path.rglob("escaped"))


def gptq_joined_ids(tokenizer_dir) -> list[int]:
    """The served test split as GPTQ's `datautils.get_wikitext2` tokenizes it: every row, one string."""
    rows = wikitext_rows(WIKITEXT_2["test"])
    return AutoTokenizer.from_pretrained(tokenizer_dir)("\n\n".join(rows))["input_ids"]


@pytest.mark.model
def test_the_papers_protocol_windows_the_joined_test_split(served, bundled_model, tmp_path):
    """`gptq`: the test split's rows as served (empty ones too) joined by a blank line, tokenized once,
    every full window of the model's context (at most 2048) kept, the tail dropped."""
    model = tmp_path / "short-context"
    model.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundled_model / name, model / name)
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 256}))
    assert protocol_windows("gptq", 512, 32, model) == (256, sys.maxsize)
    assert protocol_windows("quantforge", 512, 32, model) == (512, 32)
    ids = gptq_joined_ids(model)
    papers = evaluation_windows("wikitext2", model, 256, sys.maxsize, "gptq")
    count = len(ids) // 256
    assert papers.windows.shape == (count, 256) and count > 8 and len(ids) % 256
    assert papers.windows.ravel().tolist() == ids[: count * 256]
    assert papers.protocol == "gptq"
    ours = evaluation_windows("wikitext2", model, 256, sys.maxsize)
    assert ours.windows.shape[1] == 256 and ours.content_hash != papers.content_hash
    assert papers.windows[0].tolist() != ours.windows[0].tolist()  # ours strips and drops empty rows
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    assert protocol_windows("gptq", 512, 32, model) == (2048, sys.maxsize)


@pytest.mark.model
def test_quantforge_run_calibrates_and_evaluates_on_wikitext2_from_the_hub(
    served, bundled_model, prefect_harness, tmp_path, monkeypatch
):
    """`quantforge run --calibration wikitext2 --evaluation wikitext2` on a tiny random Llama with one
    data-aware recipe: the windows it scored and the samples it calibrated on are the served text's. Then
    `--protocol gptq` on the same variant: every 512-token window (the model's context) of the joined test
    split, measured again (the default protocol's record is not reused) and recorded as gptq's."""
    from prefect.settings import PREFECT_API_URL

    model = tiny_model("llama", tmp_path / "tiny-llama", bundled_model)
    home = tmp_path / "home"

    def run(output, *options: str) -> dict:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "quantforge.cli", "run", str(model), "--recipes", "default"),
                *("--only", "int4-awq-se", "--calibration", "wikitext2", "--evaluation", "wikitext2"),
                *("--num-samples", "8", "--seq-len", "64"),
                *options,
                *("--new-tokens", "4", "--output-dir", str(output)),
            ],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "PREFECT_API_URL": PREFECT_API_URL.value(),
                "PREFECT_LOGGING_LEVEL": "ERROR",
                "QUANTFORGE_HOME": str(home),
                "HF_HOME": str(tmp_path / "run-hf-home"),  # a process of its own: fresh caches from the env
            },
        )
        assert done.returncode == 0, done.stderr[-3000:]
        (report_file,) = output.glob("*/report.json")
        return json.loads(report_file.read_text())

    output = tmp_path / "out"
    report = run(output, "--window", "128", "--max-eval-windows", "4")
    assert (report["evaluation"], report["calibration"]) == ("wikitext2", "wikitext2")
    (variant,) = report["variants"]
    assert variant["recipe"] == "int4-awq-se" and report["eval_tokens"] == 4 * 128
    assert report["protocol"] == "quantforge"
    (report_file,) = output.glob("*/report.json")
    manifest = json.loads((report_file.parent / "variants" / "int4-awq-se" / "manifest.json").read_text())
    # The same windows and samples as the loaders make of the served text in this process.
    assert report["evaluation_hash"] == evaluation_windows("wikitext2", model, 128, 4).content_hash
    samples = calibration_samples("wikitext2", "wikitext2", model, 8, 64, seed=0)
    assert manifest["calibration_hash"] == samples.content_hash
    sha = served.shas[WIKITEXT_REPO]
    for split in ("test", "train"):  # once by the run, once by this process
        path = f"^/datasets/{WIKITEXT_REPO}/resolve/{sha}/wikitext-2-raw-v1/{split}-00000-of-00001.parquet$"
        assert served.hub.requests("GET", path, 200) == 2

    papers = run(tmp_path / "papers", "--protocol", "gptq")
    count = len(gptq_joined_ids(model)) // 512  # the tiny Llama's context
    (scored,) = papers["variants"]
    assert papers["protocol"] == "gptq" and papers["eval_tokens"] == count * 512
    perplexity = scored["metrics"]["perplexity"]
    assert (perplexity["windows"], perplexity["tokens_scored"]) == (count, count * 511)
    assert scored["identity"] == variant["identity"]  # the same variant, not the same record
    papers_windows = evaluation_windows("wikitext2", model, 512, count, "gptq")
    assert papers["evaluation_hash"] == papers_windows.content_hash
    (markdown,) = (tmp_path / "papers").glob("*/report.md")
    assert f"Evaluation: wikitext2 ({count * 512} tokens, gptq protocol)" in markdown.read_text()
    monkeypatch.setenv("QUANTFORGE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = mlflow_client()
    identity = f"tags.`quantforge.identity` = '{variant['identity']}'"
    runs = client.search_runs([experiment_id(client)], identity)
    recorded = {(r.data.tags["quantforge.protocol"], r.data.tags["quantforge.evaluation_hash"]) for r in runs}
    assert recorded == {("quantforge", report["evaluation_hash"]), ("gptq", papers["evaluation_hash"])}
    lineages = {json.loads(r.data.tags["quantforge.lineage"])["protocol"] for r in runs}
    assert lineages == {"quantforge", "gptq"}
