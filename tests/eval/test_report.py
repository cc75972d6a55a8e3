"""The HTML report and its JSON: self-contained, every figure in the JSON, and rendered in headless Chromium.

The browser test saves `report.png` under out/screenshots, or under $RESTYLE_SCREENSHOTS; docs/EVAL.md's
screenshot is made with `RESTYLE_SCREENSHOTS=docs/images pytest tests/eval/test_report.py -k chromium`.
Without Chromium or Playwright that test is skipped with the reason, unless RESTYLE_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from restyle.errors import RestyleError
from restyle.eval.datasets import read_label_maps
from restyle.eval.masks import evaluate_masks
from restyle.eval.report import require_matplotlib, write_report
from restyle.eval.styles import evaluate_styles, load_style_rows
from restyle.eval.synthetic import CLASS_MAP, write_synthetic_set
from tests.eval.test_eval_masks import Oracle
from tests.eval.test_eval_styles import FakeEngine

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("RESTYLE_SCREENSHOTS", REPO / "out" / "screenshots"))  # read before
REQUIRE_BROWSER = os.environ.get("RESTYLE_REQUIRE_BROWSER") == "1"  # the autouse fixture clears RESTYLE_*
CHROMIUM = os.environ.get("RESTYLE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    paths = write_synthetic_set(tmp_path_factory.mktemp("synthetic"), count=4, seed=0)
    return read_label_maps(paths["images"], paths["labels"], paths["label_names"])


@pytest.fixture
def styles_result(tmp_path):
    from restyle.samples import sample_photo

    sample_photo(96, 144).save(tmp_path / "photo.png")
    rows = [
        {"photo": "photo.png", "garment": "the dress", "type": "dress", "color": "red", "id": "red dress"},
        {"photo": "photo.png", "garment": "the dress", "type": "skirt", "color": "navy", "id": "navy skirt"},
        {"photo": "gone.png", "garment": "the dress", "type": "dress", "id": "no photo"},
    ]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    engines = {"fake": FakeEngine(["red", "navy"])}
    return evaluate_styles(load_style_rows(tmp_path / "rows.jsonl"), engines, source="rows.jsonl")


def _no_external_resources(text: str) -> None:
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text)


def test_a_masks_report_is_self_contained_and_its_json_has_every_figure(tmp_path, photos):
    result = evaluate_masks(photos, {"oracle": Oracle(photos, CLASS_MAP)}, CLASS_MAP, protect=[])
    path = write_report(result, tmp_path / "out" / "report.html")
    text = path.read_text()
    _no_external_resources(text)
    assert text.count("data:image/png;base64,") >= 2 + 2 * 2 * len(CLASS_MAP)  # charts + best/worst pairs
    assert "preview: tiny random models" not in text  # a real (fake) segmenter is no preview
    figures = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "examples" not in figures and "base64" not in json.dumps(figures)
    assert figures["backends"]["oracle"]["miou_best"] == 1.0 and figures["restyle_version"]
    assert figures["backends"] == json.loads(json.dumps(result["backends"]))


def test_a_styles_report_lists_failed_rows(tmp_path, styles_result):
    path = write_report(styles_result, tmp_path / "styles.html")
    text = path.read_text()
    _no_external_resources(text)
    assert "InvalidImageError" in text and "gone.png" in text
    figures = json.loads((tmp_path / "styles.json").read_text())
    assert figures["engines"]["fake"]["summary"]["failed"] == 1


def test_without_matplotlib_the_report_says_how_to_install_it(monkeypatch, tmp_path, photos):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(RestyleError, match=r"pip install 'restyle\[eval\]'"):
        require_matplotlib()


def test_an_unknown_result_kind_is_refused(tmp_path):
    with pytest.raises(RestyleError, match="unknown result kind"):
        write_report({"kind": "speed"}, tmp_path / "r.html")


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None if CHROMIUM else "Debian chromium is not installed (apt install chromium)"


def _check_page(tab, rows: int) -> None:
    """The tables, charts and grids are there and every image decoded."""
    assert tab.locator("section#summary table tbody tr").count() >= 1
    assert tab.locator("section table tbody tr").count() >= rows
    assert tab.locator("section#charts img").count() >= 1
    assert tab.locator("section#grids img").count() >= 2
    broken = tab.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
    assert broken == 0


def test_the_reports_render_in_chromium(tmp_path, photos, backend_segmenter, styles_result):
    reason = _browser_missing()
    if reason:
        if REQUIRE_BROWSER:
            pytest.fail(f"browser tests required but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    segmenters = {"clipseg": backend_segmenter("clipseg"), "parser": backend_segmenter("parser")}
    masks = evaluate_masks(photos, segmenters, CLASS_MAP, dataset="synthetic set (restyle.eval.synthetic)")
    masks_html = write_report(masks, tmp_path / "report.html")
    styles_html = write_report(styles_result, tmp_path / "styles.html")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.route(
                "**/*",
                lambda route: (
                    route.abort()
                    if not route.request.url.startswith(("file:", "data:"))
                    else route.continue_()
                ),
            )
            tab.goto(masks_html.as_uri())
            assert "preview: tiny random models" in tab.locator(".banner").inner_text()
            assert tab.locator("section#charts img").count() == 2
            _check_page(tab, rows=2 * len(CLASS_MAP))
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            height = min(tab.evaluate("document.documentElement.scrollHeight"), 2300)
            tab.screenshot(
                path=str(SCREENSHOTS / "report.png"),
                clip={"x": 0, "y": 0, "width": 1280, "height": height},
                full_page=True,
            )
            tab.goto(styles_html.as_uri())
            _check_page(tab, rows=3)
            assert tab.locator("section#grids figure").count() == 2 * 3  # original + 2 variants, 2 rows
        finally:
            browser.close()
    assert (SCREENSHOTS / "report.png").stat().st_size > 10_000
