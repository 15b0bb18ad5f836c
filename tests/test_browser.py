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
    for elem in ("inspect-before", "inspect-after", "inspect-removed", "inspect-loc", "inspect-crop", "inspect-jigsaw"):
        img = page.locator(f"#{elem} img").first
        see(img, show="#inspect-status")
        assert page.evaluate("e => e.complete && e.naturalWidth > 0", img.element_handle()), elem
    table = page.locator("#inspect-top5")
    see(table.get_by_text("combined").first, show="#inspect-top5")
    assert table.get_by_text("%").count() > 0  # probabilities in the cells
    assert page.locator("#inspect-gallery img").count() >= 2
    see(page.locator("#inspect-status", has_text="IoU with ground truth"), show="#inspect-status")
    page.screenshot(path=str(examples_dir.parent / "inspect_page.png"), full_page=True)


PAINTED = """ids => ids.every(id => {
  const imgs = Array.from(document.querySelectorAll('#' + id + ' img'));
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
})"""


def test_a_click_on_an_example_inspects_it_and_paints_the_suppression_controller(page, dashboard_url):
    """A first visit: one click on an example, nothing else - the suppression panel, the controller's gate plot
    and the box-source map are painted, and no output shows an error."""
    pg = page
    pg.set_viewport_size({"width": 1280, "height": 1000})
    pg.goto(dashboard_url)
    # an empty request first: one message, no error badge on the outputs
    pg.locator("#inspect-run").click()
    see(pg.locator("#inspect-status", has_text="No image yet"), show="#inspect-status")
    assert pg.get_by_text("Error", exact=True).count() == 0
    pg.locator("#inspect-examples button").first.click()
    see(pg.locator("#inspect-status", has_text="Prediction:"), show="#inspect-status")
    pg.wait_for_function(PAINTED, arg=["inspect-before", "inspect-after", "inspect-removed", "inspect-loc",
                                       "inspect-channels"])
    see(pg.locator("#inspect-gate canvas, #inspect-gate svg").first, show="#inspect-gate")
    assert "Learnable controller" in pg.locator("#inspect-supp-note").inner_text()
    assert pg.locator("#inspect-loc").get_by_text("box source:").count() >= 1
    assert pg.get_by_text("Error", exact=True).count() == 0
    # the Inspect button sits by the image, above the fold at 1280 x 1000
    box = pg.locator("#inspect-run").bounding_box()
    assert box is not None and box["y"] + box["height"] <= 1000
    pg.set_viewport_size({"width": 1400, "height": 1000})


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
