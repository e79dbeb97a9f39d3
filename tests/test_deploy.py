"""The example files in deploy/: the nginx ones run here with Debian's nginx; the rest are checked against kb's
own settings, so a renamed or mistyped `KB_*` variable or a shard left out fails here, not in a cluster."""

from __future__ import annotations

import getpass
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from bench.servers import SimulatedServer
from ingest.knowledge_base import KnowledgeBase
from ingest.pipeline import ingest
from ingest.settings import Settings, load_settings
from tests.conftest import DATA, ROOT
from tests.rigs.servers import ServerProcess, free_port, wait_http
from tests.rigs.tokenproxy import NGINX

DEPLOY = ROOT / "deploy"
FIELDS = {f"KB_{name.upper()}" for name in Settings.model_fields} | {"KB_CONFIG"}


class Nginx(ServerProcess):
    """One of deploy/'s nginx files, run as it is but for addresses: `changes` maps its text to loopback's."""

    def __init__(self, name: str, work: Path, changes: dict[str, str], probe: str = "/") -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        text = (DEPLOY / name).read_text()
        for old, new in changes.items():
            assert old in text, f"{name} no longer has {old!r}"
            text = text.replace(old, new)
        text = re.sub(r"listen \d+;", f"listen 127.0.0.1:{self.port};", text)
        text = text.replace("worker_processes auto;", f"worker_processes 1; daemon off; user {getpass.getuser()}; "
                            f"pid {work}/nginx.pid; error_log {work}/error.log warn;")
        temp = " ".join(f"{kind}_temp_path {work}/{kind};"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        text = text.replace("http {", "http {\n    " + temp, 1)
        (work / "nginx.conf").write_text(text)
        self._log = open(work / "nginx.log", "w")
        self.process = subprocess.Popen([NGINX, "-p", str(work), "-c", str(work / "nginx.conf")], stdout=self._log,
                                        stderr=subprocess.STDOUT)
        try:
            wait_http(self.url + probe, self.process, log=work / "error.log")
        except BaseException:
            self.close()
            raise


def test_the_least_connections_balancer_spreads_kbs_requests_over_both_instances(tmp_path):
    with SimulatedServer(model_size="0.6b", dim=64) as one, SimulatedServer(model_size="0.6b", dim=64) as two:
        changes = {"10.0.0.11:30000": f"127.0.0.1:{one.port}", "10.0.0.12:30000": f"127.0.0.1:{two.port}"}
        with Nginx("nginx-embeddings.conf", tmp_path / "nginx", changes, probe="/health") as balancer:
            settings = load_settings(endpoint=[f"{balancer.url}/v1"], model=one.model, chroma_path=tmp_path / "chroma",
                                     chunk_tokens=64, overlap=8, batch_inputs=4)
            report = ingest([DATA], settings)
            assert report.ok and report.stats.requests >= 10
            served = [one.stats()["requests"], two.stats()["requests"]]
            assert sum(served) == report.stats.requests and min(served) > 0, served
            assert KnowledgeBase.open(settings).count() == report.chunks


def test_the_chroma_token_proxy_lets_only_the_token_through(tmp_path, chroma_server):
    changes = {"http://chroma:8001": chroma_server, "Bearer CHANGE-ME": "Bearer team-secret-1"}
    with Nginx("nginx-chroma-token.conf", tmp_path / "nginx", changes, probe="/api/v2/heartbeat") as proxy:
        assert httpx.get(f"{proxy.url}/api/v2/heartbeat").status_code == 401
        good = load_settings(chroma_url=proxy.url, chroma_token="team-secret-1", collection="through-proxy",
                             chroma_database="deploy")
        assert ingest([DATA / "zh"], good).ok and KnowledgeBase.open(good).count() > 0
        from ingest.errors import StoreError

        with pytest.raises(StoreError, match="not authorised"):
            KnowledgeBase.open(good.model_copy(update={"chroma_token": None})).count()


def test_kb_toml_is_valid_settings(monkeypatch):
    monkeypatch.delenv("KB_CONFIG", raising=False)
    settings = load_settings(DEPLOY / "kb.toml")
    assert settings.endpoint == ["http://10.0.0.11:30000/v1", "http://10.0.0.12:30000/v1"]
    assert (settings.chroma_url, settings.chroma_database, settings.collection) == (
        "http://chroma.internal:8000", "knowledge", "handbook")


def _kb_variables(environment) -> set[str]:
    names = environment.keys() if isinstance(environment, dict) else [e["name"] for e in environment]
    return {n for n in names if n.startswith("KB_")}


def test_compose_workers_cover_every_shard_with_known_settings():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    workers = {name: s for name, s in services.items() if "ingest" in s.get("command", [])}
    shards = sorted(s["command"][s["command"].index("--shard") + 1] for s in workers.values())
    assert shards == [f"{i}/{len(workers)}" for i in range(1, len(workers) + 1)]
    assert len({tuple(s["volumes"]) for s in workers.values()}) == 1, "every worker sees the corpus at one path"
    for name, service in services.items():
        if "build" in service:
            unknown = _kb_variables(service["environment"]) - FIELDS
            assert not unknown, f"{name}: {unknown} are not kb settings"
    endpoints = services["worker-1"]["environment"]["KB_ENDPOINT"].split(",")
    assert {f"http://{name}:30000/v1" for name in services if name.startswith("sglang")} == set(endpoints)
    assert services["worker-1"]["environment"]["KB_CHROMA_URL"] == "http://chroma-proxy:8000"


def test_the_kubernetes_job_gives_each_pod_its_own_shard():
    job = yaml.safe_load((DEPLOY / "k8s-ingest-job.yaml").read_text())
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    command = container["command"][-1]
    assert f"--shard $((JOB_COMPLETION_INDEX + 1))/{spec['completions']}" in command
    assert not _kb_variables(container["env"]) - FIELDS
    # What the shell makes of it for each pod is a shard kb accepts, and together they are all of them.
    shards = [subprocess.run(["sh", "-c", "echo $((JOB_COMPLETION_INDEX + 1))"], capture_output=True, text=True,
                             env={"JOB_COMPLETION_INDEX": str(i)}).stdout.strip() for i in range(spec["completions"])]
    assert [load_settings(shard=f"{s}/{spec['completions']}").shard_spec.index for s in shards] == list(
        range(1, spec["completions"] + 1))
