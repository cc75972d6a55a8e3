"""The studio in headless Chromium against a live preview server: the user's path and its failure modes."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.web.conftest import PAGE_TIMEOUT_S, LiveServer, Studio, creates_job, screenshot

STEP_TEXT = re.compile(r"Step (\d+) / (\d+)")


@pytest.fixture(scope="session")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from restyle.samples import sample_photo

    path = tmp_path_factory.mktemp("photo") / "model.png"
    sample_photo().save(path)
    return path


def wait_until(page: Any, js: str, arg: Any = None, timeout: float = PAGE_TIMEOUT_S) -> Any:
    """Poll a JS function until it returns something truthy (the page's CSP blocks wait_for_function).

    The timeout is a safety net for a hung page, not a budget for the work: make `js` true as soon as the
    page shows the outcome, failure included."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(js, arg)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {js}")


def set_range(page: Any, selector: str, value: float) -> None:
    """Move a slider the way a drag does: set it and fire `input`."""
    page.eval_on_selector(
        selector,
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        str(value),
    )


def coverage(page: Any) -> float:
    return float(page.get_attribute("#mask-info", "data-coverage") or "nan")


def wait_coverage(page: Any, above: float = 0.0) -> float:
    """Wait for the mask to cover more than `above` percent, or for the studio to show a refusal."""
    wait_until(
        page,
        """v => Number(document.querySelector('#mask-info').dataset.coverage) > v
            || document.querySelector('#mask-error').textContent""",
        above,
    )
    assert page.inner_text("#mask-error") == ""
    return coverage(page)


def upload_and_mask(page: Any, photo: Path) -> float:
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#editor:not([hidden])")
    page.fill("#garment", "the dress")
    set_range(page, "#threshold", 0.1)  # the tiny random segmenter's scores are low
    page.click("#find")
    return wait_coverage(page)


def drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A mouse stroke on the photo, in fractions of its displayed box."""
    box = page.locator("#stage").bounding_box()
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in (start, end)]
    page.mouse.move(*at[0])
    page.mouse.down()
    page.mouse.move(*at[1], steps=12)
    page.mouse.up()


def start_job(page: Any, press: Callable[[], None] | None = None) -> str:
    """Start a job from the page (a click on Generate, or `press`); the id the server gave it."""
    with page.expect_response(creates_job) as created:
        press() if press else page.click("#generate")
    assert created.value.status == 202, created.value.text()
    return str(created.value.json()["id"])


def generate(page: Any, server: LiveServer, press: Callable[[], None] | None = None) -> dict[str, Any]:
    """Start a job, wait for the server to report it done, then for the page to have shown it (the studio
    hides Cancel once it has the images and the history entry); the job's final status."""
    status = server.wait_job(start_job(page, press))
    assert status["state"] == "done", status
    page.wait_for_selector("#cancel", state="hidden")
    return status


def record_progress(page: Any) -> None:
    page.evaluate(
        """() => {
        window.progressSeen = [];
        const node = document.querySelector('#progress-text');
        new MutationObserver(() => window.progressSeen.push(node.textContent))
            .observe(node, {childList: true, characterData: true, subtree: true});
    }"""
    )


def job_id_of_history(page: Any, index: int = 0) -> str:
    return page.locator("#history button.history-item").nth(index).get_attribute("data-id")


