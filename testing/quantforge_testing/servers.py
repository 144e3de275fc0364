"""Real services on 127.0.0.1 for integration tests: `mlflow server`, `prefect server` (alone on sqlite, or
API and background services apart on PostgreSQL and Redis), `prefect worker`, and what production runs them
on: PostgreSQL, Redis and an S3 endpoint (moto's server mode)."""

import configparser
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import psycopg2
import redis
import requests
from psycopg2 import sql

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Service:
    """A subprocess in its own session (stopped with its children), ready once `ready()` says so: by
    default, once `health_url` answers (at once without one)."""

    health_url: str | None = None
    stop_signal = signal.SIGTERM
    user: str | None = None  # run as this user rather than ours

    def __init__(self, root: Path, command: list[str], env: dict[str, str] | None = None) -> None:
        self.root = root
        self.command = command
        self.env = env
        self.process: subprocess.Popen | None = None
        self.log_path = root / f"{Path(command[0]).name}.log"

    def ready(self) -> bool:
        """Whether the service answers: its health URL returns a success."""
        if self.health_url is None:
            return True
        try:
            return requests.get(self.health_url, timeout=2).ok
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy starting
            return False

    def start(self, timeout: float = 120) -> "Service":
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=log,
                env=self.env,
                start_new_session=True,
                cwd=self.root,
                user=self.user,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[:2]} exited: see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.command[:2]} did not start within {timeout} s")
            time.sleep(0.3)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, self.stop_signal)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:  # half started (e.g. ready, then its set-up failed): stop what runs
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def program(name: str) -> str:
    """The path of an installed program: on PATH, else in the newest PostgreSQL of Debian's layout."""
    found = shutil.which(name) or next(
        (str(b / name) for b in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None
    )
    if found is None or not Path(found).exists():
        raise RuntimeError(
            f"`{name}` is not installed (Redis: `make redis`; PostgreSQL: Debian's postgresql)"
        )
    return found


class PostgresServer(Service):
    """PostgreSQL on 127.0.0.1 from a cluster `initdb` makes in a folder of its own, with one database and
    its owner (password auth over TCP) per entry of `databases`; restartable on the same data and port.
    Started as root, it runs as the `postgres` user, since PostgreSQL refuses root."""

    stop_signal = signal.SIGINT  # fast shutdown: open connections are closed, not waited for

    def __init__(self, root: Path, databases: dict[str, str]) -> None:
        self.port = free_port()
        self.databases = databases
        self.user = "postgres" if os.geteuid() == 0 else None
        # Outside `root`, which may sit in a folder only we can enter (pytest's tmp_path).
        self.data = Path(tempfile.mkdtemp(prefix="quantforge-postgres-"))
        if self.user:
            account = pwd.getpwnam(self.user)
            os.chown(self.data, account.pw_uid, account.pw_gid)
        self.cluster = self.data / "cluster"
        command = [
            program("postgres"),
            *("-D", str(self.cluster), "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.data)),
        ]
        super().__init__(root, command, {**os.environ, "LC_ALL": "C"})

    def url(self, database: str, driver: str = "postgresql") -> str:
        """The URL a client of `database` connects with, as its owner (`driver`: e.g. postgresql+asyncpg)."""
        return f"{driver}://{database}:{self.databases[database]}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> "psycopg2.extensions.connection":
        """A superuser connection over the cluster's own socket (trusted there, as in Debian's default)."""
        return psycopg2.connect(host=str(self.data), port=self.port, user="postgres", dbname=database)

    def ready(self) -> bool:
        try:
            self.connect().close()
        except psycopg2.OperationalError:  # not listening yet, or still starting up
            return False
        return True

    def start(self, timeout: float = 120) -> "PostgresServer":
        if not (self.cluster / "PG_VERSION").exists():
            subprocess.run(
                [
                    program("initdb"),
                    *("-D", str(self.cluster), "-U", "postgres", "-E", "UTF8", "--locale", "C"),
                    *("--auth-local", "trust", "--auth-host", "scram-sha-256"),
                ],
                cwd=self.data,
                user=self.user,
                check=True,
                capture_output=True,
            )
        super().start(timeout)
        self.create_databases()
        return self

    def create_databases(self) -> None:
        """Each database of `databases` and its owner, unless they exist."""
        connection = self.connect()
        connection.autocommit = True  # CREATE DATABASE runs outside transactions (so no `with connection`)
        with contextlib.closing(connection), connection.cursor() as cursor:
            for name, password in self.databases.items():
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(
                        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                            sql.Identifier(name), sql.Literal(password)
                        )
                    )
                    cursor.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(name), sql.Identifier(name)
                        )
                    )

    def restart(self) -> None:
        """Stop (fast shutdown: every client loses its connections) and start again on the same data."""
        self.stop()
        self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


