"""The two Hub dataset repos quantforge reads, in their real layouts, built from the base system's license
texts: `Salesforce/wikitext` (one parquet file per config and split, configs and split sizes in the
README's YAML header) and `allenai/c4` (gzipped JSON-lines shards under `en/`, the real card's configs
and sizes). Which license lands in which split is fixed here, so a test knows where every sentence is."""

import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from quantforge_testing.hub import HubServer

LICENSES = Path("/usr/share/common-licenses")
WIKITEXT_REPO, C4_REPO = "Salesforce/wikitext", "allenai/c4"
SPLITS = ("test", "train", "validation")  # the order of the real cards
# split → licenses of wikitext-2; the real repo's four configs hold it as `wikitext_configs` says.
WIKITEXT_2 = {"train": ("GPL-2", "LGPL-2.1", "Apache-2.0"), "validation": ("GPL-1",), "test": ("GPL-3",)}
# What `datasets` writes into the parquet files it pushes: the features, read back on load.
PARQUET_FEATURES = {"info": {"features": {"text": {"dtype": "string", "_type": "Value"}}}}
# shard → licenses: the first of the `en` config's 1024 train and 8 validation shards.
C4_SHARDS = {
    "en/c4-train.00000-of-01024.json.gz": ("MPL-1.1", "LGPL-2", "Artistic"),
    "en/c4-validation.00000-of-00008.json.gz": ("GFDL-1.3",),
}
# The real card's configs and split sizes (of every shard, not of the two served): none is the default,
# so `data_files` alone loads a config of its own, not `en` with its 1024-shard sizes.
C4_CONFIGS = {
    "en": (828589180707, 364868892, 825767266, 364608, 326778635540),
    "en.noblocklist": (1029628201361, 393391519, 1025606012, 393226, 406611392434),
    "en.noclean": (6715509699938, 1063805381, 6706356913, 1065029, 2430376268625),
    "realnewslike": (38165657946, 13799838, 37875873, 13863, 15419740744),
}
RARE_WORD = re.compile(r"\b\w{13,}\b")  # what the non-raw configs' vocabulary lacks, here
GITATTRIBUTES = "*.parquet filter=lfs diff=lfs merge=lfs -text\n*.gz filter=lfs diff=lfs merge=lfs -text\n"


def paragraphs(license_name: str) -> list[str]:
    """A license's paragraphs (blank-line separated), each on one line."""
    text = (LICENSES / license_name).read_text(encoding="utf-8", errors="replace")
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def wikitext_rows(licenses: tuple[str, ...], unk: bool = False) -> list[str]:
    """Rows as wikitext has them: a ` = Title = ` heading per article, each line with a leading and a
    trailing space and its newline, an empty row between lines; `unk`: words of 13+ letters as `<unk>`."""
    rows = []
    for name in licenses:
        rows += ["", f" = {name} = \n", ""]
        for paragraph in paragraphs(name):
            line = RARE_WORD.sub("<unk>", paragraph) if unk else paragraph
            rows += [f" {line} \n", ""]
    return rows


def _card(header: dict, title: str) -> str:
    return f"---\n{yaml.safe_dump(header, sort_keys=False, width=120)}---\n\n# {title}\n"


def wikitext_configs(wikitext_2: dict[str, tuple[str, ...]]) -> dict[str, dict[str, tuple[str, ...]]]:
    """config → split → licenses, as the real repo's configs relate: the non-raw ones hold the same text
    with rare words replaced by `<unk>`, the 103 ones a larger train split."""
    wikitext_103 = {**wikitext_2, "train": (*wikitext_2["train"], "MPL-2.0")}
    return {
        "wikitext-103-raw-v1": wikitext_103,
        "wikitext-103-v1": wikitext_103,
        "wikitext-2-raw-v1": wikitext_2,
        "wikitext-2-v1": wikitext_2,
    }


