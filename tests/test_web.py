"""The web page at / in a real browser: Debian's Chromium driven by Playwright, against a real `avgen serve` with
its Ray worker pool and the small model (tests/test_service.py's `service`). The page is used as a person would:
the API key typed in, a job submitted through the form, its MP4 playing in the <video> element, a second job
canceled from its row, a batch's bad lines reported before anything is sent. Skips only where no Chromium
executable is found (`apt-get install chromium`; .ci/run installs it)."""

from __future__ import annotations

import io
import os
import re
import shutil

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from test_api import KEY_A
from test_service import service  # noqa: F401 - the fixture: a real serve with a one-worker pool, small model

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser", "/snap/bin/chromium")
JOB_SECONDS = 1.2
SCREENSHOT_COPY = os.environ.get("AVGEN_WEB_SCREENSHOT")  # also save the screenshot here (docs/web.png for the README)


def chromium_executable() -> str | None:
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    return next((p for p in CHROMIUM_PATHS if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            f"no Chromium executable: none of {', '.join(CHROMIUM_NAMES)} on PATH nor {', '.join(CHROMIUM_PATHS)} "
            "(Debian: apt-get install chromium)"
        )
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def expected(message) -> bool:
    """The browser's own line for a 4xx answer (the 401 before the key, the 422s of bad input) is no page error."""
    return message.text.startswith("Failed to load resource: the server responded with a status of 4")


@pytest.fixture(scope="module")
def page(browser, service):  # noqa: F811 - the imported fixture
    """One page for the module: the tests run in order on it (the first types the key in; give_key does it for a
    test run alone)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.requests = []  # what the page sent: url and headers
    page.on("request", lambda r: page.requests.append((r.url, r.headers)))
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" and not expected(m) else None)
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.goto(service["url"] + "/")
    yield page
    context.close()


def give_key(page) -> None:
    """Type the API key where the page asks for it (a test run alone starts on a page that has not had it)."""
    if not page.evaluate("() => sessionStorage.getItem('avgen-api-key')"):
        expect(page.locator("#key-panel")).to_be_visible()  # once the first listing has answered 401
        page.fill("#api-key", KEY_A)
        page.click("#key-form button[type=submit]")
    expect(page.locator("#key-panel")).to_be_hidden()


def drop_after_two_events(route, cut: list) -> None:
    """A connection that drops: the browser gets the real stream's first two events, then the stream ends before
    the job's final event (the ids sent go into `cut`)."""
    text = ""
    with httpx.stream("GET", route.request.url, headers=route.request.headers, timeout=60) as r:
        for line in r.iter_lines():
            text += line + "\n"
            if line.startswith("id:"):
                cut.append(line.partition(":")[2].strip())
            if not line and len(cut) == 2:
                break
    route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=text)


