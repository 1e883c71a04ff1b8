"""The reports in a real browser: Debian's chromium driven by Playwright opens a run report and a sweep
report from file://, with no console error, no network request, every figure drawn; screenshots are kept
under test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import tiny
from test_report import make_sweep

from groklab.config import Config
from groklab.report import report_run, report_sweep

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
"""URL schemes that never leave the machine; any other request fails the test."""


def require_browser() -> None:
    """Skip on a developer machine without chromium/playwright; in CI (CI set) their absence is a failure."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright Python package (pip install -e '.[dev]')"
    else:
        missing = "" if shutil.which(CHROMIUM) else f"{CHROMIUM} (apt-get update && apt-get install -y chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run: {missing} is missing")
        pytest.skip(f"{missing} is missing")


def open_and_check(context, page_path: Path, screenshot: str) -> dict:
    """Load `page_path`, wait for every plot, fail on console errors or network requests; returns counts."""
    errors: list[str] = []
    requests: list[str] = []
    page = context.new_page()
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: None if req.url.startswith(LOCAL_SCHEMES) else requests.append(req.url))
    page.goto(page_path.as_uri(), wait_until="load")
    n_plots = page.locator("div.plot").count()
    assert n_plots > 0, f"{page_path} has no figures"
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('div.plot')).every(d => d.querySelector('svg.main-svg'))", timeout=30_000
    )
    drawn = page.evaluate(
        """() => Array.from(document.querySelectorAll('div.plot')).map(d => {
             const box = d.getBoundingClientRect();
             const marks = d.querySelectorAll('g.trace path, g.trace rect, g.hm image, g.points path').length;
             return {key: d.dataset.key, width: box.width, height: box.height, marks: marks};
           })"""
    )
    for fig in drawn:
        assert fig["width"] > 100 and fig["height"] > 100, f"figure {fig['key']} has no size: {fig}"
        assert fig["marks"] > 0, f"figure {fig['key']} drew nothing: {fig}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    assert not errors, f"console errors on {page_path.name}: {errors}"
    assert not requests, f"network requests from {page_path.name}: {requests}"
    return {"page": page, "figures": {f["key"] for f in drawn}}


@pytest.mark.slow
def test_reports_render_offline_in_chromium(tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    from groklab.train import train

    run_dir = tmp_path / "run"
    train(tiny(Config(), {"task.p": 7, "task.train_frac": 0.5, "task.val_frac": 0.25, "steps": 12}), run_dir, progress=False)
    run_page = report_run(run_dir, sharpness=False)
    sweep_page = report_sweep(make_sweep(tmp_path / "sweep"), quiet=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            run = open_and_check(context, run_page, "report-run.png")
            assert {"run_acc", "run_loss"} <= run["figures"]
            sweep = open_and_check(context, sweep_page, "report-sweep.png")
            assert {"steps_to_grok", "final_test_acc"} <= sweep["figures"]
            # The table sorts on click: steps to 99% val acc ascending, runs that never grokked last.
            page = sweep["page"]
            header = page.locator("table.sortable th", has_text="steps_to_val_acc_99")
            header.click()
            column = page.evaluate(
                "(name) => { const t = document.querySelector('table.sortable'); const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent === name);"
                " return Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[i].dataset.v)); }",
                "steps_to_val_acc_99",
            )
            numbers = [v for v in column if v == v]
            assert numbers == sorted(numbers) and len(numbers) < len(column)
            assert all(v != v for v in column[len(numbers) :])
            # A run page linked from the table opens and draws too (it shares the sweep's plotly.min.js).
            href = page.locator("table.sortable a").first.get_attribute("href")
            open_and_check(context, sweep_page.parent / href, "report-sweep-run.png")
        finally:
            context.close()
