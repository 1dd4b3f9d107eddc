"""The web playground in real headless Chromium (Debian's `chromium`, driven by Playwright): enter a
key, generate and watch the progress change and a preview, see the image, edit it (a chained edit), upload an
image to edit with a reference, see the gallery, cancel a running job; no request leaves loopback.
A screenshot is saved as a test artifact (test-artifacts/playground.png)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from support.helpers import scripted_models_each, start_server

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("playground")
    models = scripted_models_each(
        root / "models.toml",
        {
            "uni-1": {"steps": 40, "step_s": 0.05},
            "uni-1-max": {"steps": 400, "step_s": 0.05},  # slow: to cancel
        },
    )
    live = start_server(root / "data", models, workers=2, DAGUERRE_PREVIEW_EVERY_S="0.3")
    yield live
    assert live.stop() in (0, -signal.SIGTERM), live.log()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM is not None, "the chromium package is needed (scripts/test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.base_url + "/")
    page.fill("#key", server.key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-state")).to_have_text("saved")
    yield page
    hosts = {urlsplit(url).hostname for url in requested if not url.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, requested  # nothing left loopback: no CDN, no fonts, no analytics
    context.close()


def wait_for_state(page: Page, state: str, timeout_ms: int = 60_000) -> None:
    expect(page.locator("#job-state")).to_have_text(state, timeout=timeout_ms)


def result_size(page: Page) -> tuple[int, int]:
    """The shown result's size once the browser has loaded it."""
    page.wait_for_function(
        "() => { const i = document.getElementById('result');"
        " return !i.hidden && i.complete && i.naturalWidth > 0 }"
    )
    width, height = page.eval_on_selector("#result", "img => [img.naturalWidth, img.naturalHeight]")
    return int(width), int(height)


def test_generate_watch_progress_see_the_image_and_edit_it(page: Page, server, tmp_path):
    page.fill("#prompt", "a red circle above a blue square")
    page.select_option("#aspect-ratio", "16:9")
    page.keyboard.press("Control+Enter")  # keyboard-usable: Ctrl+Enter submits
    expect(page.locator("#job-state")).to_contain_text("step", timeout=30_000)
    seen = set()
    for _ in range(80):  # the progress bar moves
        seen.add(page.eval_on_selector("#job-progress", "p => p.value"))
        if len(seen) >= 3:
            break
        page.wait_for_timeout(50)
    assert len(seen) >= 3, seen
    # a preview of the picture so far, from the events stream, decoded by the browser
    page.wait_for_function(
        "() => { const i = document.getElementById('preview');"
        " return !i.hidden && i.complete && i.naturalWidth > 0 }"
    )
    assert "preview of the picture at step" in (page.get_attribute("#preview", "alt") or "")
    wait_for_state(page, "completed")
    width, height = result_size(page)
    assert width > height > 0  # 16:9
    expect(page.locator("#preview")).to_be_hidden()  # the result took its place
    first = page.text_content("#job-id")
    assert page.get_attribute("#download", "href")

    # a chained edit: "Edit this image", then the instruction
    page.click("#edit-result")
    expect(page.locator("#edit-note")).to_be_visible()
    page.fill("#prompt", "make the circle green")
    page.click("#generate")
    expect(page.locator("#job-id")).not_to_have_text(first)
    wait_for_state(page, "completed")
    second = page.text_content("#job-id")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)

    # an uploaded image to edit, with a reference image
    source, reference = tmp_path / "source.png", tmp_path / "reference.png"
    Image.new("RGB", (60, 90), (10, 200, 30)).save(source)
    Image.new("RGB", (40, 40), (200, 10, 30)).save(reference)
    expect(page.locator("#edit-note")).to_be_hidden()  # a new edit starts from a result or a file
    page.set_input_files("#source-file", str(source))
    page.set_input_files("#reference-files", str(reference))
    page.fill("#prompt", "make it blue")
    page.click("#generate")
    expect(page.locator("#job-id")).not_to_have_text(second or "")
    wait_for_state(page, "completed")
    width, height = result_size(page)
    assert width < height  # the source's shape

    # the gallery lists the account's generations with their states
    page.click("#refresh")
    expect(page.locator("#gallery li")).to_have_count(3)
    assert set(page.eval_on_selector_all("#gallery li", "items => items.map(i => i.dataset.state)")) == {
        "completed"
    }


def test_a_running_job_is_cancelled_and_the_gallery_shows_why(page: Page):
    page.select_option("#model", "uni-1-max")
    page.fill("#prompt", "a slow one")
    page.click("#generate")
    expect(page.locator("#job-state")).to_contain_text("step", timeout=30_000)
    page.click("#cancel")
    wait_for_state(page, "failed")
    expect(page.locator("#job-failure")).to_have_text("generation_failed: Cancelled by request")
    page.click("#refresh")
    failed = page.locator('#gallery li[data-state="failed"]')
    expect(failed.first).to_contain_text("Cancelled by request")


def test_the_page_fits_a_phone_and_says_what_went_wrong(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(server.base_url + "/playground")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.fill("#key", "dg_not-a-key")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-state")).to_contain_text("401")
    context.close()


@pytest.mark.parametrize(
    ("path", "rendered"), [("/docs", ".swagger-ui .info .title"), ("/redoc", ".redoc-wrap h1")]
)
def test_the_api_docs_render_offline(browser, server, path, rendered):
    """/docs and /redoc draw the API's pages from daguerre's own assets (no CDN)."""
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []
    refused: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on(
        "requestfailed",
        lambda request: refused.append(request.url) if "csp" in (request.failure or "").lower() else None,
    )
    page.goto(server.base_url + path)
    expect(page.locator(rendered).first).to_contain_text("daguerre", timeout=30_000)
    page.wait_for_load_state("networkidle")  # ReDoc asks for its logo after drawing the page
    # ReDoc's bundle asks for its logo on cdn.redoc.ly; the page's CSP makes the browser refuse it.
    sent = [url for url in requested if url not in refused and not url.startswith(("data:", "blob:"))]
    assert {urlsplit(url).hostname for url in sent} == {"127.0.0.1"}, (requested, refused)
    context.close()