class RedisServer(Service):
    """`redis-server` on 127.0.0.1, in memory only."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        command = [
            program("redis-server"),
            *("--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"),
            *("--dir", str(root)),
        ]
        super().__init__(root, command)

    def ready(self) -> bool:
        try:
            return redis.Redis(port=self.port, socket_timeout=2).ping()
        except redis.ConnectionError:
            return False


class S3Server(Service):
    """An S3 endpoint on 127.0.0.1 (moto's server mode, in memory) holding `bucket`; `client_env` is what an
    S3 client of it (the real boto3, MLflow's artifact store) needs."""

    def __init__(self, root: Path, bucket: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.health_url = f"{self.url}/moto-api/"
        self.bucket = bucket
        self.client_env = {
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "quantforge-test",
            "AWS_SECRET_ACCESS_KEY": "quantforge-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        super().__init__(root, [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)])

    def client(self):  # noqa: ANN201 (boto3's clients are generated classes)
        """A boto3 S3 client of this endpoint."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.client_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.client_env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.client_env["AWS_DEFAULT_REGION"],
        )

    def start(self, timeout: float = 120) -> "S3Server":
        super().start(timeout)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


# MLflow 3's server starts a job runner and six huey consumers (GenAI scorers, trace rollups) beside
# itself when its store is a database; quantforge runs no MLflow job. Measured on this 2-core host, one
# sqlite server 20 s after start: 10 processes, 36.6 s of CPU, 2.4 GiB RSS with them; 2, 7.6 s, 0.5 GiB
# without. compose.yaml and k8s/servers.yaml set the same (tests/test_infra.py checks).
MLFLOW_SERVER_SETTINGS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# The basic-auth configuration compose and k8s mount (this package sits beside infra/ in the repository).
MLFLOW_AUTH_CONFIG = Path(__file__).resolve().parents[2] / "infra" / "mlflow-auth.ini"


class MlflowServer(Service):
    """`mlflow server` with served artifacts: by default on sqlite with the artifacts under `root`
    (restartable on the same data), or on `backend_store_uri` (e.g. PostgreSQL) and
    `artifacts_destination` (e.g. `s3://bucket/artifacts`, with the S3 endpoint's variables in `env`);
    with `allowed_hosts`, it answers those Host headers only (MLflow's default: localhost, private IPs)."""

    def __init__(
        self,
        root: Path,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        allowed_hosts: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.health_url = f"{self.url}/health"
        command = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            artifacts_destination or str(root / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            *(("--allowed-hosts", allowed_hosts) if allowed_hosts else ()),
            *extra_args,
        ]
        super().__init__(root, command, {**os.environ, **MLFLOW_SERVER_SETTINGS, **(env or {})})

    @classmethod
    def with_basic_auth(
        cls, root: Path, admin_password: str, env: dict[str, str] | None = None, **options: str
    ) -> "MlflowServer":
        """`--app-name basic-auth` with infra/mlflow-auth.ini, the configuration production runs, but its
        users in `root`; the one user, `admin`, has `admin_password`; `options` are the other keyword
        arguments (the stores, the allowed hosts)."""
        root.mkdir(parents=True, exist_ok=True)
        shipped = configparser.ConfigParser()
        shipped.read_string(MLFLOW_AUTH_CONFIG.read_text())
        shipped["mlflow"]["database_uri"] = f"sqlite:///{root / 'auth.db'}"
        config = root / "basic_auth.ini"
        with config.open("w") as out:
            shipped.write(out)
        auth_env = {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key",
        }
        return cls(root, ("--app-name", "basic-auth"), {**auth_env, **(env or {})}, **options)


def prefect_redis_settings(database_url: str, redis_host: str, redis_port: int) -> dict[str, str]:
    """What both halves of a Prefect server apart in API and background services need (Prefect's
    self-hosting guide): PostgreSQL, no migration at start (a one-shot does it), and Redis for messaging,
    cache, causal ordering, concurrency leases and the background services' docket."""
    return {
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": redis_host,
        "PREFECT_REDIS_MESSAGING_PORT": str(redis_port),
        "PREFECT_REDIS_MESSAGING_DB": "0",
        "PREFECT_SERVER_DOCKET_URL": f"redis://{redis_host}:{redis_port}/1",
    }


class PrefectServer(Service):
    """`prefect server start` in `root` (its own PREFECT_HOME): alone on sqlite, or with `database_url`
    and `redis_server`, as production runs it: the schema migrated by a one-shot, then the API
    (`--no-services`) and the background services (`prefect server services start`) as two processes
    on PostgreSQL and Redis. With `auth_string`, the API answers only clients that send it
    (`PREFECT_SERVER_API_AUTH_STRING`), and `client_env` carries it."""

    def __init__(
        self,
        root: Path,
        auth_string: str | None = None,
        database_url: str | None = None,
        redis_server: RedisServer | None = None,
    ) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.health_url = f"{self.api_url}/health"  # answered without credentials, as probes need
        self.client_env = {
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **({"PREFECT_API_AUTH_STRING": auth_string} if auth_string else {}),
        }
        self.server_env = {
            **os.environ,
            **self.client_env,
            **({"PREFECT_SERVER_API_AUTH_STRING": auth_string} if auth_string else {}),
            **(
                prefect_redis_settings(database_url, "127.0.0.1", redis_server.port)
                if database_url and redis_server
                else {}
            ),
        }
        command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self.services: PrefectServices | None = None
        if database_url and redis_server:
            command.append("--no-services")
            self.services = PrefectServices(root / "services", self.server_env, redis_server)
        super().__init__(root, command, self.server_env)

    def start(self, timeout: float = 120) -> "PrefectServer":
        if self.services is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as log:  # the one-shot: `prefect server database upgrade -y`
                subprocess.run(
                    [str(BIN / "prefect"), "server", "database", "upgrade", "-y"],
                    env=self.env,
                    stdout=log,
                    stderr=log,
                    check=True,
                    timeout=timeout,
                )
        super().start(timeout)
        if self.services is not None:
            self.services.start(timeout)
        return self

    def stop(self) -> None:
        if self.services is not None:
            self.services.stop()
        super().stop()

    def cli(self, *args: str) -> str:
        """Run a `prefect` CLI command against this server; return its output."""
        done = subprocess.run(
            [str(BIN / "prefect"), *args],
            env={**os.environ, **self.client_env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout


class PrefectServices(Service):
    """`prefect server services start`: the scheduler, the triggers and the other loops, apart from the
    API. Ready once its event consumers have joined Redis' `events` stream: from then on, an event
    posted to the API reaches the triggers."""

    CONSUMERS = frozenset({"event-persister", "reactive-triggers"})

    def __init__(self, root: Path, env: dict[str, str], redis_server: RedisServer) -> None:
        self.redis_server = redis_server
        super().__init__(root, [str(BIN / "prefect"), "server", "services", "start"], env)

    def ready(self) -> bool:
        client = redis.Redis(port=self.redis_server.port, socket_timeout=2, decode_responses=True)
        try:
            groups = client.xinfo_groups("events")
        except redis.ResponseError:  # no stream yet: nobody has subscribed
            return False
        return self.CONSUMERS <= {group["name"] for group in groups if group["consumers"]}


class PrefectWorker(Service):
    """`prefect worker start` polling `pool`, or, with `start_script`, that script as a worker host runs
    it (infra/start-worker.sh: the pool and name in its variables, `extra_args` passed through); its flow
    runs inherit `env`."""

    def __init__(
        self,
        root: Path,
        server: PrefectServer,
        pool: str,
        name: str,
        env: dict[str, str],
        extra_args: tuple[str, ...] = (),
        start_script: Path | None = None,
    ) -> None:
        if start_script is None:
            command = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", name, *extra_args]
        else:
            command = ["/bin/sh", str(start_script), *extra_args]
        script_env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "QUANTFORGE_WORK_POOL": pool,
            "QUANTFORGE_WORKER_NAME": name,
            # Scheduled runs picked up within a second, not Prefect's 10: tests wait on runs, not polls.
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        }
        super().__init__(root / name, command, {**os.environ, **server.client_env, **script_env, **env})
