"""Browser tests of the studio: a live `restyle serve` (preview mode, tiny models) and headless Chromium.

Chromium is Debian's (`apt install chromium`), driven by Playwright with `executable_path`; Playwright's own
browser download is not used. Without Chromium or Playwright these tests are skipped with the reason, unless
RESTYLE_REQUIRE_BROWSER=1 (CI sets it), where that is a failure.

No wait here is a wall-clock budget for the work itself: a test waits for the server to report that its job
ended, then for the page to show it. The timeouts below are only safety nets for a hung server or page, sized
for a shared, busy machine rather than a fast one.
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

from restyle.serve.jobs import TERMINAL

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
# Safety nets, not budgets: each wait ends as soon as its condition holds.
PAGE_TIMEOUT_S = 360.0  # a page wait: over the server's 300 s request timeout, so its answer comes first
JOB_TIMEOUT_S = 900.0  # a job's queue wait and run, on a busy machine
START_TIMEOUT_S = 600.0  # a server's start (tiny models built, warm-up), on a busy machine


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
        clean.update(HOME=str(home), HF_HUB_OFFLINE="1", RESTYLE_CACHE=str(root / "cache"))
        # one thread: the tiny models gain nothing from more, and on a busy machine threads that wait on
        # each other at every op make each step several times slower
        clean.update(OMP_NUM_THREADS="1", **(env or {}))
        key = (env or {}).get("RESTYLE_API_KEY")
        self.headers = {"X-API-Key": key} if key else {}
        cmd = [sys.executable, "-m", "restyle", "serve", "--port", str(self.port), "-o", str(self.output)]
        cmd += extra
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, env=clean, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait for /ping to say ready; fails at once when the server exits or reports a failed load."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                response = httpx.get(self.url + "/ping", timeout=10)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                return
            if response is not None and response.json().get("status") == "failed":
                raise AssertionError(f"server failed to load: {response.text}\n{self.log_path.read_text()}")
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log_path.read_text()}")

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /v1/jobs/{id}: the job's state, step and (when done) result."""
        response = httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=self.headers, timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def wait_job(self, job_id: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
        """Poll the job until the server reports it ended (done, failed or cancelled); its final status."""
        deadline = time.monotonic() + timeout
        status = self.job(job_id)
        while status["state"] not in TERMINAL:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"job {job_id} still {status['state']} after {timeout}s: {status}")
            time.sleep(0.1)
            status = self.job(job_id)
        return status

    def cancel_unfinished(self, job_ids: list[str]) -> None:
        """Cancel the jobs that have not ended and wait for them, so no leftover work slows the next test."""
        if self.proc.poll() is not None:
            return
        for job_id in job_ids:
            if self.job(job_id)["state"] not in TERMINAL:
                httpx.post(f"{self.url}/v1/jobs/{job_id}/cancel", headers=self.headers, timeout=30)
                self.wait_job(job_id)

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


def creates_job(response: Any) -> bool:
    """Whether a page's response is the answer to POST /v1/jobs."""
    return bool(response.request.method == "POST" and response.url.endswith("/v1/jobs"))


def watch_jobs(tab: Any) -> list[str]:
    """The ids of the jobs the page creates, as the server names them (its 202's Location)."""
    ids: list[str] = []

    def response(resp: Any) -> None:
        if creates_job(resp) and resp.status == 202:
            ids.append(resp.headers["location"].rsplit("/", 1)[-1])

    tab.on("response", response)
    return ids


class Studio:
    """Studio pages for one test, each in a fresh browser context (empty storage) with a generous default
    timeout; `close` shuts them, cancels the jobs they left unfinished and returns their JavaScript errors."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.opened: list[tuple[Any, LiveServer, PageErrors, list[str]]] = []

    def open(
        self, server: LiveServer, *, ready: bool = True, init_script: str | None = None, **options: Any
    ) -> Any:
        """A page on `server`'s studio; with `ready`, once the studio says the server is ready."""
        options = {"viewport": {"width": 1400, "height": 1000}, "accept_downloads": True, **options}
        context = self.browser.new_context(**options)
        context.set_default_timeout(PAGE_TIMEOUT_S * 1000)
        if init_script:
            context.add_init_script(init_script)
        tab = context.new_page()
        self.opened.append((context, server, watch_errors(tab), watch_jobs(tab)))
        tab.goto(server.url + "/")
        if ready:
            tab.wait_for_selector("#server-status[data-ready=true]")
        return tab

    def close(self) -> list[str]:
        errors: list[str] = []
        for context, server, page_errors, jobs in self.opened:
            context.close()
            server.cancel_unfinished(jobs)
            errors += page_errors
        return errors


@pytest.fixture
def studio(browser: Any) -> Iterator[Studio]:
    """Open studio pages with `studio.open(server)`; the test fails on any JavaScript error in them."""
    pages = Studio(browser)
    try:
        yield pages
    finally:
        errors = pages.close()
    assert not errors, errors


@pytest.fixture
def page(studio: Studio, live_server: LiveServer) -> Any:
    """The studio on the shared live server, ready, failing the test on any JavaScript error."""
    return studio.open(live_server)


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot of the page's current state under out/screenshots (or $RESTYLE_SCREENSHOTS)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
