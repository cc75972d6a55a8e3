"""Browser tests of the studio: a live `restyle serve` (preview mode, tiny models) and headless Chromium.

Chromium is Debian's (`apt install chromium`), driven by Playwright with `executable_path`; Playwright's own
browser download is not used. Without Chromium or Playwright these tests are skipped with the reason, unless
RESTYLE_REQUIRE_BROWSER=1 (CI sets it), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("RESTYLE_SCREENSHOTS", REPO / "out" / "screenshots"))


def _chromium() -> str | None:
    return os.environ.get("RESTYLE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if _chromium() is None:
        return "Debian chromium is not installed (apt install chromium chromium-driver)"
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    reason = _missing()
    if reason:
        if os.environ.get("RESTYLE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but {reason}")
        pytest.skip(reason)
    return str(_chromium())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """`python -m restyle serve` in a child process, in its own HOME and cache (so: preview mode)."""

    def __init__(self, root: Path, extra: list[str], env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = root / "out"
        self.log_path = root / "server.log"
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RESTYLE_")}
        clean.update(HOME=str(home), HF_HUB_OFFLINE="1", RESTYLE_CACHE=str(root / "cache"), **(env or {}))
        cmd = [sys.executable, "-m", "restyle", "serve", "--port", str(self.port), "-o", str(self.output)]
        cmd += extra
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, env=clean, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/ping", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def studio_lora(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from restyle.models.tiny import build_tiny_lora

    return build_tiny_lora(tiny_models["inpainter"], tmp_path_factory.mktemp("studio-lora"))


@pytest.fixture(scope="session")
def live_server(
    chromium_path: str, studio_lora: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("studio-server"), ["--lora", f"linen={studio_lora}"])
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


class PageErrors(list):
    """Uncaught exceptions and console errors of a page (failed requests the test caused are expected)."""


def watch_errors(tab: Any) -> PageErrors:
    """Collect the page's uncaught exceptions and console errors (not failed requests a test caused)."""
    errors = PageErrors()
    tab.on("pageerror", lambda err: errors.append(f"uncaught: {err}"))

    def console(msg: Any) -> None:
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            errors.append(f"console: {msg.text}")

    tab.on("console", console)
    return errors


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    """A fresh browser context on the studio (empty storage), failing the test on any JavaScript error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(30_000)
    try:
        tab = context.new_page()
        errors = watch_errors(tab)
        tab.goto(live_server.url + "/")
        tab.wait_for_selector("#server-status[data-ready=true]")
        yield tab
    finally:
        context.close()
    assert not errors, errors


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot of the page's current state under out/screenshots (or $RESTYLE_SCREENSHOTS)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
