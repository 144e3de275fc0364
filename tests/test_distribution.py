"""The whole chain over real servers on loopback: source repo on the local Hub → flow → `mlflow server`
→ Hub push with model card and tag → pull by a separate process; then the faults of the way.

Every test uses one canary HF token; the last test greps everything the runs wrote for it.

The chain, not the model, is under test: every source is a tiny random Llama with the bundled model's
tokenizer (seconds to export, quantize, push and pull). The source of the main chain keeps the real
model's repo id, from which registered names, Hub repos, tags and the card derive. On random weights
both `quick` variants usually pass their gates, so the bundled model's failing INT4 (int4-asym-g128 at
+30.75 %, docs/benchmarks.md) is not asserted here: each verdict is checked against its measured
figure, and only a passing variant against a Hub commit (tests/test_flow_e2e.py checks on the bundled
model that failing variants are recorded and not registered).
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from quantforge.core.errors import QuantforgeError
from quantforge.flows.quantize import quantize_flow
from quantforge.registry.tracking import mlflow_client
from quantforge.tasks.request import QuantizeRequest
from quantforge_testing.hub import HubServer
from quantforge_testing.servers import MlflowServer
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import EVALUATION_TEXT, files_containing

pytestmark = [pytest.mark.e2e, pytest.mark.model]

TOKEN = "hf_quantforgeCanary7f3a9c1e5b"
SOURCE = "HuggingFaceTB/SmolLM2-135M-Instruct"
NAMESPACE = "quantforge-ci"
GATE_PCT = {"int8-asym": 2.0, "int4-asym-g128": 10.0}  # the default gate by weight format (tasks/gate.py)


@pytest.fixture(scope="module")
def services(bundled_model, prefect_harness, tmp_path_factory):
    """The local Hub (a tiny Llama as SOURCE's repo) and an `mlflow server`, in this process's env."""
    root = tmp_path_factory.mktemp("services")
    source = tiny_model("llama", root / "source", bundled_model, seed=11)  # a seed no other test uses
    with (
        HubServer(root / "hub", tokens={TOKEN: "quantforge-bot"}) as hub,
        MlflowServer(root / "mlflow") as mlflow_server,
        pytest.MonkeyPatch.context() as env,
    ):
        hub.seed_repo(SOURCE, source, message="A tiny random Llama with SmolLM2's tokenizer")
        env.setenv("HF_ENDPOINT", hub.url)
        env.setenv("HF_TOKEN", TOKEN)
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        yield hub, mlflow_server, root


def request_for(model: str, output: Path, **overrides) -> QuantizeRequest:
    return QuantizeRequest(
        model=model,
        recipes="quick",
        evaluation=str(EVALUATION_TEXT),
        max_eval_windows=4,
        new_tokens=8,
        output_dir=output,
        hub_namespace=NAMESPACE,
        **overrides,
    )


def quantforge_commits(api: HfApi, repo: str) -> list[str]:
    return [c.commit_id for c in api.list_repo_commits(repo) if c.title.startswith("quantforge ")]


@pytest.fixture(scope="module")
def chain(services, tmp_path_factory):
    """SOURCE from the local Hub through the `quick` set, twice."""
    hub, _, _ = services
    request = request_for(SOURCE, tmp_path_factory.mktemp("output"))
    first = quantize_flow(request)
    commits_before = hub.requests("POST", r"/commit/")
    versions_before = sorted((v.name, int(v.version)) for v in mlflow_client().search_model_versions())
    rerun = quantize_flow(request)
    assert hub.requests("POST", r"/commit/") == commits_before  # nothing pushed again
    assert (
        sorted((v.name, int(v.version)) for v in mlflow_client().search_model_versions()) == versions_before
    )
    return first, rerun


def test_passing_variant_is_registered_pushed_and_tagged(services, chain):
    hub, _, _ = services
    first, _ = chain
    assert first.source_repo == SOURCE and len(first.source_sha) == 40
    assert {v.recipe for v in first.variants} == set(GATE_PCT)
    for result in first.variants:  # each verdict follows its measured figure; only a pass is pushed
        if result.verdict.outcome != "INCONCLUSIVE":  # an interval across the limit: either side
            within = result.ppl_increase_pct <= GATE_PCT[result.recipe]
            assert result.verdict.passed == within, result.recipe
        assert bool(result.hub_commit) == result.verdict.passed
    passed = {v.recipe: v for v in first.variants if v.verdict.passed}
    assert "int8-asym" in passed  # INT8 weight-only is near-lossless, random weights too
    int8 = passed["int8-asym"]
    version = mlflow_client().get_model_version(int8.model_name, int8.model_version)
    tags = version.tags
    repo = f"{NAMESPACE}/SmolLM2-135M-Instruct-int8-asym-ov"
    assert tags["quantforge.published"] == "true" and tags["quantforge.hub_repo"] == repo
    assert tags["quantforge.source_sha"] == first.source_sha

    api = HfApi(endpoint=hub.url, token=TOKEN)
    refs = api.list_repo_refs(repo)
    (tag,) = [t for t in refs.tags if t.name == tags["quantforge.hub_tag"]]
    assert tag.target_commit == tags["quantforge.hub_commit"] == int8.hub_commit
    files = set(api.list_repo_files(repo, revision=tag.target_commit))
    assert {"openvino_model.xml", "openvino_model.bin", "manifest.json", "README.md"} <= files

    card = Path(api.hf_hub_download(repo, "README.md", revision=tag.target_commit)).read_text()
    front_matter = card.split("---")[1]
    assert f"base_model: {SOURCE}" in front_matter and "base_model_relation: quantized" in front_matter
    assert "- openvino" in front_matter and "- nncf" in front_matter and "- int8" in front_matter
    assert (
        f"{int8.metrics.perplexity.ppl:.3f}" in card
        and f"{first.baselines['openvino'].metrics.perplexity.ppl:.3f}" in card
    )
    assert first.source_sha in card and "OVModelForCausalLM" in card and "openvino_genai" in card
    assert "Gate passed" in card


def test_rerun_does_no_work_and_pushes_nothing(chain):
    first, rerun = chain
    assert all(b.usage is None for b in rerun.baselines.values()) and all(v.reused for v in rerun.variants)
    assert [(v.recipe, v.model_version, v.hub_commit) for v in rerun.variants] == [
        (v.recipe, v.model_version, v.hub_commit) for v in first.variants
    ]


@pytest.mark.parametrize("source", ["hub", "mlflow"])
def test_a_serving_host_pulls_verifies_and_generates(services, chain, source, tmp_path):
    hub, mlflow_server, _ = services
    first, _ = chain
    int8 = next(v for v in first.variants if v.recipe == "int8-asym")
    script = (
        "import sys, openvino_genai\n"
        "from quantforge.registry.pull import pull\n"
        "path = pull(sys.argv[1], source=sys.argv[2])\n"
        "pipe = openvino_genai.LLMPipeline(str(path), 'CPU')\n"
        "text = pipe.generate('The capital of France is', max_new_tokens=8)\n"
        "print(path)\n"
        "print(repr(text))\n"
    )
    env = {  # a host with the tracking URI and the Hub endpoint only: no data of the producing side
        "PATH": os.environ["PATH"],
        "HF_HUB_DISABLE_XET": "1",
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(tmp_path / "hf-home"),
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "QUANTFORGE_HOME": str(tmp_path / "serving-home"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, f"{int8.model_name}@candidate", source],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # the installed package, not the repository's folders
    )
    assert done.returncode == 0, done.stderr[-2000:]
    path_line, text_line = done.stdout.strip().splitlines()[-2:]
    installed = Path(path_line)
    assert installed.is_relative_to(tmp_path / "serving-home")
    assert (installed / "openvino_model.bin").read_bytes() == (int8.path / "openvino_model.bin").read_bytes()
    assert not (installed / "README.md").exists()  # the model card stays on the Hub
    assert eval(text_line).strip()  # noqa: S307 - our own repr() output


@pytest.fixture
def tiny_source(services, bundled_model, tmp_path):
    """A tiny random Llama of its own on the local Hub: each fault test quantizes and pushes afresh."""
    hub, _, _ = services
    name = f"tiny-{tmp_path.name[-40:].strip('_-')}".replace("_", "-")
    folder = tiny_model("llama", tmp_path / name, bundled_model, seed=len(name))
    hub.seed_repo(f"quantforge-test/{name}", folder)
    return f"quantforge-test/{name}"


def test_hub_500_twice_then_success_pushes_once(services, tiny_source, tmp_path):
    hub, _, _ = services
    hub.inject_fault(method="POST", path_pattern=r"/commit/", status=500, times=2)
    report = quantize_flow(request_for(tiny_source, tmp_path, only=["int8-asym"]))
    (result,) = report.variants
    assert result.verdict.passed and result.hub_commit and not result.reused
    assert hub.requests("POST", r"/commit/", status=500) == 2  # both faults were hit, then retried
    api = HfApi(endpoint=hub.url, token=TOKEN)
    assert quantforge_commits(api, result.hub_repo) == [result.hub_commit]


def test_dropped_connection_during_push_is_retried(services, tiny_source, tmp_path):
    hub, _, _ = services
    hub.inject_fault(method="POST", path_pattern=r"/commit/", drop_connection=True, times=1)
    report = quantize_flow(request_for(tiny_source, tmp_path, only=["int8-asym"]))
    api = HfApi(endpoint=hub.url, token=TOKEN)
    (result,) = report.variants
    assert not result.reused and hub.requests("POST", r"/commit/", status=0) == 1
    assert quantforge_commits(api, result.hub_repo) == [result.hub_commit]


def test_hub_down_leaves_the_version_unpublished_and_a_rerun_publishes_it(services, tiny_source, tmp_path):
    hub, _, _ = services
    request = request_for(tiny_source, tmp_path, only=["int8-asym"])
    hub.inject_fault(method="POST", path_pattern=r".", status=503, times=1000)  # every write fails
    try:
        with pytest.raises(QuantforgeError, match=r"not published .*int8-asym: HfHubHTTPError"):
            quantize_flow(request)
    finally:
        hub.clear_faults()
    name = f"{tiny_source.split('/')[1].lower()}--int8-asym"
    (version,) = mlflow_client().search_model_versions(f"name = '{name}'")
    assert version.tags["quantforge.published"] == "false" and "quantforge.hub_commit" not in version.tags

    report = quantize_flow(request)  # the Hub is back
    (result,) = report.variants
    assert result.reused and result.model_version == int(version.version)
    version = mlflow_client().get_model_version(name, version.version)
    assert version.tags["quantforge.published"] == "true"
    api = HfApi(endpoint=hub.url, token=TOKEN)
    assert quantforge_commits(api, result.hub_repo) == [version.tags["quantforge.hub_commit"]]
    assert result.hub_repo == f"{NAMESPACE}/{tiny_source.split('/')[1]}-int8-asym-ov"


def test_mlflow_stopped_mid_run_fails_clearly_and_registers_nothing(services, bundled_model, tmp_path):
    """The module's server stops once the run has started, and starts again on the same database."""
    hub, server, _ = services
    folder = tiny_model("llama", tmp_path / "tiny-llama-2", bundled_model, seed=1)
    sha = hub.seed_repo("quantforge-test/tiny-llama-2", folder)
    client = mlflow_client()
    this_source = f"tags.`quantforge.source_sha` = '{sha}'"

    def runs_of_this_source() -> list:
        experiment = client.get_experiment_by_name("quantforge")
        return client.search_runs([experiment.experiment_id], this_source) if experiment else []

    def stop_once_the_run_started() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if runs_of_this_source():
                server.stop()
                return
            time.sleep(0.2)

    stopper = threading.Thread(target=stop_once_the_run_started)
    stopper.start()
    try:
        with pytest.raises(Exception, match=r"127\.0\.0\.1:\d+|Connection"):
            quantize_flow(request_for("quantforge-test/tiny-llama-2", tmp_path / "out"))
    finally:
        stopper.join()
        if server.process is None:  # stopped: start it again on the same database
            server.start()
    # What did the failed run leave?
    assert client.search_model_versions("name = 'tiny-llama-2--int8-asym'") == []
    runs = runs_of_this_source()
    assert runs and all(r.info.status != "FINISHED" for r in runs)
    assert list((tmp_path / "out").iterdir()) == []


def test_the_token_is_written_nowhere(services, chain, capfd):
    hub, _, root = services
    out, err = capfd.readouterr()
    assert files_containing(TOKEN, root, Path(os.environ["QUANTFORGE_HOME"])) == []
    assert TOKEN not in out + err
    client = mlflow_client()
    experiment = client.get_experiment_by_name("quantforge")
    for run in client.search_runs([experiment.experiment_id]):
        assert TOKEN not in json.dumps([run.data.params, run.data.tags])
