"""A real browser on the dashboard: headless Debian Chromium driven by Playwright."""

from pathlib import Path

import pytest

from waits import see, wait_ms

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                               "(apt-get install chromium)")


def open_page(url: str, width: int, height: int):
    """Yield a Playwright page on ``url`` in headless Chromium (closed afterwards)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            pg = browser.new_page(viewport={"width": width, "height": height})
            pg.set_default_timeout(wait_ms(60))  # Playwright's own waits (clicks, fills)
            pg.goto(url)
            yield pg
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(dashboard_url):
    yield from open_page(dashboard_url, 1400, 1000)


def test_upload_inspect_and_see_results(page, examples_dir):
    page.locator("#inspect-image input[type=file]").set_input_files(str(examples_dir / "example_2.jpg"))
    see(page.locator("#inspect-image img").first)  # the upload finished
    page.locator("#inspect-run").click()
    see(page.locator("#inspect-status", has_text="Prediction:"), show="#inspect-status")
    for elem in ("inspect-loc", "inspect-plain", "inspect-crop", "inspect-jigsaw"):
        img = page.locator(f"#{elem} img").first
        see(img, show="#inspect-status")
        assert page.evaluate("e => e.complete && e.naturalWidth > 0", img.element_handle()), elem
    table = page.locator("#inspect-top5")
    see(table.get_by_text("combined").first, show="#inspect-top5")
    assert table.get_by_text("%").count() > 0  # probabilities in the cells
    assert page.locator("#inspect-gallery img").count() >= 2
    see(page.locator("#inspect-status", has_text="IoU with ground truth"), show="#inspect-status")
    page.screenshot(path=str(examples_dir.parent / "inspect_page.png"), full_page=True)


def test_bad_upload_shows_an_error_and_the_page_recovers(page, bad_inputs, examples_dir):
    page.locator("#inspect-image input[type=file]").set_input_files(str(bad_inputs["truncated"]))
    page.locator("#inspect-run").click()
    see(page.get_by_text("cannot decode").first)
    page.screenshot(path=str(examples_dir.parent / "inspect_error.png"))
    # the page still works: a good image afterwards
    page.locator("#inspect-image input[type=file]").set_input_files(str(examples_dir / "example_0.jpg"))
    see(page.locator("#inspect-image img").first)
    page.locator("#inspect-run").click()
    see(page.locator("#inspect-status", has_text="IoU with ground truth"), show="#inspect-status")
