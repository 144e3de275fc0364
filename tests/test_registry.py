"""Registry: versions for passing variants with lineage, lookup by identity, aliases, verified pull.

Variants here are small synthetic folders (the registry does not look inside the IR); the end-to-end
test registers real ones. Each test gets its own MLflow database; concurrency and the separate-process
pull go through a real `mlflow server`.
"""

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from quantforge.core.atomic import write_json
from quantforge.core.errors import QuantforgeError
from quantforge.core.manifest import MANIFEST_FILE, Manifest, file_entries
from quantforge.core.records import Lineage, Metrics, Perplexity, Speed, StepUsage, Verdict, WeightShares
from quantforge.registry.aliases import archive, promote
from quantforge.registry.pull import pull
from quantforge.registry.tracking import mlflow_client
from quantforge.registry.variants import identity_key, lookup, record_variant, start_flow_run
from quantforge_testing.servers import MlflowServer

SOURCE = "HuggingFaceTB/SmolLM2-135M-Instruct"
EVAL_HASH = "e" * 64


def metrics(ppl: float, size_mb: float = 90.0) -> Metrics:
    return Metrics(
        perplexity=Perplexity(ppl=ppl, mean_nll=1.0, tokens_scored=4088, windows=8),
        speed=Speed(tokens_per_second=70.0, ttft_ms=30.0, new_tokens=16),
        size_mb=size_mb,
        weights=WeightShares(int4=0.8, int8=0.2, float=0.0),
    )


BASELINE = metrics(20.0, 264.5)


def make_variant(folder: Path, sha: str, recipe: str = "int4-awq-se", weights_bytes: int = 2**20) -> Manifest:
    """A variant-shaped folder with its manifest: a weights file (1 MiB by default) and small text files."""
    folder.mkdir(parents=True)
    (folder / "openvino_model.xml").write_text(f"<net name='{recipe}-{sha}'/>")
    (folder / "openvino_model.bin").write_bytes(os.urandom(weights_bytes))
    (folder / "config.json").write_text('{"model_type": "llama"}')
    manifest = Manifest(
        source_repo=SOURCE,
        source_sha=sha,
        recipe_name=recipe,
        recipe={"bits": 4, "group_size": 128, "awq": True, "gate": {"max_ppl": None}},
        recipe_hash="r" * 64,
        variant_identity=f"{recipe}-{sha}",
        toolchain={"openvino": "2026.4.1", "nncf": "3.0.0"},
        calibration="wikitext2",
        calibration_hash="c" * 64,
        files=file_entries(folder),
    )
    write_json(folder / MANIFEST_FILE, manifest.model_dump(mode="json"))
    return manifest


def record(folder: Path, manifest: Manifest, ppl: float):
    lineage = Lineage(
        source_repo=SOURCE,
        source_sha=manifest.source_sha,
        evaluation="wikitext2",
        evaluation_hash=EVAL_HASH,
        baseline=BASELINE,
        inference_precision="f32",
    )
    passed = ppl < 22.0
    verdict = Verdict(passed=passed, reasons=[("pass" if passed else "FAIL") + ": Δppl vs limit +10 %"])
    parent = start_flow_run(SOURCE, manifest.source_sha)
    usage = StepUsage(seconds=12.5, peak_pss_mb=900.0)
    return record_variant(
        parent, folder, manifest, usage, metrics(ppl), (ppl / 20.0 - 1) * 100, verdict, lineage
    )


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return mlflow_client()