def build_wikitext(folder: Path, wikitext_2: dict[str, tuple[str, ...]] = WIKITEXT_2) -> Path:
    """`Salesforce/wikitext` with `wikitext_2`'s licenses in its splits: `<config>/<split>-00000-of-00001
    .parquet` (a `text` column) and a README whose `dataset_info` gives the served split sizes
    (`datasets` checks them) and `configs` the files."""
    infos, configs = [], []
    schema = pa.schema([("text", pa.string())], metadata={"huggingface": json.dumps(PARQUET_FEATURES)})
    for config, licenses in wikitext_configs(wikitext_2).items():
        splits, download_size = [], 0
        for split in SPLITS:
            table = pa.table({"text": wikitext_rows(licenses[split], unk="raw" not in config)}, schema=schema)
            path = folder / config / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            download_size += path.stat().st_size
            splits.append({"name": split, "num_bytes": table.nbytes, "num_examples": table.num_rows})
        infos.append(
            {
                "config_name": config,
                "features": [{"name": "text", "dtype": "string"}],
                "splits": splits,
                "download_size": download_size,
                "dataset_size": sum(s["num_bytes"] for s in splits),
            }
        )
        data_files = [{"split": split, "path": f"{config}/{split}-*"} for split in SPLITS]
        configs.append({"config_name": config, "data_files": data_files})
    header = {
        "annotations_creators": ["no-annotation"],
        "language_creators": ["crowdsourced"],
        "language": ["en"],
        "license": ["cc-by-sa-3.0", "gfdl"],
        "multilinguality": ["monolingual"],
        "size_categories": ["1M<n<10M"],
        "source_datasets": ["original"],
        "task_categories": ["text-generation", "fill-mask"],
        "task_ids": ["language-modeling", "masked-language-modeling"],
        "paperswithcode_id": "wikitext-2",
        "pretty_name": "WikiText",
        "dataset_info": infos,
        "configs": configs,
    }
    (folder / "README.md").write_text(_card(header, 'Dataset Card for "wikitext"'), encoding="utf-8")
    (folder / ".gitattributes").write_text(GITATTRIBUTES)
    return folder


def c4_documents(licenses: tuple[str, ...]) -> list[dict[str, str]]:
    """One document per paragraph, with C4's three string fields."""
    return [
        {
            "text": text,
            "timestamp": "2019-04-25T12:57:54Z",
            "url": f"https://licenses.example/{name}#{number}",
        }
        for name in licenses
        for number, text in enumerate(paragraphs(name))
    ]


def build_c4(folder: Path, default_config: str | None = None) -> Path:
    """`allenai/c4`: the first `en` train and validation shards (gzipped JSON lines) and the real card's
    header; `default_config` marks one config `default: true`, as the real card does not."""
    for shard, licenses in C4_SHARDS.items():
        (folder / shard).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(folder / shard, "wt", encoding="utf-8") as out:
            out.writelines(json.dumps(document) + "\n" for document in c4_documents(licenses))
    features = [{"name": name, "dtype": "string"} for name in ("text", "timestamp", "url")]
    infos, configs = [], []
    for config, (train_bytes, train_count, valid_bytes, valid_count, download) in C4_CONFIGS.items():
        splits = [
            {"name": "train", "num_bytes": train_bytes, "num_examples": train_count},
            {"name": "validation", "num_bytes": valid_bytes, "num_examples": valid_count},
        ]
        infos.append(
            {
                "config_name": config,
                "features": features,
                "splits": splits,
                "download_size": download,
                "dataset_size": train_bytes + valid_bytes,
            }
        )
        data_files = [{"split": s, "path": f"{config}/c4-{s}.*.json.gz"} for s in ("train", "validation")]
        default = {"default": True} if config == default_config else {}
        configs.append({"config_name": config, **default, "data_files": data_files})
    header = {
        "pretty_name": "C4",
        "annotations_creators": ["no-annotation"],
        "language_creators": ["found"],
        "language": ["en"],
        "license": ["odc-by"],
        "multilinguality": ["multilingual"],
        "size_categories": ["100M<n<1B"],
        "source_datasets": ["original"],
        "task_categories": ["text-generation", "fill-mask"],
        "task_ids": ["language-modeling", "masked-language-modeling"],
        "paperswithcode_id": "c4",
        "dataset_info": infos,
        "configs": configs,
    }
    (folder / "README.md").write_text(_card(header, "C4"), encoding="utf-8")
    (folder / ".gitattributes").write_text(GITATTRIBUTES)
    return folder


def seed_dataset_repos(hub: HubServer, folder: Path) -> dict[str, str]:
    """Build both repos under `folder` and commit them to `hub` as dataset repos; their commit shas."""
    return {
        WIKITEXT_REPO: hub.seed_repo(WIKITEXT_REPO, build_wikitext(folder / "wikitext"), repo_type="dataset"),
        C4_REPO: hub.seed_repo(C4_REPO, build_c4(folder / "c4"), repo_type="dataset"),
    }
