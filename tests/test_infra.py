"""infra/ checked offline (no Docker engine, no cluster here): the files parse, refer to what exists,
and every variable they use is documented; the watchlist schema accepts the example and refuses errors.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantforge.errors import QuantforgeError
from tasks.watchlist import WatchEntry, load_watchlist

INFRA = Path(__file__).resolve().parents[1] / "infra"
DOCUMENTED = set(re.findall(r"^\| `([A-Z_]+)`", (INFRA / "README.md").read_text(), flags=re.M)) | {
    name
    for row in re.findall(
        r"^\| (`[A-Z_]+`(?:, `[A-Z_]+`)+) \|", (INFRA / "README.md").read_text(), flags=re.M
    )
    for name in re.findall(r"`([A-Z_]+)`", row)
}


def test_compose_services_are_consistent():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        image = service.get("image", "")
        assert not image.endswith(":latest") and (":" in image or "build" in service), f"{name} is not pinned"
        depends = service.get("depends_on", [])
        assert set(depends) <= set(services), f"{name} depends on an unknown service"
        if "build" in service:
            assert (INFRA.parent / service["build"]["dockerfile"]).exists()
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], f"{name}: undeclared volume {volume}"
    used = set(re.findall(r"\$\{([A-Z_]+)", (INFRA / "compose.yaml").read_text()))
    assert used <= DOCUMENTED | {"HF_TOKEN"}, used - DOCUMENTED


def test_worker_image_and_start_script():
    dockerfile = (INFRA / "worker.Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \./$", dockerfile, flags=re.M):
        for name in source.split():
            assert name == "." or (INFRA.parent / name).exists(), name
    assert "requirements.lock" in dockerfile and "--no-deps" in dockerfile  # the pinned stack, as tested
    assert subprocess.run(["sh", "-n", str(INFRA / "start-worker.sh")]).returncode == 0
    used = set(re.findall(r"\$\{?([A-Z][A-Z_]+)", (INFRA / "start-worker.sh").read_text()))
    assert used <= DOCUMENTED, used - DOCUMENTED


def test_kubernetes_manifests_are_complete():
    documents = list(yaml.safe_load_all((INFRA / "k8s" / "worker.yaml").read_text()))
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"ConfigMap", "Deployment"}
    for document in documents:
        assert document["apiVersion"] and document["metadata"]["name"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert kinds["Deployment"]["spec"]["selector"]["matchLabels"].items() <= (
        kinds["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )
    limit_gib = int(container["resources"]["limits"]["memory"].removesuffix("Gi"))
    assert int(kinds["ConfigMap"]["data"]["QUANTFORGE_MEMORY_GIB"]) <= limit_gib  # slots fit the pod
    names = set(kinds["ConfigMap"]["data"]) | {e["name"] for e in container["env"]}
    assert names <= DOCUMENTED, names - DOCUMENTED


def test_deploy_script_help_is_accurate():
    done = subprocess.run(
        [sys.executable, str(INFRA / "deploy.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    for option in ("--watchlist", "--work-pool", "--source", "--watch-interval", "--sweep-cron"):
        assert option in done.stdout


def test_example_watchlist_is_valid():
    watchlist = load_watchlist(INFRA / "watchlist.example.yaml")
    request = watchlist.request_for(watchlist.watch[1], "Qwen/Qwen2.5-0.5B-Instruct", "a" * 40)
    assert request.gates.max_ppl_increase_pct == 8 and request.hub_namespace == "my-org"
    assert request.revision == "a" * 40


@pytest.mark.parametrize(
    "content, message",
    [
        ("watch: []", r"`watch`: List should have at least 1 item"),
        ("watch: [{model: a/b, author: c}]", r"`watch.0`: give exactly one of `model` or `author`"),
        ("watch: [{model: a/b, settings: {recipe: x}}]", r"watch\[0\]: unknown request setting recipe"),
        ("defaults: {window: 3}\nwatch: [{model: a/b}]", r"`window`"),
        ("watch: [{model: 'not a repo id'}]", r"`watch.0.model`: String should match pattern"),
        ("watch: [", r"is not valid YAML"),
    ],
)
def test_bad_watchlists_are_refused_naming_the_field(tmp_path, content, message):
    path = tmp_path / "watch.yaml"
    path.write_text(content)
    with pytest.raises(QuantforgeError, match=message):
        load_watchlist(path)


def test_author_entry_filters():
    entry = WatchEntry(author="microsoft", name_pattern="Phi-*-mini-*", max_parameters=4e9)
    assert entry.accepts("microsoft/Phi-3-mini-4k-instruct", "text-generation", 3_800_000_000)
    assert not entry.accepts("microsoft/Phi-3-medium-4k-instruct", "text-generation", 14_000_000_000)
    assert not entry.accepts("microsoft/Phi-3-mini-4k-instruct", "text-generation", 5_000_000_000)
    assert not entry.accepts("microsoft/Phi-3-mini-4k-instruct", "image-classification", None)
    assert entry.accepts("microsoft/Phi-3-mini-128k-instruct", "text-generation", None)  # size unknown
