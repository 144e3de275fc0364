"""infra/ checked offline (no Docker engine, no cluster here): compose.yaml against the Compose
Specification's JSON schema, the Kubernetes manifests against Kubernetes' own schemas
(kubernetes-validate, strict: unknown fields are errors), both against what tests/test_triggers.py runs
on loopback (the same programs and settings); the files refer to what exists and every variable they use
is documented; the watchlist schema accepts the example and refuses errors.

tests/schemas/compose-spec.json is the schema of github.com/compose-spec/compose-spec
(schema/compose-spec.json, Apache-2.0: LICENSE.compose-spec beside it), as check-jsonschema 0.39.0
vendors it (check_jsonschema/builtin_schemas/vendor/ in its wheel on PyPI).
"""

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from quantforge.core.errors import QuantforgeError
from quantforge.tasks.watchlist import WatchEntry, load_watchlist
from quantforge_testing.servers import MLFLOW_SERVER_SETTINGS, prefect_redis_settings

INFRA = Path(__file__).resolve().parents[1] / "infra"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
KUBERNETES = "1.33.0"  # the oldest Kubernetes release still maintained when these manifests were checked
DOCUMENTED = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", (INFRA / "README.md").read_text(), flags=re.M)) | {
    name
    for row in re.findall(
        r"^\| (`[A-Z][A-Z0-9_]*`(?:, `[A-Z][A-Z0-9_]*`)+) \|", (INFRA / "README.md").read_text(), flags=re.M
    )
    for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)
}
QUANTFORGE_IMAGE = "quantforge:0.1.0"  # infra/worker.Dockerfile's image, which every quantforge process runs


def example_env() -> dict[str, str]:
    """The variables of .env.example (commented-out ones unset)."""
    lines = (INFRA / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def interpolated(text: str, env: dict[str, str]) -> str:
    """`text` with Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` replaced from `env`, as
    `docker compose config` does (an unset required variable is an error), and `$$` as `$`."""

    def value(match: re.Match) -> str:
        found = env.get(match["name"], "")
        if not found and match["op"] == ":?":
            raise ValueError(f"{match['name']}: {match['arg']}")
        return found or (match["arg"] if match["op"] == ":-" else "")

    pattern = r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}"
    return re.sub(pattern, value, text).replace("$$", "$")


def compose_config() -> dict:
    """compose.yaml as Compose reads it with .env.example's values (YAML merge keys resolved)."""
    return yaml.safe_load(interpolated((INFRA / "compose.yaml").read_text(), example_env()))


def compose_errors(config: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(config)]


