"""Start and stop a real Triton Inference Server for tests: the CPU server bundled in nvidia-pytriton,
set up once by deploy/triton/setup-test-server.sh, on 127.0.0.1 with free ports, its own temporary
folders and shared-memory prefix, stopped by its PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "deploy" / "triton" / "setup-test-server.sh"


def server_home() -> tuple[Path | None, str]:
    """(set-up folder, why not) after running the idempotent set-up script."""
    try:
        r = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"Triton test server set-up failed: {e}"
    if r.returncode != 0:
        return None, "Triton test server set-up failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:300]
    return Path(r.stdout.strip().splitlines()[-1]), ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    def __init__(self, home: Path, repo: Path, workdir: Path, ports: tuple[int, int, int] | None = None):
        self.home, self.repo, self.workdir = Path(home), Path(repo), Path(workdir)
        self.http, self.grpc, self.metrics = ports or (_free_port(), _free_port(), _free_port())
        self.proc = None
        self.log = self.workdir / "tritonserver.log"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def start(self, timeout: float = 240.0) -> "TritonServer":
        venv_bin = self.home / "venv" / "bin"
        site = next((self.home / "venv" / "lib").glob("python3*/site-packages"))
        env = dict(os.environ)
        env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [env.get("LD_LIBRARY_PATH"), str(site / "nvidia_pytriton.libs")]))
        env["RATING_EDGE_THREADS"] = "1"
        env.pop("VIRTUAL_ENV", None)
        cache = self.workdir / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.home / "tritonserver" / "bin" / "tritonserver"),
               f"--model-repository={self.repo}", f"--backend-directory={self.home / 'backends'}",
               f"--cache-directory={cache}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
               f"--http-port={self.http}", f"--grpc-port={self.grpc}", f"--metrics-port={self.metrics}",
               "--allow-metrics=false", "--log-verbose=0", "--exit-timeout-secs=5",
               f"--backend-config=python,shm-region-prefix-name=re{uuid.uuid4().hex[:10]}"]
        with open(self.log, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.workdir, start_new_session=True)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"tritonserver not ready after {timeout:.0f} s: {self.tail()}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""
