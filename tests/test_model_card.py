"""The model card's metadata: the source's license as its card states it, the datasets by Hub id (local text
by its hash, never its path) and the measured figures as a `model-index` the Hub's parser reads back."""

import pytest
from huggingface_hub import HfApi, ModelCard, metadata_load

from quantforge.core.manifest import Manifest
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.fetch import SourceModel
from quantforge.tasks.model_card import CardContext, dataset_ref, model_card, source_license
from quantforge.tasks.publish import publish_variant
from quantforge_testing.hub.server import HubServer
from tests.test_report import BASELINE_NLL, judged, variant

SHA = "a" * 40
CALIBRATION_HASH = "c0ffee" + "0" * 58
EVALUATION_HASH = "e7a1" + "0" * 60


def manifest(calibration: str | None) -> Manifest:
    return Manifest(
        source_repo="org/model",
        source_sha=SHA,
        recipe_name="int4-awq",
        recipe={"bits": 4},
        recipe_hash="r",
        variant_identity="i",
        toolchain={"openvino": "1"},
        calibration=calibration,
        calibration_hash=CALIBRATION_HASH if calibration else None,
        files={},
    )


def card_for(calibration: str | None, evaluation: str, source_license: dict[str, str], divergence=True):
    """The card of an int4 variant (mean KLD about 0.02, top-1 about 90 % when `divergence`)."""
    result = judged([n + 511 * 0.02 for n in BASELINE_NLL], BASELINE_NLL, divergence)
    baseline = Baseline(
        runtime="openvino", label="original (OpenVINO IR)", metrics=variant("b", 1, 20, 3).metrics
    )
    context = CardContext(
        repo_id="acme/model-int4-awq-ov",
        endpoint="https://hub.example",
        evaluation=dataset_ref(evaluation, EVALUATION_HASH, "evaluation"),
        source_license=source_license,
    )
    return result, model_card(result, manifest(calibration), baseline, context)


def test_the_card_names_the_license_the_hub_datasets_and_the_measured_figures(tmp_path):
    result, card = card_for("wikitext2", "c4", {"license": "apache-2.0"})
    data = ModelCard(card).data
    assert data.license == "apache-2.0"
    assert data.datasets == ["Salesforce/wikitext", "allenai/c4"]
    assert data.base_model == "org/model" and data.base_model_relation == "quantized"
    assert data.model_name == "model-int4-awq-ov"
    divergence = result.metrics.divergence
    measured = {r.metric_type: r.metric_value for r in data.eval_results}
    assert measured == {
        "perplexity": pytest.approx(result.metrics.perplexity.ppl, rel=1e-5),
        "kl_divergence": pytest.approx(divergence.mean_kld, rel=1e-5),
        "top1_agreement": pytest.approx(divergence.top1_agreement, rel=1e-5),
    }
    for entry in data.eval_results:
        assert (entry.task_type, entry.dataset_type, entry.dataset_split) == (
            "text-generation",
            "allenai/c4",
            "validation",
        )
        assert entry.dataset_args == {"data_files": "en/c4-validation.00000-of-00008.json.gz"}
        assert (entry.source_name, entry.source_url) == (
            "quantforge",
            "https://hub.example/acme/model-int4-awq-ov",
        )
        assert entry.metric_args == {"tokens": 511 * len(BASELINE_NLL), "windows": len(BASELINE_NLL)}
    (tmp_path / "README.md").write_text(card)
    index = metadata_load(tmp_path / "README.md")["model-index"]
    assert index[0]["name"] == "model-int4-awq-ov"
    assert index[0]["results"][0]["metrics"][0] == {
        "type": "perplexity",
        "value": pytest.approx(result.metrics.perplexity.ppl, rel=1e-5),
        "name": "Perplexity",
        "args": {"tokens": 511 * len(BASELINE_NLL), "windows": len(BASELINE_NLL)},
    }
    assert (
        "Calibration: Salesforce/wikitext (wikitext-2-raw-v1, train split), token ids sha256 c0ffee000000."
        in card
    )
    assert "## Quality and speed (allenai/c4 (en/c4-validation.00000-of-00008.json.gz)" in card