def not_blank(png: bytes) -> tuple[int, float]:
    """(distinct colours, spread of the grey levels) of an image: a blank one has ~1 colour and no spread."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24)
    grey = image.convert("L")
    histogram = grey.histogram()
    n = sum(histogram)
    mean = sum(i * c for i, c in enumerate(histogram)) / n
    spread = (sum(c * (i - mean) ** 2 for i, c in enumerate(histogram)) / n) ** 0.5
    return len(colours), spread


def test_the_page_is_served_at_the_root_with_its_files_and_stays_out_of_the_api_schema(service):  # noqa: F811
    with httpx.Client(base_url=service["url"], timeout=10) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'src="web/app.js"' in page.text and 'href="web/style.css"' in page.text
        assert c.get("/web/app.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))
        assert c.get("/web/style.css").headers["content-type"].startswith("text/css")
        assert c.get("/web/missing.js").status_code == 404
        paths = c.get("/openapi.json").json()["paths"]
        assert "/" not in paths and not any(p.startswith("/web") for p in paths)


def test_a_job_submitted_through_the_form_plays_its_mp4_in_the_page_with_its_scores(page, tmp_path):
    # Auth is on: the first listing answers 401 and the page asks for the key; a wrong key is refused in words.
    expect(page.locator("#key-panel")).to_be_visible()
    page.fill("#api-key", "not-a-key-of-this-server")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-error")).to_have_text("the API key is not valid")
    page.fill("#api-key", KEY_A)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-panel")).to_be_hidden()
    expect(page.locator("#ready")).to_have_text("ready", timeout=30_000)

    # An error of the API is shown as its problem detail.
    page.fill("#g-text", "Hello there")
    page.fill("#g-seconds", "601")
    page.click("#g-submit")
    expect(page.locator("#g-error")).to_contain_text("seconds: Input should be less than or equal to 600")

    page.fill("#g-seconds", str(JOB_SECONDS))
    page.fill("#g-seed", "3")
    page.click("details.advanced summary")
    page.fill("#g-steps", "4")
    page.click("#g-submit")
    expect(page.locator("#g-error")).to_be_hidden()
    row = page.locator("#jobs li.job").first
    expect(row.locator(".job-title")).to_have_text(f"“Hello there” · {JOB_SECONDS} s · seed 3")
    job_id = row.get_attribute("data-job-id")
    expect(page.locator("#viewer-body")).to_have_attribute("data-job-id", job_id)
    expect(row).to_have_attribute("data-status", "succeeded", timeout=240_000)
    expect(page.locator("#queue-note")).to_have_text("all finished")

    # The viewer plays the MP4 it fetched with the key (a Blob URL), and shows the scores beside it.
    video = page.locator("#viewer video")
    page.wait_for_function(
        "() => { const v = document.querySelector('#viewer video'); return v && v.readyState === 4 && v.duration > 0 }",
        timeout=30_000,
    )
    assert video.evaluate("v => v.src").startswith("blob:")
    duration = video.evaluate("v => v.duration")
    assert abs(duration - JOB_SECONDS) <= 0.1, duration
    assert page.locator("#viewer a.button", has_text="Download MP4").evaluate("a => a.href") == video.evaluate(
        "v => v.src"
    )
    expect(page.locator("#viewer .scores tr[data-metric=sync_confidence] td")).to_have_text(
        re.compile(r"^-?\d+\.\d{3}$")
    )
    expect(page.locator("#viewer .scores tr[data-metric=temporal_flickering] td")).to_have_text(
        re.compile(r"^\d\.\d{4}$")
    )
    colours, spread = not_blank(video.screenshot())  # a decoded frame is drawn, not a black box
    assert colours > 50 and spread > 5, (colours, spread)

    # The events stream and the result were fetched with the key (EventSource and <video src> could not send it).
    sent = {url.split("/v1/")[-1]: headers.get("authorization") for url, headers in page.requests if "/v1/jobs/" in url}
    assert sent.get(f"jobs/{job_id}/events") == f"Bearer {KEY_A}", sorted(sent)
    assert sent.get(f"jobs/{job_id}/result") == f"Bearer {KEY_A}", sorted(sent)

    page.wait_for_timeout(1000)  # the video controls' loading spinner fades out (looks only)
    shot = tmp_path / "web.png"
    page.screenshot(path=shot, full_page=True)
    colours, spread = not_blank(shot.read_bytes())
    assert colours > 200 and spread > 10, (colours, spread)
    if SCREENSHOT_COPY:
        shutil.copy(shot, SCREENSHOT_COPY)
    assert page.console_errors == []


def test_a_second_job_is_canceled_from_its_row(page):
    give_key(page)
    rows = page.locator("#jobs li.job")
    before = rows.count()
    page.fill("#g-text", "A much longer one, to be canceled")
    page.fill("#g-seconds", "20")
    page.locator("#g-steps").evaluate("input => { input.value = '' }")  # the default steps: a long run
    cut = []
    page.route("**/v1/jobs/*/events", lambda route: drop_after_two_events(route, cut), times=1)
    page.click("#g-submit")
    expect(rows).to_have_count(before + 1)
    job_id = rows.first.get_attribute("data-job-id")  # newest first
    expect(page.locator("#viewer-body")).to_have_attribute("data-job-id", job_id)
    row = page.locator(f'#jobs li[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "running", timeout=60_000)
    expect(row.locator(".job-line")).to_contain_text("%")
    # The first stream was cut after two events: the page followed again from the last one it had seen.
    for _ in range(100):
        followed = [h.get("last-event-id") for url, h in page.requests if url.endswith(f"/v1/jobs/{job_id}/events")]
        if len(followed) >= 2:
            break
        page.wait_for_timeout(100)
    assert len(followed) >= 2 and followed[0] is None and followed[1] == cut[-1], (followed, cut)
    row.locator("button.cancel").click()
    expect(row).to_have_attribute("data-status", "canceled", timeout=60_000)
    expect(row.locator(".job-line")).to_have_text("canceled")
    expect(row.locator("button.cancel")).to_be_hidden()
    expect(page.locator("#viewer-body")).to_have_attribute("data-status", "canceled")
    assert page.console_errors == []


def test_a_batch_with_bad_lines_is_reported_by_line_before_anything_is_sent(page):
    give_key(page)
    page.click(".tab[data-tab=batch]")
    page.fill("#b-text", '{"text": "Hi", "seconds": 1}\n\n{"text": "Oops",\n{"txt": "x"}\n[1]\n{"seed": 1.5}')
    errors = page.locator("#b-errors li")
    expect(errors).to_have_count(4)
    assert [e.get_attribute("data-line") for e in errors.all()] == ["3", "4", "5", "6"]
    expect(errors.nth(1)).to_contain_text('unknown field "txt"')
    expect(errors.nth(3)).to_contain_text("seed must be a whole number")
    expect(page.locator("#b-submit")).to_be_disabled()
    jobs_before = page.locator("#jobs li.job").count()
    page.fill("#b-text", '{"text": "Hi", "seconds": 1}\n{"text": "Hey", "seconds": 700}')
    expect(page.locator("#b-errors")).to_be_hidden()
    page.click("#b-submit")  # the server's 422 names items[1]: the page says line 2
    expect(page.locator("#b-error")).to_contain_text("line 2: seconds: Input should be less than or equal to 600")
    assert page.locator("#jobs li.job").count() == jobs_before
    assert page.console_errors == []
