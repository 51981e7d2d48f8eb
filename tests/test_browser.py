"""The demo report in a real browser: headless Chromium at desktop and phone widths.

Screenshots go to $AUDITOR_SCREENSHOTS when it is set (CI keeps them), else to a temporary folder.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from browser import Chromium, Page, find_chromium

from auditor.sections import SECTION_NAMES, section_module

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None,
                       reason="no Chromium: apt-get install -y chromium (or set AUDITOR_CHROMIUM)"),
]

DESKTOP, PHONE = (1280, 900), (390, 844)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("AUDITOR_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser():
    with Chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def desktop(browser, demo_report, shots) -> Page:
    page = Page(browser, *DESKTOP)
    page.load((demo_report.out / "report.html").as_uri())
    page.screenshot(shots / "report-desktop.png")
    page.screenshot(shots / "report-desktop-full.png", full_page=True)
    return page


@pytest.fixture(scope="module")
def phone(browser, demo_report, shots) -> Page:
    page = Page(browser, *PHONE, mobile=True)
    page.load((demo_report.out / "report.html").as_uri())
    page.screenshot(shots / "report-phone.png")
    return page


def test_page_loads_without_console_errors_or_failed_requests(desktop, phone):
    for page in (desktop, phone):
        assert page.console_errors() == []
        assert page.failed_requests() == []
        outside = [url for url in page.requests() if not url.startswith(("data:", "file:"))]
        assert outside == []


def test_every_section_heading_is_present_and_visible(desktop):
    headings = desktop.evaluate("""Object.fromEntries([...document.querySelectorAll(
        "section.section > .section-head > h2")].filter((h) => h.getBoundingClientRect().height > 0)
        .map((h) => [h.closest("section").id, h.textContent.trim()]))""")
    for name in SECTION_NAMES:
        assert headings.get(name) == section_module(name).TITLE
    assert headings.get("checks") == "Checks"


def test_no_image_is_broken(desktop, phone):
    for page in (desktop, phone):
        counts = page.evaluate("""[document.images.length, [...document.images]
            .filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.alt)]""")
        assert counts[0] > 0 and counts[1] == []


def test_contents_stay_in_view_while_scrolling(desktop, phone):
    for page in (desktop, phone):
        page.evaluate("""window.scrollTo({top: document.documentElement.scrollHeight,
                                          behavior: "instant"})""")
        box = page.evaluate("""(() => { const r = document.querySelector("nav.toc")
            .getBoundingClientRect(); return [r.top, r.bottom, window.scrollY]; })()""")
        assert box[2] > 1000, "the report is long enough to scroll"
        assert box[0] > -1 and box[1] > 30, "the contents scrolled out of view"
        page.evaluate("window.scrollTo({top: 0, behavior: 'instant'})")


def test_phone_width_needs_no_sideways_scrolling(phone):
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE[0]


def test_top_of_page_shows_verdict_and_key_figures_above_the_fold(desktop):
    boxes = desktop.evaluate("""[".banner", ".key-figures"].map((s) =>
        document.querySelector(s).getBoundingClientRect().bottom)""")
    assert max(boxes) <= DESKTOP[1]
    links = desktop.evaluate("""[...document.querySelectorAll(".kf a")]
        .map((a) => document.getElementById(a.getAttribute("href").slice(1)) !== null)""")
    assert links and all(links)


def test_clicking_a_figure_shows_it_larger(desktop):
    small = desktop.evaluate("""(() => { const img = document.querySelector(".gallery img");
        img.scrollIntoView({block: "center", behavior: "instant"});
        const r = img.getBoundingClientRect();
        return [r.x + r.width / 2, r.y + r.height / 2, r.width]; })()""")
    for kind in ("mousePressed", "mouseReleased"):
        desktop.send("Input.dispatchMouseEvent", {"type": kind, "x": small[0], "y": small[1],
                                                  "button": "left", "clickCount": 1})
    large = desktop.evaluate("""[document.getElementById("zoom").open,
        document.querySelector("#zoom img").getBoundingClientRect().width]""")
    assert large[0] and large[1] > 3 * small[2]
    desktop.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Escape",
                                            "windowsVirtualKeyCode": 27})
    assert desktop.evaluate("document.getElementById('zoom').open") is False


def test_print_layout_hides_contents_opens_details_and_keeps_figures_whole(browser, demo_report,
                                                                          shots):
    page = Page(browser, 794, 1123)  # A4 at 96 dpi
    page.load((demo_report.out / "report.html").as_uri())
    page.send("Emulation.setEmulatedMedia", {"media": "print"})
    page.evaluate("dispatchEvent(new Event('beforeprint'))")
    layout = page.evaluate("""({
        toc: getComputedStyle(document.querySelector("nav.toc")).display,
        closed: document.querySelectorAll("details:not([open])").length,
        width: document.querySelector("main").getBoundingClientRect().right,
        widest: Math.max(...[...document.images].map((i) => i.getBoundingClientRect().right)),
    })""")
    assert layout["toc"] == "none" and layout["closed"] == 0
    assert layout["widest"] <= layout["width"] + 1
    pdf = page.send("Page.printToPDF", {"printBackground": True})["data"]
    (shots / "report.pdf").write_bytes(base64.b64decode(pdf))
    assert (shots / "report.pdf").stat().st_size > 10_000