def test_one_named_dataset_for_both_roles_is_listed_once_and_a_variant_without_divergence_has_ppl_alone():
    _, card = card_for("wikitext2", "wikitext2", {}, divergence=False)
    data = ModelCard(card).data
    assert data.datasets == ["Salesforce/wikitext"]
    (entry,) = data.eval_results
    assert (entry.metric_type, entry.dataset_config, entry.dataset_split) == (
        "perplexity",
        "wikitext-2-raw-v1",
        "test",
    )


def test_local_text_is_described_by_its_hash_and_no_path_of_this_host_is_published(tmp_path):
    """Calibration and evaluation from files: the card names neither file, nor any folder of this host;
    without a known license, none is invented."""
    folder = tmp_path / "private-corpora"
    _, card = card_for(str(folder / "calibration.txt"), str(folder / "evaluation.jsonl"), {})
    assert str(tmp_path) not in card and "private-corpora" not in card and ".txt" not in card
    data = ModelCard(card).data
    assert data.license is None and "license" not in card.split("---")[1]
    assert data.datasets is None
    assert {(r.dataset_type, r.dataset_name) for r in data.eval_results} == {
        ("local-text", "local text, token ids sha256 e7a100000000")
    }
    assert "Calibration: local text, token ids sha256 c0ffee000000." in card
    assert "## Quality and speed (local text, token ids sha256 e7a100000000, " in card


def test_an_other_license_keeps_its_name_and_an_absolute_link_only():
    fields = {
        "license": "other",
        "license_name": "qwen-research",
        "license_link": "https://x.example/LICENSE",
    }
    _, card = card_for(None, "wikitext2", fields)
    data = ModelCard(card).data
    assert (data.license, data.license_name, data.license_link) == tuple(fields.values())


README_CASES = {
    "apache": ("---\nlicense: apache-2.0\n---\n# A model\n", {"license": "apache-2.0"}),
    "other": (
        "---\nlicense: other\nlicense_name: llama3\nlicense_link: LICENSE\n---\n",
        {"license": "other", "license_name": "llama3"},  # a link relative to the source repo: dropped
    ),
    "unlisted": (
        "---\nlicense: gpl-2.0-or-later\nlicense_link: https://x.example/COPYING\n---\n",
        {"license": "other", "license_name": "gpl-2.0-or-later", "license_link": "https://x.example/COPYING"},
    ),
    "no front matter": ("# A model\n\nlicense: mit\n", {}),
    "a list": ("---\nlicense: [mit, apache-2.0]\n---\n", {}),
    "a mapping": ("---\nlicense: {name: mit}\n---\n", {}),
    "a number": ("---\nlicense: 3\n---\n", {}),
    "absurd": ("---\nlicense: 'see the file <a href=x>here</a>'\n---\n", {}),
    "too long": ("---\nlicense: " + "a" * 500 + "\n---\n", {}),
    "not YAML": ("---\nlicense: [unclosed\n---\n", {}),
    "not a mapping": ("---\n- license\n---\n", {}),
    "aliases": ("---\nbase: &a [x, x]\nmore: [*a, *a]\nlicense: mit\n---\n", {"license": "mit"}),
    "deep": ("---\nlicense: " + "[" * 5000 + "\n---\n", {}),
    "too large": ("---\nlicense: mit\n---\n" + "x" * 2**20, {}),
}


@pytest.mark.parametrize("text, expected", README_CASES.values(), ids=README_CASES.keys())
def test_a_local_source_license_comes_from_its_readme_and_anything_odd_is_ignored(tmp_path, text, expected):
    (tmp_path / "README.md").write_text(text)
    assert source_license(SourceModel(repo="local:model", sha="0" * 64, local_dir=tmp_path)) == expected


def test_a_local_source_without_a_readme_or_with_binary_bytes_has_no_license(tmp_path):
    source = SourceModel(repo="local:model", sha="0" * 64, local_dir=tmp_path)
    assert source_license(source) == {}
    (tmp_path / "README.md").write_bytes(b"---\nlicense: \xff\xfe\n---\n")
    assert source_license(source) == {}