def kubernetes_documents() -> dict[str, dict]:
    """Every manifest of infra/k8s/, by `kind/name`."""
    return {
        f"{d['kind']}/{d['metadata']['name']}": d
        for path in sorted((INFRA / "k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
    }


def test_compose_file_is_valid_compose():
    config = compose_config()
    assert compose_errors(config) == []
    broken = copy.deepcopy(config)  # the schema refuses what Compose refuses: an unknown key, a bad type
    broken["services"]["worker"]["restrat"] = "always"
    broken["services"]["mlflow"]["ports"] = "5000:5000"
    errors = compose_errors(broken)
    assert any("'restrat' was unexpected" in error for error in errors), errors
    assert "['services', 'mlflow', 'ports']: '5000:5000' is not of type 'array'" in errors
    with pytest.raises(ValueError, match="PREFECT_DB_PASSWORD: set PREFECT_DB_PASSWORD in .env"):
        interpolated((INFRA / "compose.yaml").read_text(), {})


def test_compose_services_are_consistent():
    compose = compose_config()
    services = compose["services"]
    for name, service in services.items():
        image = service["image"]
        assert not image.endswith(":latest") and ":" in image, f"{name} is not pinned"
        if "build" in service:
            assert (INFRA.parent / service["build"]["dockerfile"]).exists()
            assert image == QUANTFORGE_IMAGE, name
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                assert volume.split(":")[0] in compose["volumes"], f"{name}: undeclared volume {volume}"
            else:
                assert (INFRA / volume["source"]).with_name("watchlist.example.yaml").exists()
        # Servers come back after a crash or a reboot; one-shots are retried until they succeed.
        assert service["restart"] in ("unless-stopped", "on-failure"), name
        if service["restart"] == "unless-stopped" and name != "prefect-services":
            assert "healthcheck" in service, f"{name} has no health check"
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = "service_healthy" if "healthcheck" in services[dependency] else None
            if services[dependency]["restart"] == "on-failure":
                wanted = "service_completed_successfully"
            assert condition["condition"] == (wanted or "service_started"), f"{name} → {dependency}"
    used = set(re.findall(r"\$\{([A-Z_]+)", (INFRA / "compose.yaml").read_text()))
    assert used <= DOCUMENTED | {"HF_TOKEN"}, used - DOCUMENTED
    environment = {key for service in services.values() for key in service.get("environment", {})}
    assert environment <= DOCUMENTED | {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}, (
        environment - DOCUMENTED
    )


def test_compose_runs_what_the_stack_test_runs():
    """The Prefect halves, MLflow and the worker have the settings and commands the test proved."""
    services = compose_config()["services"]
    for name in ("prefect-migrate", "prefect-api", "prefect-services"):
        environment = services[name]["environment"]
        database = environment["PREFECT_API_DATABASE_CONNECTION_URL"]
        assert database.startswith("postgresql+asyncpg://prefect:")
        proven = prefect_redis_settings(database, "redis", 6379)
        assert {key: environment.get(key) for key in proven} == proven, name
        assert services[name]["image"] == QUANTFORGE_IMAGE  # prefect-redis baked in, from the lock
    assert services["prefect-migrate"]["command"] == ["server", "database", "upgrade", "-y"]
    assert services["prefect-api"]["command"][-1] == "--no-services"
    assert services["prefect-services"]["command"] == ["server", "services", "start"]
    # The pool and deployments come from deploy.py on the watchlist the workers read, before any worker.
    init, worker = services["prefect-init"], services["worker"]
    assert init["entrypoint"] == ["python", "infra/deploy.py"]
    (watchlist,) = [v for v in worker["volumes"] if isinstance(v, dict)]
    assert init["command"] == ["--watchlist", watchlist["target"]] and watchlist in init["volumes"]
    assert worker["depends_on"]["prefect-init"] == {"condition": "service_completed_successfully"}
    mlflow = services["mlflow"]["command"].split()
    assert mlflow[mlflow.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")
    assert mlflow[mlflow.index("--artifacts-destination") + 1] == "s3://mlflow/artifacts"
    assert "mlflow:5000" in mlflow[mlflow.index("--allowed-hosts") + 1].split(",")  # the worker's Host
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert MLFLOW_SERVER_SETTINGS.items() <= services["mlflow"]["environment"].items()
    assert services["minio"]["image"].startswith("quay.io/minio/minio:RELEASE.")  # Docker Hub has none


def test_worker_image_and_start_script():
    dockerfile = (INFRA / "worker.Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \./$", dockerfile, flags=re.M):
        for name in source.split():
            assert name == "." or (INFRA.parent / name).exists(), name
    assert "requirements.lock" in dockerfile and "--no-deps" in dockerfile  # the pinned stack, as tested
    lock = (INFRA.parent / "requirements.lock").read_text()
    assert "prefect-redis==" in lock and "psycopg2-binary==" in lock and "boto3==" in lock
    if re.search(r"^torch==.*\+cpu$", lock, flags=re.M):  # PyPI has no `+cpu` builds: PyTorch's index
        assert "--extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock" in " ".join(
            dockerfile.replace("\\\n", " ").split()
        )
    assert subprocess.run(["sh", "-n", str(INFRA / "start-worker.sh")]).returncode == 0
    used = set(re.findall(r"\$\{?([A-Z][A-Z_]+)", (INFRA / "start-worker.sh").read_text()))
    assert used <= DOCUMENTED, used - DOCUMENTED


def test_kubernetes_manifests_are_valid_kubernetes():
    documents = kubernetes_documents()
    for key, document in documents.items():
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "quantforge", key
    assert "Namespace/quantforge" in documents
    broken = copy.deepcopy(documents["StatefulSet/quantforge-worker"])
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_kubernetes_manifests_are_complete():
    documents = kubernetes_documents()
    workers = documents["StatefulSet/quantforge-worker"]
    pod = workers["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert (
        workers["spec"]["selector"]["matchLabels"].items()
        <= workers["spec"]["template"]["metadata"]["labels"].items()
    )
    config = documents["ConfigMap/quantforge"]["data"]
    limit_gib = int(container["resources"]["limits"]["memory"].removesuffix("Gi"))
    assert container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"]
    assert int(config["QUANTFORGE_MEMORY_GIB"]) <= limit_gib  # slots fit the pod
    # The cache is a volume per pod that outlives it, not an emptyDir.
    (claim,) = workers["spec"]["volumeClaimTemplates"]
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}[claim["metadata"]["name"]] == (
        "/var/lib/quantforge"
    )
    assert all("emptyDir" not in volume for volume in pod["volumes"])
    names = set(config) | {e["name"] for e in container["env"]}
    assert names <= DOCUMENTED, names - DOCUMENTED
    for key, document in documents.items():  # every quantforge process runs the image of the lock
        if document["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = document["spec"]["template"]["spec"]
            for each in spec.get("initContainers", []) + spec["containers"]:
                assert each["image"] in (QUANTFORGE_IMAGE, "redis:7"), key


def test_kubernetes_runs_what_the_stack_test_runs():
    documents = kubernetes_documents()
    servers = documents["ConfigMap/quantforge-servers"]["data"]
    api = documents["Deployment/prefect-api"]["spec"]["template"]["spec"]
    for container in api["initContainers"] + api["containers"]:  # the database URL is a Secret's
        database = {e["name"]: e for e in container["env"]}["PREFECT_API_DATABASE_CONNECTION_URL"]
        assert database["valueFrom"]["secretKeyRef"]["key"] == "prefect-database-url"
    proven = prefect_redis_settings("(the secret)", "redis", 6379)
    del proven["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert {key: servers.get(key) for key in proven} == proven
    assert api["initContainers"][0]["command"] == ["prefect", "server", "database", "upgrade", "-y"]
    assert api["containers"][0]["command"][-1] == "--no-services"
    (services,) = documents["Deployment/prefect-services"]["spec"]["template"]["spec"]["containers"]
    assert services["command"] == ["prefect", "server", "services", "start"]
    init = documents["Job/prefect-init"]["spec"]["template"]["spec"]
    assert init["containers"][0]["command"][:2] == ["python", "infra/deploy.py"]
    worker = documents["StatefulSet/quantforge-worker"]["spec"]["template"]["spec"]
    assert init["volumes"] == worker["volumes"]  # the watchlist the deployments name is the workers'
    (mlflow,) = documents["Deployment/mlflow"]["spec"]["template"]["spec"]["containers"]
    assert "--allowed-hosts=$(MLFLOW_SERVER_ALLOWED_HOSTS)" in mlflow["args"]
    assert "mlflow.quantforge.svc:5000" in servers["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert MLFLOW_SERVER_SETTINGS.items() <= servers.items()
    assert {"Service/prefect-api", "Service/mlflow", "Service/redis"} <= set(documents)


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
        ("watch: [{model: a/b, settings: {recipez: x}}]", r"watch\[0\]: unknown request setting recipez"),
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
    services = yaml.safe_load(compose_text)["services"]  # not interpolated: the `${…:?…}` forms are read
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
    # A password checked once per 30 s per server worker, not on every request; a changed one refused
    # by every worker within that time.
    assert "\nauth_cache_ttl_seconds = 30\n" in config
    assert "mlflow-auth:/var/lib/mlflow-auth" in services["mlflow"]["volumes"]


def test_kubernetes_servers_answer_only_credentials():
    documents = list(yaml.safe_load_all((INFRA / "k8s" / "servers.yaml").read_text()))
    by_kind: dict[str, dict[str, dict]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    containers = {
        name: d["spec"]["template"]["spec"]["containers"][0]
        for name, d in by_kind["Deployment"].items()
        if name != "redis"
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
    assert set(by_kind["Service"]) == {"prefect-api", "mlflow", "redis"}
    assert urls["PREFECT_API_URL"].startswith("http://prefect-api.") and urls[
        "MLFLOW_TRACKING_URI"
    ].startswith("http://mlflow.")
    (worker,) = worker_docs["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    for name in ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert not secret(worker, name).get("optional", False), name
    names = {n for c in containers.values() for n in (e["name"] for e in c["env"])} | set(
        by_kind["ConfigMap"]["quantforge-servers"]["data"]
    )
    assert names <= DOCUMENTED, names - DOCUMENTED


def test_uv_installs_from_the_sources_pip_is_configured_with():
    """`make install` hands uv what `pip config list` names: a PIP_* variable over an [install] value over
    a [global] one, each of several values its own option, constraint files kept, every index considered
    as pip does."""
    spec = importlib.util.spec_from_file_location("pip_sources", INFRA / "pip_sources.py")
    pip_sources = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pip_sources)
    listing = (  # the shape of pip 23's output on this machine, values changed
        ":env:.default-timeout='180'\n"
        ":env:.find-links='/opt/wheels'\n"
        "global.constraint='/etc/xdg/pip/constraints.txt'\n"
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'\n"
        "global.find-links='/srv/old-wheels'\n"
        "global.index-url='https://mirror.example.org/simple'\n"
        "install.constraint='/srv/install-constraints.txt'\n"
        "download.index-url='https://elsewhere.example.org/simple'\n"
    )
    assert pip_sources.uv_options(listing) == [
        *("--index-strategy", "unsafe-best-match"),
        *("--index-url", "https://mirror.example.org/simple"),
        *("--extra-index-url", "file:///opt/pypi/simple"),
        *("--extra-index-url", "file:///opt/pypi-more/simple"),
        *("--find-links", "/opt/wheels"),
        *("--constraint", "/srv/install-constraints.txt"),
    ]
    # pip's own listing: no configuration file, two sources in variables.
    env = {
        "PATH": os.environ["PATH"],
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_FIND_LINKS": "/srv/wheels",
        "PIP_EXTRA_INDEX_URL": "file:///srv/a/simple file:///srv/b/simple",
    }
    printed = subprocess.run(
        [sys.executable, str(INFRA / "pip_sources.py")], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert printed == [
        *("--index-strategy", "unsafe-best-match"),
        *("--extra-index-url", "file:///srv/a/simple"),
        *("--extra-index-url", "file:///srv/b/simple"),
        *("--find-links", "/srv/wheels"),
    ]