def png_bytes_of(path: str | Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def test_page_loads_with_preview_banner(page: Any, live_server: LiveServer) -> None:
    assert page.title() == "restyle studio"
    banner = page.locator("#preview-banner")
    assert banner.is_visible()
    assert "Preview mode" in banner.inner_text()
    assert "PREVIEW MODE" in page.inner_text("#server-status")
    # the vocabulary filled the controls and the LoRA picker lists the server's style
    assert page.locator("#garment_type option").count() > 20
    assert page.locator("#colors input[type=radio]").count() == 19
    assert page.locator("#style option[value=linen]").count() == 1
    assert page.locator("#key-form").is_hidden()
    # which backends run, their licence, and the loaded family's own guidance range and default
    info = page.inner_text("#backend-info")
    assert "Inpainter: sd (CreativeML" in info and "masks: clipseg" in info
    assert (page.get_attribute("#guidance", "max"), page.input_value("#guidance")) == ("30", "6.5")
    assert page.is_enabled("#negative_prompt")
    screenshot(page, "01-start")


def test_find_garment_at_the_default_threshold_gives_a_labelled_preview_mask(page: Any, photo: Path) -> None:
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#editor:not([hidden])")
    assert page.input_value("#threshold") == "0.4"  # nothing moved: what a new user clicks
    page.fill("#garment", "the dress")
    page.click("#find")
    assert wait_coverage(page) > 1.0
    assert "Preview mask: a placeholder shape" in page.inner_text("#mask-info")


def test_upload_mask_brush_generate_download_history(page: Any, live_server: LiveServer, photo: Path) -> None:
    found = upload_and_mask(page, photo)
    assert found > 0 and "hand edit" not in page.inner_text("#mask-info")

    # the sliders re-run the segmenter: a lower threshold masks more
    set_range(page, "#threshold", 0.02)
    wait_coverage(page, above=found)
    lowered = coverage(page)
    assert page.inner_text("#threshold-out") == "0.02"
    screenshot(page, "02-mask")

    # brush a band across the top, erase a band near the bottom
    page.select_option("#size", "256")  # the studio's smallest size, not its default (restored below)
    set_range(page, "#brush-size", 90)
    drag(page, (0.15, 0.06), (0.85, 0.06))
    painted = wait_coverage(page, above=lowered)
    assert "1 hand edit" in page.inner_text("#mask-info")
    page.check("#tool-eraser")
    drag(page, (0.1, 0.55), (0.9, 0.55))
    wait_until(page, "v => Number(document.querySelector('#mask-info').dataset.coverage) < v", painted)
    assert "2 hand edits" in page.inner_text("#mask-info")

    # style -> prompt from the API, editable
    page.select_option("#garment_type", "skirt")
    page.click("label[for=color-red]")
    assert page.is_checked("#color-red")
    page.select_option("#fabric", "linen")
    wait_until(page, "() => document.querySelector('#prompt').value.includes('linen')")
    prompt = page.input_value("#prompt")
    assert "red" in prompt and "skirt" in prompt

    page.fill("#num_images", "2")  # two variants: seed and seed + 1
    page.fill("#steps", "40")  # cheap steps at 256 px, enough of them for the 0.1 s event stream to show some
    page.fill("#seed", "7")
    page.check("#seed-lock")
    record_progress(page)
    generate(page, live_server)
    assert page.inner_text("#progress-text").startswith("Done")
    assert page.locator("#gallery li").count() == 4  # the original, both results, the mask
    seen = page.evaluate("window.progressSeen")
    steps = [tuple(map(int, m.groups())) for text in seen if (m := STEP_TEXT.match(text))]
    assert any(0 < step < total for step, total in steps), seen  # the bar moved during the run
    assert page.get_attribute("#progress", "max") == "40"
    screenshot(page, "03-results")

    # gallery: original first, then both seeds, each downloadable with its metadata inside
    captions = page.locator("#gallery figcaption").all_inner_texts()
    assert captions[0].startswith("Original")
    assert "seed 7" in captions[1] and "seed 8" in captions[2]
    with page.expect_download() as download:
        page.locator("#gallery a.download").first.click()
    img = png_bytes_of(download.value.path())
    meta = json.loads(img.info["restyle"])
    assert meta["seed"] == 7 and meta["steps"] == 40 and meta["prompt"] == prompt
    assert img.size == (384, 576)  # the photo's own size and aspect ratio
    with page.expect_download() as mask_download:
        page.click("#download-result-mask")
    mask = np.asarray(png_bytes_of(mask_download.value.path()).convert("L"))
    # the hand edits reached the server: painted band repainted, erased band kept
    assert mask[int(0.06 * 576), 192] == 255
    assert mask[int(0.55 * 576), 192] == 0
    job_id = job_id_of_history(page)
    served = httpx.get(f"{live_server.url}/v1/jobs/{job_id}/files/result-mask.png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(served.content)).convert("L")), mask)

    # before/after slider moves the split
    set_range(page, "#compare-range", 20)
    assert "20%" in page.eval_on_selector("#compare-after", "el => el.style.clipPath")

    # history survives a reload and brings the settings and images back
    page.reload()
    page.wait_for_selector("#server-status[data-ready=true]")
    assert page.locator("#history li").count() == 1
    page.locator("#history button.history-item").first.click()
    page.wait_for_selector("#gallery li >> nth=3")
    assert page.input_value("#prompt") == prompt
    assert page.input_value("#seed") == "7"
    assert page.input_value("#fabric") == "linen"
    assert page.is_checked("#seed-lock")  # the same seed reproduces the result
    assert page.input_value("#size") == "256"


def test_api_error_is_shown_beside_the_field(page: Any, photo: Path) -> None:
    upload_and_mask(page, photo)
    page.fill("#prompt", "a red linen skirt")
    page.fill("#seed", "99999999999")  # over the API's 2**32 - 1
    page.check("#seed-lock")
    page.click("#generate")
    error = page.locator("#generate-error")
    error.wait_for(state="visible")  # the API's 422 came back: no job was made
    assert "seed" in error.inner_text() and "4294967295" in error.inner_text()
    assert page.get_attribute("#seed", "aria-invalid") == "true"
    assert page.is_enabled("#generate")  # the page stays usable
    assert page.locator("#editor").is_visible()
    screenshot(page, "05-api-error")
    page.fill("#seed", "3")  # editing the field clears its error
    assert page.get_attribute("#seed", "aria-invalid") is None
    assert error.inner_text() == ""


def test_segmenter_refusal_is_shown_in_place(page: Any, photo: Path) -> None:
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#editor:not([hidden])")
    page.fill("#garment", "the dress")
    set_range(page, "#threshold", 1.0)  # nothing scores above 1
    page.click("#find")
    error = page.locator("#mask-error")
    error.wait_for(state="visible")
    assert "no garment found" in error.inner_text()
    assert page.get_attribute("#garment", "aria-invalid") == "true"


def test_unreadable_file_is_refused_in_place(page: Any, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    error = page.locator("#photo-error")
    error.wait_for(state="visible")
    assert "could not be read as an image" in error.inner_text()
    assert page.locator("#editor").is_hidden()


def test_cancel_a_running_job(page: Any, photo: Path, live_server: LiveServer) -> None:
    upload_and_mask(page, photo)
    page.fill("#prompt", "a red linen skirt")
    # the most steps the API allows, each cheap: still running when the cancel reaches the server
    page.select_option("#size", "256")
    page.fill("#steps", "150")
    page.fill("#num_images", "1")
    job_id = start_job(page)
    wait_until(page, "() => /^Step [1-9]/.test(document.querySelector('#progress-text').textContent)")
    page.click("#cancel")
    status = live_server.wait_job(job_id)
    assert status["state"] == "cancelled" and 0 < status["step"] < status["total"], status
    page.wait_for_selector("#cancel", state="hidden")  # the studio has taken the job's end in
    assert page.inner_text("#progress-text").startswith("Cancelled at step")
    assert page.locator("#gallery li").count() == 0
    assert page.is_enabled("#generate")


def _rotated_jpeg() -> bytes:
    """A 300x200 landscape JPEG whose EXIF says: rotate 90 degrees to show (so it displays 200x300)."""
    img = Image.new("RGB", (300, 200), (200, 60, 60))
    img.paste((40, 40, 200), (0, 0, 300, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_drop_a_photo_with_exif_rotation(page: Any, live_server: LiveServer) -> None:
    data = base64.b64encode(_rotated_jpeg()).decode()
    page.evaluate(
        """b64 => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'rotated.jpg', {type: 'image/jpeg'}));
        const zone = document.querySelector('#dropzone');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""",
        data,
    )
    page.wait_for_selector("#editor:not([hidden])")
    assert "200 × 300" in page.inner_text("#photo-info")
    assert page.eval_on_selector("#photo-canvas", "c => [c.width, c.height]") == [200, 300]
    # the server reads the same orientation: a painted mask of the shown size is accepted
    page.focus("#stage")
    page.keyboard.press("Space")
    page.fill("#prompt", "a red linen skirt")
    page.fill("#steps", "2")
    page.fill("#num_images", "1")
    generate(page, live_server)
    assert page.locator("#gallery li").count() == 3  # the original, the result, the mask
    assert page.locator("#generate-error").inner_text() == ""


def test_large_photo_is_scaled_before_upload(page: Any, tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    ramp = np.linspace(0, 255, 6000, dtype=np.uint8)
    arr = np.stack([np.tile(ramp, (4000, 1))] * 3, axis=-1)
    Image.fromarray(arr).save(big, "JPEG", quality=90)
    page.set_input_files("#file", str(big))
    page.wait_for_selector("#editor:not([hidden])")
    info = page.inner_text("#photo-info")
    assert "2048 × 1365" in info and "scaled down from 6000 × 4000" in info
    page.fill("#garment", "the dress")
    set_range(page, "#threshold", 0.0)
    page.click("#find")
    wait_coverage(page)  # the server took the scaled photo (24 MP would be over its 16 MP limit)


def _tab_to(page: Any, selector: str, backwards: bool = False, limit: int = 80) -> None:
    for _ in range(limit):
        if page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
    raise AssertionError(f"{selector} not reachable with the keyboard")


def test_keyboard_only(page: Any, photo: Path, live_server: LiveServer) -> None:
    page.set_input_files("#file", str(photo))  # the system file chooser is outside the page
    page.focus("#file")
    _tab_to(page, "#garment")
    page.keyboard.type("the dress")
    page.keyboard.press("Tab")  # Find garment
    page.keyboard.press("Tab")  # threshold slider
    page.keyboard.press("Home")
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    assert page.inner_text("#threshold-out") == "0.10"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    wait_coverage(page)
    before = coverage(page)

    _tab_to(page, "#stage", backwards=True)
    assert page.locator("#cursor").is_visible()
    page.keyboard.press("]")
    for _ in range(20):  # up to the photo's top edge (the cursor stops there): outside the found garment
        page.keyboard.press("Shift+ArrowUp")
    page.keyboard.press("Space")
    after = wait_coverage(page, above=before)
    page.keyboard.press("e")
    assert page.is_checked("#tool-eraser")
    page.keyboard.press("Space")
    wait_until(page, "v => Number(document.querySelector('#mask-info').dataset.coverage) < v", after)
    page.keyboard.press("Control+z")
    wait_until(page, "v => Number(document.querySelector('#mask-info').dataset.coverage) >= v", after)

    _tab_to(page, "#color-none")  # the swatches are one radio group: Tab enters it, arrows choose
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    assert page.is_checked("#color-red")
    # a colour alone describes nothing: the API says so, shown as the prompt's hint, not as an error
    wait_until(page, "() => document.querySelector('#prompt').placeholder.includes('give a garment')")
    assert page.inner_text("#style-error") == ""
    _tab_to(page, "#prompt")
    page.keyboard.type("a red denim skirt")
    _tab_to(page, "#steps")
    page.keyboard.press("Control+a")
    page.keyboard.type("2")
    _tab_to(page, "#generate")
    generate(page, live_server, press=lambda: page.keyboard.press("Enter"))
    # two variants (the default): the second is not the one shown at first, so picking it shows the key works
    assert page.locator("#gallery button.pick").count() == 3
    _tab_to(page, "#gallery li:nth-child(3) button.pick")
    page.keyboard.press("Enter")
    assert page.get_attribute("#gallery li:nth-child(3) button.pick", "aria-pressed") == "true"
    screenshot(page, "07-keyboard")


def test_phone_width(studio: Studio, live_server: LiveServer, photo: Path) -> None:
    page = studio.open(live_server, viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    found = upload_and_mask(page, photo)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page is {width}px wide at phone width"
    for selector in ("#stage", "#garment", "#generate", "#prompt", "#colors"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
    box = page.locator("#stage").bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.05)  # paint by touch
    wait_coverage(page, above=found)
    screenshot(page, "06-phone")


def test_lora_style_from_the_picker(page: Any, photo: Path, live_server: LiveServer) -> None:
    upload_and_mask(page, photo)
    page.fill("#prompt", "a linen skirt")
    page.select_option("#style", "linen")
    set_range(page, "#style_scale", 0.5)
    page.fill("#steps", "2")
    page.fill("#num_images", "1")
    generate(page, live_server)
    with page.expect_download() as download:
        page.locator("#gallery a.download").first.click()
    meta = json.loads(png_bytes_of(download.value.path()).info["restyle"])
    assert meta["style"] == "linen" and meta["style_scale"] == 0.5


def test_api_key_is_asked_for_then_sent(
    studio: Studio, chromium_path: str, photo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = LiveServer(tmp_path_factory.mktemp("keyed-server"), [], env={"RESTYLE_API_KEY": "s3cret"})
    try:
        server.wait_ready()
        page = studio.open(server, ready=False)
        page.wait_for_selector("#key-form:not([hidden])")  # the first 401 (the vocabulary's) opens it
        wait_until(page, "() => document.querySelector('#generate-error').textContent")  # /v1/models' 401
        assert "API key" in page.inner_text("#generate-error")
        page.fill("#api-key", "s3cret")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#server-status[data-ready=true]")
        # the vocabulary came once the key was given (its request runs beside the readiness check)
        wait_until(page, "() => document.querySelectorAll('#garment_type option').length > 20")
        upload_and_mask(page, photo)
        page.fill("#prompt", "a red linen skirt")
        page.fill("#steps", "2")
        page.fill("#num_images", "1")
        generate(page, server)
        assert page.locator("#gallery li").count() == 3  # the job stream and the images came with the key
        assert page.inner_text("#generate-error") == ""
    finally:
        server.stop()


def hold(page: Any, pattern: str, method: str = "POST") -> list[Any]:
    """Hold the page's `method` requests to `pattern` until the test lets each go (route.continue_())."""
    held: list[Any] = []

    def handler(route: Any) -> None:
        if route.request.method == method:
            held.append(route)
        else:
            route.continue_()

    page.route(pattern, handler)
    return held


def wait_held(page: Any, held: list[Any], count: int = 1, timeout: float = PAGE_TIMEOUT_S) -> None:
    """Wait until the page has sent `count` of the held requests (a safety net, not a budget)."""
    deadline = time.monotonic() + timeout
    while len(held) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} held request(s) after {timeout}s, got {len(held)}")
        page.wait_for_timeout(25)  # lets Playwright dispatch the route handler


def count_decodes(page: Any) -> None:
    """Count the page's finished createImageBitmap calls in `window.decodes`: the studio decides what to do
    with a mask in the same task its decode resolves in, so a count taken after that sees the decision."""
    page.evaluate(
        """() => {
        window.decodes = 0;
        const decode = window.createImageBitmap;
        window.createImageBitmap = async (...args) => {
            const bitmap = await decode(...args);
            window.decodes += 1;
            return bitmap;
        };
    }"""
    )


def test_a_late_mask_for_an_old_photo_is_dropped(page: Any, photo: Path) -> None:
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#editor:not([hidden])")
    page.fill("#garment", "the dress")
    set_range(page, "#threshold", 0.1)
    held = hold(page, "**/v1/segment")
    page.click("#find")
    wait_held(page, held)
    page.fill("#garment", "")  # the next photo is not segmented by itself
    page.evaluate(
        """b64 => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'second.jpg', {type: 'image/jpeg'}));
        document.querySelector('#photo-panel').dispatchEvent(
            new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""",
        base64.b64encode(_rotated_jpeg()).decode(),
    )
    wait_until(page, "() => document.querySelector('#photo-info').textContent.includes('200 × 300')")
    count_decodes(page)  # the second photo is shown: the next decode is the late mask's
    with page.expect_response("**/v1/segment") as late:
        held[0].continue_()  # the first photo's mask arrives now, and must not land on the second photo
    assert late.value.ok, late.value.text()
    wait_until(page, "() => window.decodes > 0")  # the studio has decoded the late mask and decided on it
    wait_until(page, "() => !document.querySelector('#mask-info').textContent.startsWith('Finding')")
    assert coverage(page) == 0.0
    assert page.inner_text("#mask-error") == ""


def test_cancel_before_the_server_named_the_job(page: Any, photo: Path, live_server: LiveServer) -> None:
    upload_and_mask(page, photo)
    page.fill("#prompt", "a red linen skirt")
    page.select_option("#size", "256")  # many cheap steps: not over when the studio's cancel arrives
    page.fill("#steps", "150")
    page.fill("#num_images", "1")
    held = hold(page, "**/v1/jobs")
    page.click("#generate")
    wait_held(page, held)
    page.click("#cancel")
    assert page.inner_text("#progress-text") == "Cancelling…"
    assert page.is_disabled("#cancel")
    job_id = start_job(page, held[0].continue_)  # the job is created now; the studio cancels it at once
    status = live_server.wait_job(job_id)
    assert status["state"] == "cancelled" and status["result"] is None, status  # no images were made
    page.wait_for_selector("#cancel", state="hidden")  # the studio has taken the job's end in
    assert page.inner_text("#progress-text").startswith("Cancelled")
    assert page.locator("#gallery li").count() == 0
    assert page.is_enabled("#generate")


def test_result_urls_are_released_when_replaced(studio: Studio, live_server: LiveServer, photo: Path) -> None:
    count_urls = """(() => {
        const live = new Set();
        const create = URL.createObjectURL, revoke = URL.revokeObjectURL;
        URL.createObjectURL = (b) => { const u = create(b); live.add(u); return u; };
        URL.revokeObjectURL = (u) => { live.delete(u); revoke(u); };
        window.liveUrls = () => live.size;
    })()"""
    page = studio.open(live_server, init_script=count_urls)
    upload_and_mask(page, photo)
    page.fill("#prompt", "a red linen skirt")
    page.fill("#steps", "2")  # and the default 2 variants: each run replaces several result URLs
    for run in range(3):
        generate(page, live_server)
        assert page.locator("#history li").count() == run + 1
    # the photo, then the last run's 2 images and its mask; earlier runs' URLs were revoked
    assert page.evaluate("window.liveUrls()") == 4


def test_order_variants_by_colour(page: Any, photo: Path, live_server: LiveServer) -> None:
    upload_and_mask(page, photo)
    page.select_option("#garment_type", "skirt")
    page.click("label[for=color-red]")
    wait_until(page, "() => document.querySelector('#prompt').value.includes('red')")
    page.select_option("#rank", "color")
    page.fill("#steps", "2")
    page.fill("#num_images", "3")
    generate(page, live_server)
    captions = page.locator("#gallery figcaption").all_inner_texts()[1:4]
    deltas = [float(re.search(r"ΔE ([0-9.]+)", c).group(1)) for c in captions]
    assert len(deltas) == 3 and deltas == sorted(deltas)  # closest colour first, each with its ΔE
    with page.expect_download() as download:
        page.locator("#gallery a.download").first.click()
    meta = json.loads(png_bytes_of(download.value.path()).info["restyle"])
    assert meta["ranked_by"] == "color" and meta["rank"] == 1 and meta["color_target"] == "#c8102e"