def test_passing_variant_is_registered_with_lineage(tracking, tmp_path):
    manifest = make_variant(tmp_path / "v", "a" * 40)
    recorded = record(tmp_path / "v", manifest, 21.0)

    assert (recorded.model_name, recorded.model_version) == ("smollm2-135m-instruct--int4-awq-se", 1)
    version = tracking.get_model_version_by_alias(recorded.model_name, "candidate")
    assert int(version.version) == 1
    assert version.tags["quantforge.source_sha"] == "a" * 40
    assert version.tags["quantforge.recipe_hash"] == "r" * 64
    assert version.tags["quantforge.toolchain.openvino"] == "2026.4.1"
    assert version.tags["quantforge.passed"] == "true" and version.tags["quantforge.published"] == "false"
    run = tracking.get_run(recorded.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["bits"] == "4" and run.data.params["awq"] == "True"
    assert run.data.metrics["ppl"] == 21.0 and run.data.metrics["baseline_ppl"] == 20.0
    assert run.data.metrics["quantize_seconds"] == 12.5 and run.data.metrics["quantize_peak_pss_mb"] == 900.0
    assert run.data.tags["quantforge.reasons"].startswith("pass")
    files = {f.path for f in tracking.list_artifacts(recorded.run_id, "variant")}
    assert {"variant/openvino_model.bin", f"variant/{MANIFEST_FILE}"} <= files

    found = lookup(recorded.identity, EVAL_HASH)
    assert found is not None and found.model_version == 1 and found.metrics.perplexity.ppl == 21.0
    assert (found.quantize_seconds, found.quantize_peak_pss_mb) == (12.5, 900.0)
    assert lookup(recorded.identity, "another evaluation text") is None
    assert lookup(recorded.identity, EVAL_HASH, "bf16") is None  # scored at another precision: not the same
    assert lookup(identity_key(SOURCE, "b" * 40, manifest.variant_identity), EVAL_HASH) is None


def test_failing_variant_is_recorded_but_never_registered(tracking, tmp_path):
    manifest = make_variant(tmp_path / "v", "a" * 40, recipe="int4-asym-g128")
    recorded = record(tmp_path / "v", manifest, 26.0)

    assert recorded.model_version is None and not recorded.verdict.passed
    assert tracking.search_model_versions("name = 'smollm2-135m-instruct--int4-asym-g128'") == []
    assert tracking.list_artifacts(recorded.run_id, "variant") == []  # no bytes kept for a failure
    assert lookup(recorded.identity, EVAL_HASH).verdict.reasons[0].startswith("FAIL")


def test_new_source_sha_is_a_new_version_and_candidate_moves(tracking, tmp_path):
    first = record(tmp_path / "v1", make_variant(tmp_path / "v1", "a" * 40), 21.0)
    second = record(tmp_path / "v2", make_variant(tmp_path / "v2", "b" * 40), 21.5)
    assert (first.model_version, second.model_version) == (1, 2)
    assert int(tracking.get_model_version_by_alias(first.model_name, "candidate").version) == 2


def test_pull_verifies_installs_and_skips_a_verified_copy(tracking, tmp_path):
    recorded = record(tmp_path / "v", make_variant(tmp_path / "v", "a" * 40), 21.0)
    dest = tmp_path / "serving" / "model"

    assert pull(f"{recorded.model_name}@candidate", dest) == dest
    assert (dest / "openvino_model.bin").read_bytes() == (tmp_path / "v" / "openvino_model.bin").read_bytes()
    # Alter the stored copy: a verified local install is kept without downloading anything.
    stored = Path(tracking.get_run(recorded.run_id).info.artifact_uri.removeprefix("file://"))
    (stored / "variant" / "openvino_model.bin").write_bytes(b"tampered")
    assert pull(f"{recorded.model_name}/1", dest) == dest
    assert (dest / "openvino_model.bin").stat().st_size == 2**20

    fresh = tmp_path / "serving" / "other"
    with pytest.raises(QuantforgeError, match=r"openvino_model\.bin: 8 bytes, the manifest says 1048576"):
        pull(f"{recorded.model_name}@candidate", fresh)
    assert not fresh.exists() and [p.name for p in fresh.parent.iterdir()] == ["model"]


def test_tampered_file_of_the_same_size_is_refused(tracking, tmp_path):
    recorded = record(tmp_path / "v", make_variant(tmp_path / "v", "a" * 40), 21.0)
    stored = Path(tracking.get_run(recorded.run_id).info.artifact_uri.removeprefix("file://"))
    (stored / "variant" / "config.json").write_text('{"model_type": "llamb"}')
    with pytest.raises(QuantforgeError, match=r"config\.json: sha256 does not match the manifest"):
        pull(f"{recorded.model_name}@candidate", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_promote_and_archive(tracking, tmp_path):
    recorded = record(tmp_path / "v", make_variant(tmp_path / "v", "a" * 40), 21.0)
    name = recorded.model_name
    promote(name, 1, "champion")
    assert int(tracking.get_model_version_by_alias(name, "champion").version) == 1

    archive(name, 1)
    for spec in (f"{name}/1", f"{name}@champion"):
        with pytest.raises(QuantforgeError, match="archived|no model version"):
            pull(spec, tmp_path / "dest")
    with pytest.raises(QuantforgeError, match="archived"):
        promote(name, 1, "champion")
    with pytest.raises(QuantforgeError, match="no model version 'nope/3'"):
        pull("nope/3")
    with pytest.raises(QuantforgeError, match="is not NAME@ALIAS or NAME/VERSION"):
        pull("just-a-name")


def _register_concurrently(url: str, folder: str, barrier) -> int:
    os.environ["MLFLOW_TRACKING_URI"] = url
    manifest = Manifest.model_validate_json((Path(folder) / MANIFEST_FILE).read_text())
    barrier.wait()
    return record(Path(folder), manifest, 21.0).model_version


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


def test_two_runs_registering_one_identity_at_once_make_one_version(mlflow_server, tmp_path, monkeypatch):
    folder = tmp_path / "v"
    make_variant(folder, "c" * 40, recipe="int8-asym")
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(3)
    with context.Pool(3) as pool:
        results = pool.starmap(_register_concurrently, [(mlflow_server.url, str(folder), barrier)] * 3)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    versions = mlflow_client().search_model_versions("name = 'smollm2-135m-instruct--int8-asym'")
    assert len(versions) == 1
    assert results == [int(versions[0].version)] * 3


def test_a_separate_process_pulls_with_only_the_tracking_uri(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    recorded = record(tmp_path / "v", make_variant(tmp_path / "v", "d" * 40, recipe="int4-gptq"), 21.0)
    env = {
        "PATH": os.environ["PATH"],
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "QUANTFORGE_HOME": str(tmp_path / "empty-home"),  # nothing of the producing side
    }
    spec = f"{recorded.model_name}@candidate"
    quantforge = str(Path(sys.executable).with_name("quantforge"))
    done = subprocess.run([quantforge, "pull", spec], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    installed = Path(done.stdout.strip().splitlines()[-1])
    assert installed.is_relative_to(tmp_path / "empty-home")
    assert (installed / "openvino_model.bin").read_bytes() == (
        tmp_path / "v" / "openvino_model.bin"
    ).read_bytes()

    missing = subprocess.run([quantforge, "pull", "nope@champion"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: `model`: no model version 'nope@champion' in the registry"
