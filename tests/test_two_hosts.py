"""Two hosts, one identity: one model version survives, `candidate` resolves, the Hub holds its bytes.

A host that registers is killed (SIGKILL) at a barrier between two MLflow calls: the child process
stops inside the client method named, tells the parent, and the parent kills it there. Then the next
run's step runs in this process against the same sqlite MLflow. Variants are small synthetic folders
(tests/test_registry.py); the Hub is quantforge's local Hub endpoint.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from quantforge.core.manifest import MANIFEST_FILE, Manifest, is_intact, read_manifest
from quantforge.registry.aliases import promote
from quantforge.registry.pull import pull
from quantforge.registry.registered import registered_files
from quantforge.registry.tracking import mlflow_client
from quantforge.registry.variants import identity_key, lookup, record_publication
from quantforge.tasks.publish import DEFAULT_REPO_TEMPLATE, hub_repo_id, publish_variant
from quantforge_testing.hub import HubServer
from tests.test_registry import EVAL_HASH, SOURCE, make_variant, record

ROOT = Path(__file__).parents[1]
NAME = "smollm2-135m-instruct--int4-awq-se"
TOKEN = "hf_twoHostsTestToken"


@pytest.fixture(scope="module")
def empty_database(tmp_path_factory) -> Path:
    """An MLflow sqlite database with its tables made once: creating them takes seconds."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking(empty_database, tmp_path, monkeypatch) -> MlflowClient:
    """A fresh copy of the empty database: each test its own registry."""
    shutil.copy(empty_database, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return mlflow_client()


def _record_until(method: str, folder: str) -> None:
    """In the child: record the variant of `folder`, and stop for good when MlflowClient.`method` is
    called (before it reaches MLflow), so that the parent kills the process exactly there."""

    def barrier(*_args, **_kwargs) -> None:
        print(f"at {method}", flush=True)
        sys.stdin.read()  # the parent keeps stdin open and kills this process

    setattr(MlflowClient, method, barrier)
    record(Path(folder), read_manifest(Path(folder)), 21.0)


def kill_9_at(method: str, folder: Path) -> None:
    """Register `folder` in a child process (same MLFLOW_TRACKING_URI) and SIGKILL it at `method`."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import tests.test_two_hosts as t; t._record_until({method!r}, {str(folder)!r})",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    reached = child.stdout.readline()  # waits for the barrier, or for the child's end (EOF)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert reached == f"at {method}\n", child.stderr.read()[-3000:]
    assert child.returncode == -signal.SIGKILL


def versions(client: MlflowClient) -> dict[int, list[str]]:
    """Version number -> its aliases."""
    numbers = [int(v.version) for v in client.search_model_versions(f"name = '{NAME}'")]
    aliases = client.get_registered_model(NAME).aliases.items()
    return {n: sorted(alias for alias, version in aliases if int(version) == n) for n in sorted(numbers)}


def test_kill_9_between_creating_a_version_and_its_alias_then_the_next_run_completes_it(tracking, tmp_path):
    manifest = make_variant(tmp_path / "v", "a" * 40)
    kill_9_at("set_registered_model_alias", tmp_path / "v")
    assert versions(tracking) == {1: []}  # created, `candidate` never set
    assert tracking.get_model_version(NAME, "1").tags["quantforge.registration"] == "pending"
    identity = identity_key(SOURCE, "a" * 40, manifest.variant_identity)
    assert lookup(identity, EVAL_HASH) is None  # the killed run never finished: the next run records it

    recorded = record(tmp_path / "v", manifest, 21.0)
    assert recorded.model_version == 1
    assert versions(tracking) == {1: ["candidate"]}
    assert tracking.get_model_version(NAME, "1").tags["quantforge.registration"] == "complete"
    assert pull(f"{NAME}@candidate", tmp_path / "serving") == tmp_path / "serving"


def test_kill_9_before_the_losing_host_deletes_its_version_then_the_next_lookup_removes_it(
    tracking, tmp_path
):
    won = record(tmp_path / "a", make_variant(tmp_path / "a", "a" * 40), 21.0)
    make_variant(tmp_path / "b", "a" * 40)  # the same identity, other bytes (another host's run)
    kill_9_at("delete_model_version", tmp_path / "b")
    assert versions(tracking) == {1: ["candidate"], 2: []}
    promote(NAME, 2, "champion")  # someone promoted the duplicate before the repair

    found = lookup(won.identity, EVAL_HASH)  # what the next run of the identity asks first
    assert found.model_version == 1
    assert versions(tracking) == {1: ["candidate", "champion"]}  # the promotion stays with its identity


def test_completing_a_registration_never_undoes_a_later_or_deliberate_alias(tracking, tmp_path):
    """`candidate` moves forward only: a registration completed late does not take it back from a newer
    version, and a completed version is never aliased again, whoever moved the alias since."""
    old = make_variant(tmp_path / "old", "a" * 40)
    kill_9_at("set_registered_model_alias", tmp_path / "old")  # version 1, pending
    new = record(tmp_path / "new", make_variant(tmp_path / "new", "b" * 40), 21.0)
    assert new.model_version == 2 and versions(tracking) == {1: [], 2: ["candidate"]}

    assert record(tmp_path / "old", old, 21.0).model_version == 1  # rerun of the old source sha
    assert versions(tracking) == {1: [], 2: ["candidate"]}
    assert tracking.get_model_version(NAME, "1").tags["quantforge.registration"] == "complete"

    promote(NAME, 1, "candidate")  # a human rolls `candidate` back on purpose
    make_variant(tmp_path / "again", "b" * 40)  # another host makes the newer identity once more
    assert record(tmp_path / "again", read_manifest(tmp_path / "again"), 21.0).model_version == 2
    assert lookup(new.identity, EVAL_HASH).model_version == 2
    assert versions(tracking) == {1: ["candidate"], 2: []}


def test_the_losing_host_publishes_the_registered_bytes_and_a_hub_pull_installs_them(
    tracking, tmp_path, monkeypatch
):
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    make_variant(host_a, "a" * 40)
    make_variant(host_b, "a" * 40)  # a nondeterministic quantization: same identity, other weights
    assert (host_a / MANIFEST_FILE).read_bytes() != (host_b / MANIFEST_FILE).read_bytes()
    assert record(host_a, read_manifest(host_a), 21.0).model_version == 1
    assert record(host_b, read_manifest(host_b), 21.0).model_version == 1  # host b lost the race
    assert versions(tracking) == {1: ["candidate"]}

    assert registered_files(NAME, 1, host_a) == host_a  # the winner's own folder holds the registered bytes
    published = registered_files(NAME, 1, host_b)  # the loser's does not: the version's files, verified
    assert published != host_b
    assert (published / "openvino_model.bin").read_bytes() == (host_a / "openvino_model.bin").read_bytes()

    with HubServer(tmp_path / "hub", tokens={TOKEN: "quantforge-bot"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        manifest = read_manifest(published)  # host b publishes, as the flow's publish step does
        repo = hub_repo_id(DEFAULT_REPO_TEMPLATE, "quantforge-ci", SOURCE, manifest.recipe_name)
        pushed = publish_variant(published, manifest, "a model card", repo, private=False)
        record_publication(NAME, 1, pushed.repo, pushed.commit, pushed.tag)

        dest = tmp_path / "serving"
        env = {
            "PATH": os.environ["PATH"],
            "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": TOKEN,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path / "hf-home"),
            "QUANTFORGE_HOME": str(tmp_path / "serving-home"),
        }
        quantforge = str(Path(sys.executable).with_name("quantforge"))
        command = [quantforge, "pull", f"{NAME}/1", "--from", "hub", "--dest", str(dest)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("openvino_model.bin", "openvino_model.xml", MANIFEST_FILE):
        assert (dest / name).read_bytes() == (host_a / name).read_bytes()


def test_a_variant_cached_with_the_old_manifest_format_is_read_registered_and_pulled_as_is(
    tracking, tmp_path
):
    """Manifests written before run-time figures moved to MLflow metrics hold `quantize`: still read,
    and their bytes are what the registry pins."""
    assert "quantize" not in Manifest.model_fields
    folder = tmp_path / "v"
    make_variant(folder, "a" * 40)
    written = json.loads((folder / MANIFEST_FILE).read_text())
    (folder / MANIFEST_FILE).write_text(
        json.dumps({**written, "quantize": {"seconds": 9.5, "peak_rss_mb": 800.0}})
    )
    assert is_intact(folder)

    assert record(folder, read_manifest(folder), 21.0).model_version == 1
    dest = pull(f"{NAME}@candidate", tmp_path / "serving")
    assert (dest / MANIFEST_FILE).read_bytes() == (folder / MANIFEST_FILE).read_bytes()
