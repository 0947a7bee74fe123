"""The app in a real headless Chromium (Playwright): every page renders, screenshots go to test-artifacts/.

Needs Debian's chromium (``apt-get install chromium``); the test fails, not skips, without it.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from apps.cli.app import streamlit_command
from ingest.lake import Lake
from ingest.reader import read_images

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_data):
    port = free_port()
    process = subprocess.Popen(streamlit_command(app_data.lake, app_data.runs, port=port), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = process.stdout.read().decode(errors="replace")[-2000:]
            pytest.fail(f"the app did not start on {url}:\n{output}")
        time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`) to "
                    "run the browser tests (CI installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                              headless=True)
        yield chromium
        chromium.close()


def render(browser, url: str, title: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(url)
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=90_000)
    page.wait_for_load_state("networkidle")
    page.locator("[data-testid='stSpinner']").first.wait_for(state="detached", timeout=90_000)
    return page


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(800)  # let plotly finish drawing
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_patient_page_in_a_browser(server, browser, app_data):
    page = render(browser, server, "Patient")
    page.get_by_text("Choose a patient to see").wait_for(timeout=30_000)  # no one's record until chosen
    assert page.get_by_text("Survival at 1 year").count() == 0
    shot(page, "patient_choose")
    page.close()
    imaged = sorted(read_images(Lake(app_data.lake))["patient_key"])[0]
    page = render(browser, f"{server}/?patient={imaged}", "Patient")  # the address the demo prints
    page.get_by_text("Survival at 1 year").wait_for(timeout=90_000)
    page.get_by_text("Risk percentile").wait_for(timeout=30_000)  # metrics arrive one by one
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=30_000)  # survival and diagnosis charts drawn
    shot(page, "patient_risk")
    page.get_by_role("tab", name="Treatment").click()  # tabs render lazily: each click reruns the page
    page.get_by_text("not a treatment recommendation").wait_for(timeout=30_000)
    shot(page, "patient_treatment")
    page.get_by_role("tab", name="Why").click()
    page.get_by_text("Lab trends", exact=True).wait_for(timeout=90_000)
    page.get_by_text("Integrated gradients from the training patients' mean image").first.wait_for(timeout=30_000)
    shot(page, "patient_why")
    page.get_by_role("tab", name="Timeline").click()
    page.get_by_text("All ", exact=False).filter(has_text="events").first.wait_for(timeout=30_000)
    shot(page, "patient_timeline")
    page.get_by_role("tab", name="Model card").click()
    page.get_by_text("Intended use.", exact=True).wait_for()
    shot(page, "patient_model_card")
    assert "Traceback" not in page.content()
    page.close()


# Text that CSS cuts off with an ellipsis (an st.metric's value or label wider than its column)
CUT_OFF = """() => [...document.querySelectorAll("[data-testid='stMain'] *")]
    .filter(e => getComputedStyle(e).textOverflow === "ellipsis" && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent)"""


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (1920, 1080)])
def test_the_patient_header_and_risk_tab_are_not_cut_off(server, browser, app_data, width, height):
    """A laptop's 1366 px: the longest synthetic diagnosis, "Squamous cell carcinoma of lung", is shown whole
    (as an st.metric in a fifth of the row it read "Squamous cell carcino…"), and so is every other value."""
    from ingest.reader import read_conditions

    conditions = read_conditions(Lake(app_data.lake))
    key = sorted(conditions.loc[conditions["display"] == "Squamous cell carcinoma of lung (disorder)",
                                "patient_key"])[0]
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(f"{server}/?patient={key}")
    page.get_by_text("Risk percentile").wait_for(timeout=90_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)  # the survival chart
    shot(page, f"patient_header_{width}")
    heading = page.get_by_text("Diagnosis: Squamous cell carcinoma of lung", exact=True)
    assert page.evaluate(CUT_OFF) == []
    assert heading.is_visible()
    page.close()


@pytest.mark.parametrize(("path", "title", "expected"), [
    ("models", "Models", "Run used on the Patient page"),
    ("data", "Data", "Ingest runs"),
])
def test_other_pages_in_a_browser(server, browser, path, title, expected):
    page = render(browser, f"{server}/{path}", title)
    page.get_by_text(expected).first.wait_for()
    shot(page, path)
    if path == "data":
        page.get_by_role("tab", name="Coverage").click()
        page.get_by_text("of 30 patients").wait_for(timeout=30_000)
        shot(page, "data_coverage")
    # opened by its URL, the page still shows the router's navigation, not a list of the page files
    words = page.locator("[data-testid='stSidebarNav']").inner_text().split()  # icon names, then titles
    names = {"Patient", "Models", "Data", "app", "patient", "models", "data"}
    assert [w for w in words if w in names] == ["Patient", "Models", "Data"], words
    assert "Traceback" not in page.content()
    page.close()


def test_the_diagnosis_and_death_labels_of_the_timeline_do_not_overlap(browser, tmp_path):
    """A death five days after the diagnosis (as in synthetic demo patients): both labels stay legible."""
    import pandas as pd

    from apps.streamlit import charts

    diagnosis = pd.Timestamp("2017-07-01", tz="UTC")
    events = pd.DataFrame({"when": [pd.Timestamp("2010-02-01", tz="UTC"), diagnosis],
                           "end": pd.NaT, "category": ["Condition", "Condition"],
                           "label": ["Asthma", "Adenocarcinoma of lung (disorder)"], "count": 1})
    html = tmp_path / "timeline.html"
    charts.timeline_figure(events, index_date=diagnosis, death_date=diagnosis + pd.Timedelta(days=5)) \
        .write_html(html, include_plotlyjs=True)
    page = browser.new_page(viewport={"width": 1400, "height": 600})
    page.goto(html.as_uri())
    page.locator("g.annotation").nth(1).wait_for()
    shot(page, "timeline_diagnosis_and_death")
    boxes = page.eval_on_selector_all("g.annotation", "els => els.map(e => { const r = e.getBoundingClientRect(); "
                                                      "return [e.textContent, r.left, r.right]; })")
    page.close()
    (_, left_a, right_a), (_, left_b, right_b) = sorted(boxes, key=lambda b: b[1])
    assert {b[0] for b in boxes} == {"diagnosis (index)", "death"}
    assert right_a <= left_b, boxes  # side by side, not one over the other
