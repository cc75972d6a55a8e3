"""The API docs (Swagger UI at /docs, ReDoc at /redoc) work air-gapped: every file comes from the server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from restyle.serve.app import ServerSettings, create_app
from tests.web.conftest import LiveServer, screenshot, watch_errors

RENDER_TIMEOUT_MS = 60_000  # an upper bound only: the tests wait on the rendered elements, never sleep
OPERATIONS = {"GET /ping", "POST /invocations", "POST /v1/style"}
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture
def docs_client(tmp_path: Any) -> Iterator[TestClient]:
    """The app without its lifespan: the docs need no models, so none are loaded."""
    app = create_app(ServerSettings(output_dir=tmp_path / "out", api_key="s3cret"))
    yield TestClient(app, base_url="http://localhost")


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html)


@pytest.mark.parametrize("page_url", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_files(docs_client: TestClient, page_url: str) -> None:
    res = docs_client.get(page_url)  # no API key: the docs stay open, like the studio
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    # the studio's policy (script-src 'self') would block the page's inline start-up script
    assert "content-security-policy" not in res.headers
    urls = _asset_urls(res.text)
    assert urls, res.text
    for url in urls:
        assert url.startswith("/docs-assets/"), f"{page_url} loads {url} from outside the server"
        asset = docs_client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert asset.headers["content-type"].split(";")[0] == ASSET_TYPES[suffix], url
    assert "fonts.googleapis.com" not in res.text


def test_oauth2_redirect_page_is_served(docs_client: TestClient) -> None:
    res = docs_client.get("/docs/oauth2-redirect")
    assert res.status_code == 200
    assert "oauth2" in res.text.lower()
    assert not [u for u in _asset_urls(res.text) if "//" in u]


class Airgap:
    """Aborts every request of a browser context that is not to the live server; remembers what it blocked
    and which of the server's answers were errors."""

    def __init__(self, server: LiveServer) -> None:
        self.origin = urlsplit(server.url)
        self.blocked: list[str] = []
        self.failed: list[str] = []

    def handle(self, route: Any) -> None:
        url = urlsplit(route.request.url)
        if (url.scheme, url.netloc) == (self.origin.scheme, self.origin.netloc):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def response(self, res: Any) -> None:
        if res.status >= 400:
            self.failed.append(f"{res.status} {res.url}")


def wait_rendered(tab: Any, selector: str, airgap: Airgap) -> None:
    """Wait for the page to render `selector`; on a timeout, say what the air gap blocked."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        tab.wait_for_selector(selector, timeout=RENDER_TIMEOUT_MS)
    except PlaywrightTimeout:
        pytest.fail(f"{selector} never rendered; blocked outside requests: {airgap.blocked}")


@pytest.fixture
def airgapped(browser: Any, live_server: LiveServer) -> Iterator[tuple[Any, Airgap]]:
    """A page whose requests reach only the live server, failing the test on any JavaScript error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    airgap = Airgap(live_server)
    context.route("**/*", airgap.handle)
    context.on("response", airgap.response)
    try:
        tab = context.new_page()
        errors = watch_errors(tab)
        yield tab, airgap
    finally:
        context.close()
    assert not errors, errors


def test_swagger_ui_renders_air_gapped(airgapped: tuple[Any, Airgap], live_server: LiveServer) -> None:
    tab, airgap = airgapped
    tab.goto(live_server.url + "/docs")
    wait_rendered(tab, ".opblock .opblock-summary-path", airgap)
    listed = tab.evaluate(
        """() => [...document.querySelectorAll('.opblock')].map(block =>
            block.querySelector('.opblock-summary-method').textContent.trim() + ' ' +
            block.querySelector('.opblock-summary-path').getAttribute('data-path'))"""
    )
    assert set(listed) >= OPERATIONS, listed
    assert tab.locator(".info .title").inner_text().startswith("restyle")
    screenshot(tab, "docs")
    assert airgap.blocked == [], f"the docs tried to load from outside: {airgap.blocked}"
    assert airgap.failed == [], airgap.failed


def test_redoc_renders_air_gapped(airgapped: tuple[Any, Airgap], live_server: LiveServer) -> None:
    tab, airgap = airgapped
    tab.goto(live_server.url + "/redoc")
    wait_rendered(tab, "[data-section-id^='operation/']", airgap)
    assert tab.locator("h1").first.inner_text().startswith("restyle")
    for path in ("/ping", "/invocations", "/v1/style"):
        assert tab.get_by_text(path, exact=True).count() > 0, path
    screenshot(tab, "redoc", full_page=False)
    assert airgap.blocked == [], f"ReDoc tried to load from outside: {airgap.blocked}"
    assert airgap.failed == [], airgap.failed
