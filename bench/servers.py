"""The simulated embedding server (bench.simserver) as a child process on a free loopback port, for the
benchmarks and the tests that measure through it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import httpx

from tests.rigs.servers import ServerProcess, free_port, wait_http


class SimulatedServer(ServerProcess):
    """bench.simserver in a child process, on a free loopback port."""

    def __init__(self, model_size: str = "4b", dim: int | None = None, log: Path | None = None,
                 speed: float = 1.0, port: int | None = None, extra: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        command = [sys.executable, "-m", "bench.simserver", "--port", str(self.port), "--model-size", model_size,
                   "--speed", str(speed), *extra]
        if dim:
            command += ["--dim", str(dim)]
        self._log = open(log or Path(tempfile.mkdtemp()) / "simserver.log", "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{self.port}/health", self.process, log=Path(self._log.name))
        except BaseException:
            self.close()
            raise
        self.model = httpx.get(f"{self.url}/models", timeout=5).json()["data"][0]["id"]

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/reset", timeout=5)

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()
