"""The UI as a browser test meets it: `streamlit run` on a free loopback port, and Debian's Chromium driven by
Playwright, headless, with a page that waits up to two minutes for what it is told to wait for."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

from tests.rigs.servers import free_port, start_server, stop, wait_http

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def streamlit_ui(work: Path, env: dict[str, str]) -> Iterator[str]:
    """kb's Streamlit app with `env`, run in `work` (its log there); yields its URL."""
    port = free_port()
    log = work / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "kb_app" / "app.py"),
               "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
               "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    process = start_server(command, log, env=env, cwd=work)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", process, log=log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@contextlib.contextmanager
def chromium_page(url: str) -> Iterator[object]:
    """A Playwright page in headless Chromium, 1400 x 1000, opened at `url`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            yield page
        finally:
            browser.close()
