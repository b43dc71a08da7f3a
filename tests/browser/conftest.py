"""A real server for browser tests: daphne in a thread of this process (so the simulated hardware worker and
the in-memory channel layer are shared), task workers, and Debian's Chromium driven by Playwright."""
import os
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def live_url(django_db_setup, django_db_blocker, tmp_path_factory):
    """Base URL of the ASGI app on a free port, for the browser tests only: the server and its task workers
    stop when they are done, so nothing of theirs runs on into the rest of the suite (Twisted's reactor
    cannot restart, so there is one per session at most)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from django.conf import settings

    django_db_blocker.unblock()  # the server's threads use the test database for the whole session
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")
    from daphne.server import Server

    from ssumweb.asgi import application
    from ssumweb.workers import start_task_worker

    workers = [start_task_worker(["default", "processing"], "browser-processing"),
               start_task_worker(["training"], "browser-training")]
    port = free_port()
    server = Server(_static(application),
                    endpoints=[f"tcp:port={port}:interface=127.0.0.1"], signal_handlers=False, verbosity=0)
    thread = threading.Thread(target=server.run, name="daphne", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    from twisted.internet import reactor

    reactor.callFromThread(reactor.stop)
    thread.join(5)
    for worker in workers:
        worker.worker.running = False
    for worker in workers:
        worker.join(60)
    django_db_blocker.restore()


def _static(application):
    """Serve /static/ from the finders (as runserver does) and everything else through the app."""
    from channels.routing import ProtocolTypeRouter
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    return ProtocolTypeRouter({"http": ASGIStaticFilesHandler(application), "websocket": application})


@pytest.fixture(scope="package")  # Playwright's sync API runs an event loop: end it before the async tests
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, which Django's async-safety check would
    # take for async code calling the ORM; allowed for the browser tests only.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=SIZES["desktop"])
    page = context.new_page()
    page.console_errors = []
    # JavaScript errors count; failed loads are judged by the response listener below, which knows the URL:
    # an API's 4xx answer to a bad input is the expected, shown-to-the-user result, anything else is an error.
    page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
            and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.on("response", lambda r: (r.status >= 500 or (r.status >= 400 and "/api/" not in r.url))
            and page.console_errors.append(f"{r.status} {r.url}"))
    yield page
    context.close()


# Widest thing on the page: the document, the body and main (html/body hide x-overflow, so their scrollWidth
# alone would not tell), and any element's right edge outside the deep-zoom viewers and the phone's top menu (which
# clip their own insides: the menu scrolls sideways).
WIDEST = """() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth,
    document.querySelector("main").scrollWidth,
    ...[...document.querySelectorAll("main *, header *")]
        .filter((e) => !e.closest(".osd") && !e.matches(".topbar nav *") && e.getClientRects().length)
        .map((e) => Math.ceil(e.getBoundingClientRect().right)))"""


# Form controls without an accessible name (a <label>, aria-label/-labelledby, a title, or a button's own text).
UNLABELLED = """() => [...document.querySelectorAll("input:not([type=hidden]), select, textarea, button")]
    .filter((c) => c.getClientRects().length && !c.closest(".osd"))
    .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label") && !c.getAttribute("aria-labelledby")
        && !c.title && !(c.tagName === "BUTTON" && c.textContent.trim()))
    .map((c) => c.outerHTML.slice(0, 120))"""


def screenshot(page, name: str) -> None:
    """Save the page at desktop and phone size into test-artifacts/screenshots/; every control must have a label,
    and at phone size nothing may stick out sideways (a lab member would have to scroll, or would not see it)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert page.evaluate(UNLABELLED) == [], f"{name}: controls without a label"
    original = page.viewport_size
    for label, size in SIZES.items():
        page.set_viewport_size(size)
        page.wait_for_timeout(150)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
        if label == "phone":
            widest = page.evaluate(WIDEST)
            assert widest <= size["width"] + 1, f"{name}: content {widest} px wide on a {size['width']} px phone"
    page.set_viewport_size(original)
