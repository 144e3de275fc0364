"""infra/ checked offline (no Docker engine, no cluster here): the files parse, refer to what exists,
and every variable they use is documented; the watchlist schema accepts the example and refuses errors.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantforge.core.errors import QuantforgeError
from quantforge.tasks.watchlist import WatchEntry, load_watchlist

INFRA = Path(__file__).resolve().parents[1] / "infra"
DOCUMENTED = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", (INFRA / "README.md").read_text(), flags=re.M)) | {
    name
    for row in re.findall(
        r"^\| (`[A-Z][A-Z0-9_]*`(?:, `[A-Z][A-Z0-9_]*`)+) \|", (INFRA / "README.md").read_text(), flags=re.M
    )
    for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)
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
        ("a: &x [1]\nwatch: *x", r"watch.yaml is not valid YAML: aliases \(\*x\) are not accepted"),
        ("# " + "x" * 70_000, r"`watchlist`: watch.yaml is larger than 64 KiB"),
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


def test_compose_servers_answer_only_credentials():
    compose_text = (INFRA / "compose.yaml").read_text()
    services = yaml.safe_load(compose_text)["services"]
    for name in ("prefect-api", "prefect-services"):  # the services call the API in-process, with it
        auth = services[name]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
        assert auth.startswith("${PREFECT_API_AUTH_STRING:?"), name  # compose refuses to start without it
    assert "--app-name basic-auth" in services["mlflow"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith(
        "${MLFLOW_ADMIN_PASSWORD:?"
    )
    worker = services["worker"]["environment"]
    assert worker["PREFECT_API_AUTH_STRING"] == "${PREFECT_API_AUTH_STRING}"
    assert (worker["MLFLOW_TRACKING_USERNAME"], worker["MLFLOW_TRACKING_PASSWORD"]) == (
        "admin",
        "${MLFLOW_ADMIN_PASSWORD}",
    )
    # The example .env names every variable compose reads, so a copy of it starts the stack.
    example = {
        line.lstrip("# ").split("=", 1)[0]
        for line in (INFRA / ".env.example").read_text().splitlines()
        if "=" in line
    }
    used = set(re.findall(r"\$\{([A-Z_]+)", compose_text))
    assert used <= example, used - example
    config = (INFRA / "mlflow-auth.ini").read_text()
    assert "database_uri = sqlite:////var/lib/mlflow-auth/" in config  # on the mlflow-auth volume
    assert "mlflow-auth:/var/lib/mlflow-auth" in services["mlflow"]["volumes"]


def test_kubernetes_servers_answer_only_credentials():
    documents = list(yaml.safe_load_all((INFRA / "k8s" / "servers.yaml").read_text()))
    by_kind: dict[str, dict[str, dict]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    containers = {
        name: d["spec"]["template"]["spec"]["containers"][0] for name, d in by_kind["Deployment"].items()
    }

    def secret(container: dict, name: str) -> dict:
        (found,) = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == name]
        return found

    assert secret(containers["prefect-api"], "PREFECT_SERVER_API_AUTH_STRING") == {
        "name": "quantforge-servers",
        "key": "prefect-auth-string",
    }
    assert "--app-name=basic-auth" in containers["mlflow"]["args"]
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert secret(containers["mlflow"], name)["name"] == "quantforge-servers"
    defined = {e["name"] for e in containers["mlflow"]["env"]} | set(
        by_kind["ConfigMap"]["quantforge-servers"]["data"]
    )
    assert set(re.findall(r"\$\(([A-Z_]+)\)", " ".join(containers["mlflow"]["args"]))) <= defined
    for volume in by_kind["Deployment"]["mlflow"]["spec"]["template"]["spec"]["volumes"]:
        assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
    # The worker's ConfigMap reaches these Services, and its credentials are required, not optional.
    worker_docs = {d["kind"]: d for d in yaml.safe_load_all((INFRA / "k8s" / "worker.yaml").read_text())}
    urls = worker_docs["ConfigMap"]["data"]
    assert set(by_kind["Service"]) == {"prefect-api", "mlflow"}
    assert urls["PREFECT_API_URL"].startswith("http://prefect-api.") and urls[
        "MLFLOW_TRACKING_URI"
    ].startswith("http://mlflow.")
    (worker,) = worker_docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    for name in ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert not secret(worker, name).get("optional", False), name
    names = {n for c in containers.values() for n in (e["name"] for e in c["env"])} | set(
        by_kind["ConfigMap"]["quantforge-servers"]["data"]
    )
    assert names <= DOCUMENTED, names - DOCUMENTED