def test_a_hub_source_license_is_the_card_of_the_pinned_commit(tmp_path, monkeypatch):
    """The Hub's card data at the fetched sha: a later commit changing the license changes nothing."""
    with HubServer(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        folder = tmp_path / "tree"
        folder.mkdir()
        (folder / "README.md").write_text("---\nlicense: llama3.2\npipeline_tag: text-generation\n---\n")
        pinned = hub.seed_repo("org/model", folder)
        (folder / "README.md").write_text("---\nlicense: mit\n---\n")
        hub.seed_repo("org/model", folder)
        assert source_license(SourceModel(repo="org/model", sha=pinned, local_dir=tmp_path)) == {
            "license": "llama3.2"
        }
        (folder / "README.md").write_text("# no metadata\n")
        bare = hub.seed_repo("org/model", folder)
        assert source_license(SourceModel(repo="org/model", sha=bare, local_dir=tmp_path)) == {}


def test_the_hub_reads_the_pushed_cards_metadata_back(tmp_path, monkeypatch):
    """Pushed as `publish_variant` pushes it, the card's front matter is the Hub's card data: the license,
    the datasets and the model-index's figures, with no path of this host."""
    token = "hf_modelCardToken"
    result, card = card_for("wikitext2", str(tmp_path / "evaluation.txt"), {"license": "apache-2.0"})
    folder = tmp_path / "variant"
    folder.mkdir()
    (folder / "openvino_model.xml").write_text("<net/>")
    with HubServer(tmp_path / "hub", tokens={token: "quantforge-bot"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", token)
        published = publish_variant(
            folder, manifest("wikitext2"), card, "acme/model-int4-awq-ov", private=False
        )
        data = (
            HfApi(endpoint=hub.url, token=token)
            .model_info(published.repo, revision=published.commit)
            .card_data
        )
    assert (data.license, data.datasets) == ("apache-2.0", ["Salesforce/wikitext"])
    (perplexity, *_) = data.eval_results
    assert perplexity.metric_type == "perplexity" and perplexity.dataset_type == "local-text"
    assert perplexity.metric_value == pytest.approx(result.metrics.perplexity.ppl, rel=1e-5)
    assert str(tmp_path) not in repr(data.to_dict())


def test_the_card_loads_the_variant_on_each_device_of_its_targets_file_and_names_the_host(tmp_path):
    """One snippet per device of openvino_targets.json with that device's properties, saying whether the
    host that made it compiled it there; and the host that measured the figures."""
    import json

    from quantforge.core.records import HostProfile
    from quantforge.tasks.host import describe
    from quantforge.tasks.model_card import target_snippets
    from quantforge.tasks.recipes import Recipe
    from quantforge.tasks.targets import read_targets, write_targets

    write_targets(tmp_path, Recipe(name="int4-sym-cw", bits=4, sym=True, group_size=-1))
    result, card = card_for("wikitext2", "c4", {})
    assert "Measured on: host not recorded (made before issue 19)." in card.splitlines()
    assert "## Target devices" not in card  # no folder, no targets file: nothing to say
    host = HostProfile(cpu="AMD EPYC", isa=["AVX2"], cores=2, memory_gib=7.7, inference_precision="f32")
    result = result.model_copy(
        update={
            "path": tmp_path,
            "targets": {"CPU": "verified", "NPU": "not verified (device absent)"},
            "metrics": result.metrics.model_copy(update={"host": host}),
        }
    )
    lines = target_snippets(result, "acme/tiny-int4")
    assert [line for line in lines if line.startswith("**")] == [
        "**CPU**: verified on the host that made it.",
        "**GPU**: not checked by the run that made it.",
        "**NPU**: not verified (device absent) on the host that made it.",
    ]
    npu_properties = json.dumps(read_targets(tmp_path)["NPU"])
    npu = lines[lines.index("**NPU**: not verified (device absent) on the host that made it.") :]
    assert npu[2:8] == [
        "```python",
        "import openvino_genai",
        "from huggingface_hub import snapshot_download",
        'folder = snapshot_download("acme/tiny-int4")',
        f"properties = {npu_properties}  # CACHE_DIR: a folder of the serving host",
        'pipe = openvino_genai.LLMPipeline(folder, "NPU", properties)',
    ]
    baseline = Baseline(runtime="openvino", label="original", metrics=result.metrics)
    context = CardContext(
        repo_id="acme/tiny-int4",
        endpoint="https://hub.example",
        evaluation=dataset_ref("c4", None, "evaluation"),
    )
    card = model_card(result, manifest(None), baseline, context)
    assert f"Measured on: {describe(host)}." in card.splitlines()
    assert "\n".join(["## Target devices", "", *lines]) in card
