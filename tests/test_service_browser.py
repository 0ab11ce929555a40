"""The service's page in headless Chromium (Playwright driving the machine's Chromium, served by a real uvicorn
on 127.0.0.1): pick or drop two photos and the verdict, the similarity and the annotated picture appear; one
photo gives its ages; a bad file gives the service's error; the page asks for nothing outside the service.

Skipped, with the reason, where no Chromium is installed: Playwright's own browser download needs a CDN that
build machines cannot reach, so the tests use the system's Chromium (Debian: `apt-get install chromium`,
which .ci/run does where it can). FACE_MATCH_AGE_CHROMIUM names another Chromium binary."""

import base64
import os
import shutil

import pytest
from service_app import load_analyzer, served

CHROMIUM = os.environ.get("FACE_MATCH_AGE_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None
)
try:
    import playwright.sync_api
except ImportError:  # a dev dependency; an install without the dev group lacks it
    playwright = None

pytestmark = [
    pytest.mark.slow,  # the service in a thread and Chromium in a process
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)"),
    pytest.mark.skipif(playwright is None, reason="playwright is not installed (uv sync installs the dev group)"),
]
# As root and offline: no sandbox (it needs user namespaces), no GPU, and none of Chromium's own background
# connections, which this machine's closed network refuses many at a time.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
TIMEOUT_MS = 120_000  # a comparison on a loaded 2-core machine


@pytest.fixture(scope="module")
def base_url(_vggface2_file, age_checkpoint):
    from fastapi.testclient import TestClient

    from face_match_age.service.endpoints import create_app

    app = create_app(load_analyzer(_vggface2_file[0], age_checkpoint))
    with TestClient(app), served(app) as url:  # the TestClient owns the app's lifespan (its model worker)
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url):
    """A fresh page of the service; requests anywhere else are refused and listed in page.elsewhere, script
    errors in page.script_errors."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.elsewhere, page.script_errors = [], []

    def only_the_service(route):
        if route.request.url.startswith(base_url + "/") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            page.elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_service)
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    page.goto(base_url + "/")
    page.wait_for_function("!document.getElementById('service').textContent.includes('connecting')")
    yield page
    assert page.elsewhere == []
    assert page.script_errors == []
    context.close()


def _shown(page, selector: str) -> bool:
    return page.locator(selector).is_visible()


def test_two_photos_give_the_verdict_the_similarity_and_the_annotated_picture(page, photo_dir):
    assert "threshold 0.7" in page.text_content("#service")
    assert page.is_disabled("#run")
    page.set_input_files("#image1", photo_dir / "astronaut.jpg")
    page.set_input_files("#image2", photo_dir / "astronaut_edit.jpg")
    assert page.text_content("#run") == "Compare"
    page.click("#run")
    page.wait_for_function("document.getElementById('annotated').naturalWidth > 0")
    verdict = page.text_content("#verdict")
    assert verdict.startswith(("MATCH", "NO MATCH"))
    score = float(page.text_content("#similarity-score"))
    assert page.text_content("#threshold") == "0.700"
    assert verdict.startswith("MATCH") == (score > 0.7)
    ages = page.text_content("#ages")
    assert "astronaut.jpg" in ages and "astronaut_edit.jpg" in ages and "±" in ages
    assert page.evaluate("document.getElementById('annotated').naturalWidth") > 900  # both photos side by side


def test_one_photo_gives_every_face_with_its_age(page, photo_dir):
    page.set_input_files("#image1", photo_dir / "two_people.jpg")
    assert page.text_content("#run") == "Show ages"
    page.click("#run")
    page.wait_for_function("document.getElementById('verdict').textContent.includes('faces found')")
    assert page.text_content("#verdict") == "2 faces found"
    assert page.locator("#ages tr").count() == 3  # a heading and a row per face
    assert "(main)" in page.text_content("#ages")
    assert _shown(page, "#age-canvas") and not _shown(page, "#annotated")
    page.wait_for_function("document.getElementById('age-canvas').width > 0")


def test_dropped_photos_are_compared(page, photo_dir):
    for slot, name in (("image1", "astronaut.jpg"), ("image2", "coffee.jpg")):
        data = base64.b64encode((photo_dir / name).read_bytes()).decode()
        page.evaluate(
            """([slot, data, name]) => {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
                const target = document.querySelector(`[data-slot="${slot}"]`);
                const drop = { dataTransfer: transfer, bubbles: true, cancelable: true };
                target.dispatchEvent(new DragEvent("drop", drop));
            }""",
            [slot, data, name],
        )
    page.click("#run")
    page.wait_for_function("document.getElementById('verdict').textContent.length > 0")
    assert page.text_content("#verdict") == "NO DECISION: no face found in coffee.jpg"
    assert "no face found" in page.text_content("#ages")
    page.wait_for_function("document.getElementById('annotated').naturalWidth > 0")


def test_a_file_that_is_no_image_shows_the_services_error_and_the_page_goes_on(page, photo_dir, tmp_path):
    (tmp_path / "notes.jpg").write_text("just text")
    page.set_input_files("#image1", tmp_path / "notes.jpg")
    page.click("#run")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert page.text_content("#error").startswith("415: cannot read image notes.jpg")
    assert not _shown(page, "#result")
    page.set_input_files("#image1", photo_dir / "astronaut.jpg")
    page.click("#run")
    page.wait_for_function("document.getElementById('verdict').textContent.includes('face found')")
    assert page.text_content("#error") == ""
