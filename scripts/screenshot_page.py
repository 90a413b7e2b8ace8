"""Screenshot of the search page for the README and docs/web.md, taken in Debian's chromium with playwright.

Run while ``make demo`` serves the demo index:

    .venv/bin/python scripts/screenshot_page.py [--url http://127.0.0.1:8000] [--query "ankle boots"]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import urlencode

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("VITRINE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--query", default="summer dress")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "search-page.png")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{args.url}/?{urlencode({'q': args.query})}")
        page.wait_for_function("() => document.querySelectorAll('#grid .card img').length > 0 && "
                               "!document.body.classList.contains('busy')", timeout=60_000)
        page.locator("#grid .card img").evaluate_all("imgs => Promise.all(imgs.map(i => i.decode()))")
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"wrote {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()
