"""Real servers for the tests that need one: uvicorn in a process of its own.

`LiveServer` runs `uvicorn todoapp.main:app` as `make serve` does (uvloop, httptools,
graceful shutdown), on a free port of 127.0.0.1, with the environment it is given and
nothing of the caller's app settings; its output goes to a file the test can read.
"""

import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from deploy.cluster import HOST, free_port
from deploy.cluster import app_environment as cluster_environment

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STARTED = "Application startup complete."


def app_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without its app settings, with `settings` (bcrypt cost 4)."""
    return cluster_environment({"BCRYPT_ROUNDS": "4", **settings})


class LiveServer:
    def __init__(
        self,
        settings: Mapping[str, str],
        log_path: Path,
        *,
        workers: int = 1,
        cwd: Path = ROOT,
        python: str = sys.executable,
        graceful_seconds: int = 20,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        self.workers = workers
        cmd = [python, "-m", "uvicorn", "todoapp.main:app", "--host", HOST]
        cmd += ["--port", str(self.port), "--workers", str(workers), "--loop", "uvloop"]
        cmd += ["--http", "httptools", "--no-access-log"]
        cmd += ["--timeout-graceful-shutdown", str(graceful_seconds)]
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=app_environment(settings),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, path: str = "/readyz") -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited: {self.log_text()[-2000:]}")
                try:
                    # Ready, and every worker started (each one says so once).
                    if (
                        client.get(self.url + path).status_code == 200
                        and self.log_text().count(STARTED) >= self.workers
                    ):
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"server not ready: {self.log_text()[-2000:]}")
                time.sleep(0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 40.0) -> int:
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        return self.proc.returncode
