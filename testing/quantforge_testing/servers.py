"""Real services on 127.0.0.1 for integration tests: `mlflow server`, `prefect server`, `prefect worker`."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Service:
    """A subprocess in its own session (stopped with its children), ready once `health_url` answers."""

    health_url: str | None = None

    def __init__(self, root: Path, command: list[str], env: dict[str, str] | None = None) -> None:
        self.root = root
        self.command = command
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "Service":
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / f"{Path(self.command[0]).name}.log").open("ab")
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=log, env=self.env, start_new_session=True, cwd=self.root
        )
        deadline = time.monotonic() + timeout
        while self.health_url and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[:2]} exited: see {log.name}")
            try:
                if requests.get(self.health_url, timeout=2).ok:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy starting
                pass
            time.sleep(0.3)
        if self.health_url:
            raise RuntimeError(f"{self.command[:2]} did not start within {timeout} s")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class MlflowServer(Service):
    """`mlflow server` on sqlite with served artifacts under `root`; restartable on the same data."""

    def __init__(
        self, root: Path, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.health_url = f"{self.url}/health"
        command = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            *extra_args,
        ]
        super().__init__(root, command, {**os.environ, **env} if env else None)

    @classmethod
    def with_basic_auth(cls, root: Path, admin_password: str) -> "MlflowServer":
        """`--app-name basic-auth`, its users in `root`; the one user, `admin`, has `admin_password`."""
        root.mkdir(parents=True, exist_ok=True)
        config = root / "basic_auth.ini"
        config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{root / 'auth.db'}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env = {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key",
        }
        return cls(root, ("--app-name", "basic-auth"), env)


class PrefectServer(Service):
    """`prefect server start` on sqlite in `root` (its own PREFECT_HOME); with `auth_string`, the API
    answers only clients that send it (`PREFECT_SERVER_API_AUTH_STRING`), and `client_env` carries it."""

    def __init__(self, root: Path, auth_string: str | None = None) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.health_url = f"{self.api_url}/health"  # answered without credentials, as probes need
        self.client_env = {
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **({"PREFECT_API_AUTH_STRING": auth_string} if auth_string else {}),
        }
        server_env = {"PREFECT_SERVER_API_AUTH_STRING": auth_string} if auth_string else {}
        command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        super().__init__(root, command, {**os.environ, **self.client_env, **server_env})

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


class PrefectWorker(Service):
    """`prefect worker start` polling `pool`; its flow runs inherit `env`."""

    def __init__(
        self,
        root: Path,
        server: PrefectServer,
        pool: str,
        name: str,
        env: dict[str, str],
        extra_args: tuple[str, ...] = (),
    ) -> None:
        command = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", name, *extra_args]
        super().__init__(root / name, command, {**os.environ, **server.client_env, **env})
