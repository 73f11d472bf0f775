"""The docs' picture of a sweep's MLflow experiment (docs/tasks/mlflow.md), taken in a real browser:
Debian's Chromium, headless, driven by Playwright (`apt-get install chromium`, `pip install
playwright`; neither is a dependency of isoflop).

    python scripts/mlflow-screenshot.py http://127.0.0.1:5000/#/experiments/1/runs OUT.png

It closes the UI's assistant panel, opens every budget's run to show its trials, switches to the
chart view and keeps the training-loss charts.
"""

from __future__ import annotations

import sys

from playwright.sync_api import sync_playwright


def main(url: str, out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(url)
        page.wait_for_timeout(4000)
        close = page.get_by_role("button", name="Close")
        if close.count():
            close.first.click()
        expanders = page.locator("[role=gridcell] button, [role=gridcell] [role=button]").all()
        for expander in reversed(expanders):  # the lowest first: the others stay where they are
            box = expander.bounding_box()
            if box is not None:
                page.mouse.click(box["x"] + 8, box["y"] + box["height"] / 2)
                page.wait_for_timeout(800)
        page.locator("label", has=page.locator("input[value=CHART]")).click()
        page.wait_for_timeout(2000)
        page.get_by_placeholder("Search metric charts").fill("train_loss")
        page.wait_for_timeout(3000)
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
